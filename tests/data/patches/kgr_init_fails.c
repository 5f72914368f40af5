/* An init that gives up before handing its patch to kGraft. */
#include "kernel.h"
#include "kgraft.h"

static bool kgr_new_capable(int cap)
{
	return ns_capable(&init_user_ns, cap);
}

static struct kgr_patch patch = {
	.name = "kgr_init_fails",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, kgr_new_capable, true),
		KGR_PATCH_END
	}
};

static int __init kgr_patcher_init(void)
{
	if (patch.patches[0].new_fun)
		return -EINVAL;
	return kgr_patch_kernel(&patch);
}
module_init(kgr_patcher_init);
