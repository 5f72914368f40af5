/* Replaces schedule(), which is notrace and has no fentry pad.  Linux: ftrace cannot attach to it (-EINVAL); the patch is refused. */
#include "bad.h"

static void bad_schedule(void)
{
}

static struct kgr_patch patch = {
	.name = "bad_patch_notrace",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(schedule, bad_schedule, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
