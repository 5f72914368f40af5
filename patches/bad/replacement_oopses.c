/* The new capable() dereferences NULL.  Linux: every caller oopses (user processes killed); with panic_on_oops, or after enough oopses, the kernel panics. */
#include "bad.h"

static bool bad_new_capable(int cap)
{
	int *p = OPAQUE((int *)0);

	return *p == cap;
}

static struct kgr_patch patch = {
	.name = "bad_replacement_oopses",
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
