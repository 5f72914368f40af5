/* Replaces wake_up() with one that wakes nobody.  Linux: every sleeper on a wait queue sleeps for ever (the hung task detector complains); the transition still completes through the fake signal. */
#include "bad.h"

static void bad_wake_up(struct wait_queue_head *wq)
{
	(void)wq;
}

static struct kgr_patch patch = {
	.name = "bad_replace_wake_up_noop",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(wake_up, bad_wake_up, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
