/* Replaces kgr_task_safe(), the kGraft annotation itself, which is notrace.  Linux: no fentry pad, so ftrace refuses it (-EINVAL). */
#include "bad.h"

static void bad_kgr_task_safe(void)
{
}

static struct kgr_patch patch = {
	.name = "bad_patch_kgr_task_safe",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(kgr_task_safe, bad_kgr_task_safe, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
