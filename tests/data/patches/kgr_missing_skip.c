/* Names a function the kernel does not have, without abort_if_missing: that
 * one is skipped with a warning and capable() is patched. */
#include "kernel.h"
#include "kgraft.h"

static unsigned long kgr_calls;

static bool kgr_new_capable(int cap)
{
	if (kgr_calls++ == 0)
		printk(KERN_INFO "kgr_missing_skip: capable() replaced\n");
	return ns_capable(&init_user_ns, cap);
}

static long kgr_no_such_function(void)
{
	return 0;
}

static struct kgr_patch patch = {
	.name = "kgr_missing_skip",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(no_such_function, kgr_no_such_function, false),
		KGR_PATCH(capable, kgr_new_capable, true),
		KGR_PATCH_END
	}
};

static int __init kgr_patcher_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(kgr_patcher_init);
