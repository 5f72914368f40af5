/* Replaces a function the kernel does not have, without abort_if_missing.  Linux (kGraft): that one is skipped with a warning, capable() is patched. */
#include "bad.h"

static long bad_no_such_function(void)
{
	return 0;
}

static struct kgr_patch patch = {
	.name = "bad_missing_skip",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(no_such_function, bad_no_such_function, false),
		KGR_PATCH(capable, bad_good_capable, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
