/* kgr_capable_v2.c - a newer, cumulative patch of capable(): replace_all makes
 * it replace every patch applied before it, as kGraft's replace_all did. */
#include "kernel.h"
#include "kgraft.h"

static unsigned long kgr_capable_calls;

static bool kgr_new_capable_v2(int cap)
{
	if (kgr_capable_calls++ < 3)
		printk(KERN_DEBUG "capable() patched again (v2)\n");
	return ns_capable(&init_user_ns, cap);
}

static struct kgr_patch patch = {
	.name = "sample_kgraft_patch_v2",
	.owner = THIS_MODULE,
	.replace_all = 1,
	.patches = {
		KGR_PATCH(capable, kgr_new_capable_v2, true),
		KGR_PATCH_END
	}
};

static int __init kgr_patcher_init(void)
{
	return kgr_patch_kernel(&patch);
}

static void __exit kgr_patcher_cleanup(void)
{
	kgr_patch_remove(&patch);
}

module_init(kgr_patcher_init);
module_exit(kgr_patcher_cleanup);
