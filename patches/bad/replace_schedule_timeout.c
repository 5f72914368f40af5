/* Replaces schedule_timeout() with one that returns at once without sleeping.  Linux: every timed sleep becomes a busy loop (nanosleep returns early); nothing crashes. */
#include "bad.h"

static long bad_schedule_timeout(unsigned long ticks)
{
	(void)ticks;
	return 0;
}

static struct kgr_patch patch = {
	.name = "bad_replace_schedule_timeout",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(schedule_timeout, bad_schedule_timeout, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
