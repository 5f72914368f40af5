/* kgr_capable.c - the kGraft article's sample: capable() with a printk.
 *
 * The printk is limited to the first calls: cap-user calls capable() in a
 * tight loop, and one line per call would drown the console. */
#include "kernel.h"
#include "kgraft.h"

static unsigned long kgr_capable_calls;

static bool kgr_new_capable(int cap)
{
	if (kgr_capable_calls++ < 3)
		printk(KERN_DEBUG "we added a printk to capable()\n");
	return ns_capable(&init_user_ns, cap);
}

static struct kgr_patch patch = {
	.name = "sample_kgraft_patch",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, kgr_new_capable, true),
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
