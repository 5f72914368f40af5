/* Replaces kgr_patch_kernel() itself with a function that refuses everything.  Linux (kGraft): allowed, and every later patch fails with -EPERM until this one is reverted. */
#include "bad.h"

static int bad_kgr_patch_kernel(struct kgr_patch *p)
{
	(void)p;
	return -EPERM;
}

static struct kgr_patch patch = {
	.name = "bad_patch_the_patcher",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(kgr_patch_kernel, bad_kgr_patch_kernel, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
