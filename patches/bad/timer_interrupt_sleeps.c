/* Replaces timer_interrupt() with one that calls schedule_timeout() in interrupt context.  Linux: "BUG: scheduling while atomic" on every tick. */
#include "bad.h"

void update_process_times(int user);
void run_local_timers(void);

static void bad_timer_interrupt(struct pt_regs *regs)
{
	jiffies++;
	update_process_times(user_mode(regs));
	run_local_timers();
	schedule_timeout(1);
}

static struct kgr_patch patch = {
	.name = "bad_timer_interrupt_sleeps",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(timer_interrupt, bad_timer_interrupt, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
