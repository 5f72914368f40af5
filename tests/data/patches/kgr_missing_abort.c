/* Names a function the kernel does not have, with abort_if_missing: the whole
 * patch is refused. */
#include "kernel.h"
#include "kgraft.h"

static bool kgr_new_capable(int cap)
{
	return ns_capable(&init_user_ns, cap);
}

static long kgr_no_such_function(void)
{
	return 0;
}

static struct kgr_patch patch = {
	.name = "kgr_missing_abort",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, kgr_new_capable, true),
		KGR_PATCH(no_such_function, kgr_no_such_function, true),
		KGR_PATCH_END
	}
};

static int __init kgr_patcher_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(kgr_patcher_init);
