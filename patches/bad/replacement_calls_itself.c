/* The new capable() calls itself without end.  Linux: the caller's kernel stack runs into its guard page, a double fault and a panic.  The lab oopses the caller, naming it; the patch stays applied. */
#include "bad.h"

#pragma GCC diagnostic ignored "-Winfinite-recursion"

static __noinline bool bad_new_capable(int cap)
{
	volatile int frame[8];

	frame[cap & 7] = cap;
	return bad_new_capable(cap + 1) && frame[(cap + 1) & 7];
}

static struct kgr_patch patch = {
	.name = "bad_replacement_calls_itself",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, bad_new_capable, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
