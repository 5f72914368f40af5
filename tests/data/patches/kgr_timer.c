/* Replaces timer_interrupt(), which only the timer interrupt calls: the
 * interrupt context picks old or new by its own universe flag.  (The
 * accounting functions it calls are inlined into it, so they have no pad
 * that ever runs.) */
#include "kernel.h"
#include "kgraft.h"

void update_process_times(int user);
void run_local_timers(void);

static unsigned long kgr_ticks;

static void kgr_timer_interrupt(struct pt_regs *regs)
{
	kgr_ticks++;
	jiffies++;
	update_process_times(user_mode(regs));
	run_local_timers();
}

static struct kgr_patch patch = {
	.name = "kgr_timer",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(timer_interrupt, kgr_timer_interrupt, true),
		KGR_PATCH_END
	}
};

static int __init kgr_patcher_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(kgr_patcher_init);
