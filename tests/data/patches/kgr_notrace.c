/* Tries to replace schedule(), which is notrace (no fentry pad): refused. */
#include "kernel.h"
#include "kgraft.h"

static void kgr_schedule(void)
{
}

static struct kgr_patch patch = {
	.name = "kgr_notrace",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(schedule, kgr_schedule, true),
		KGR_PATCH_END
	}
};

static int __init kgr_patcher_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(kgr_patcher_init);
