/* timer.c - the timer interrupt: jiffies, process accounting, expired
 * sleeps, and the periodic work the workloads hang on it.  Everything it calls
 * is ordinary, traceable kernel code running in interrupt context. */
#include "kernel.h"

volatile unsigned long jiffies;
unsigned long user_ticks, system_ticks, idle_ticks;

struct periodic_timer {
	unsigned long period;
	void (*fn)(void);
};
static struct periodic_timer periodic_timers[8];
static int nr_periodic_timers;

void add_periodic_timer(unsigned long period, void (*fn)(void))
{
	if (nr_periodic_timers < (int)ARRAY_SIZE(periodic_timers)) {
		periodic_timers[nr_periodic_timers].period = period;
		periodic_timers[nr_periodic_timers].fn = fn;
		nr_periodic_timers++;
	}
}

void account_process_tick(struct task_struct *p, int user)
{
	if (user)
		user_ticks++;
	else if (p->flags & PF_IDLE)
		idle_ticks++;
	else
		system_ticks++;
}

void update_process_times(int user)
{
	account_process_tick(current, user);
	need_resched = 1;	/* every tick ends the running task's time slice */
}

static void expire_sleepers(void)
{
	int i;

	for (i = 0; i < nr_tasks; i++) {	/* the slots above were never used */
		struct task_struct *p = &tasks[i];
		if (p->state == TASK_INTERRUPTIBLE && p->wakeup_at && jiffies >= p->wakeup_at)
			wake_up_process(p);
	}
}

void run_local_timers(void)
{
	int i;

	expire_sleepers();
	for (i = 0; i < nr_periodic_timers; i++)
		if (jiffies % periodic_timers[i].period == 0)
			periodic_timers[i].fn();
}

void timer_interrupt(struct pt_regs *regs)
{
	jiffies++;
	update_process_times(user_mode(regs));
	run_local_timers();
}
