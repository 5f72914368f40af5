/* An init that reports kgr_patch_kernel()'s answer before returning it: its
 * code still runs after the core has answered, refusal or not. */
#include "kernel.h"
#include "kgraft.h"

static bool kgr_new_capable(int cap)
{
	return ns_capable(&init_user_ns, cap);
}

static struct kgr_patch patch = {
	.name = "kgr_init_reports",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, kgr_new_capable, true),
		KGR_PATCH_END
	}
};

static int __init kgr_patcher_init(void)
{
	int ret = kgr_patch_kernel(&patch);

	printk(KERN_INFO "kgr_init_reports: kgr_patch_kernel() returned %d\n", ret);
	return ret;
}
module_init(kgr_patcher_init);
