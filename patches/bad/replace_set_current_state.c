/* Replaces set_current_state() with one that always leaves the task running.  Linux: every wait becomes a busy loop through schedule(); the machine runs on, only slower. */
#include "bad.h"

static void bad_set_current_state(int state)
{
	(void)state;
	WRITE_ONCE(current->state, TASK_RUNNING);
}

static struct kgr_patch patch = {
	.name = "bad_replace_set_current_state",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(set_current_state, bad_set_current_state, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
