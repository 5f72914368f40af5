/* Replaces capable() twice in one patch, by two different functions.  Linux: the second ftrace registration of the same address fails (-EBUSY) and the patch is refused. */
#include "bad.h"

static bool bad_other_capable(int cap)
{
	return cap == 0;
}

static struct kgr_patch patch = {
	.name = "bad_same_function_twice",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, bad_good_capable, true),
		KGR_PATCH(capable, bad_other_capable, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
