/* A second patch of capable(), without replace_all: it stacks on top of the
 * one already applied, and reverting it brings that one back. */
#include "kernel.h"
#include "kgraft.h"

static unsigned long kgr_calls;

static bool kgr_stacked_capable(int cap)
{
	if (kgr_calls++ == 0)
		printk(KERN_INFO "capable() patched on top\n");
	return ns_capable(&init_user_ns, cap);
}

static struct kgr_patch patch = {
	.name = "kgr_capable_stacked",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, kgr_stacked_capable, true),
		KGR_PATCH_END
	}
};

static int __init kgr_patcher_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(kgr_patcher_init);
