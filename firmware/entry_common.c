/* entry_common.c - the C half of system call and interrupt entry and exit:
 * the exit work (reschedule, signals, the kGraft safe point) that every
 * return to user mode passes, as in Linux's kernel/entry/common.c. */
#include "kernel.h"
#include "kgraft.h"

typedef long (*syscall_fn_t)(struct pt_regs *regs);
extern const syscall_fn_t sys_call_table[NR_syscalls];
void do_signal(struct pt_regs *regs);

/* The exit work loop.  Runs with interrupts on; the last check is made with
 * them off so nothing can slip in between it and the return to user mode. */
static notrace void exit_to_user_mode_loop(struct pt_regs *regs, int kind)
{
	for (;;) {
		local_irq_save();
		if (READ_ONCE(need_resched)) {
			schedule();
			local_irq_enable();
			continue;
		}
		if (current->thread_flags & TIF_SIGPENDING) {
			local_irq_enable();
			do_signal(regs);
			continue;
		}
		break;
	}
	/* The kernel/user boundary: user threads' safe point.  kGraft checks
	 * TIF_KGR_IN_PROGRESS among the exit work flags in the same place. */
	if (kgr_task_in_progress(current))
		kgr_user_safe(kind);
	current->kgr_fake_wakeup = 0;
}

notrace void syscall_exit_to_user_mode(struct pt_regs *regs)
{
	current->in_syscall = 0;
	exit_to_user_mode_loop(regs, KGR_SAFE_SYSCALL_EXIT);
}

notrace void irqentry_exit_to_user_mode(struct pt_regs *regs)
{
	exit_to_user_mode_loop(regs, KGR_SAFE_IRQ_USER);
}

notrace void do_syscall_64(struct pt_regs *regs)
{
	unsigned long nr = regs->orig_ax;

	local_irq_enable();
	current->in_syscall = 1;
	current->nr_syscalls++;
	check_fault_injection();
	if (nr < NR_syscalls && sys_call_table[nr])
		regs->ax = sys_call_table[nr](regs);
	else
		regs->ax = -ENOSYS;
	syscall_exit_to_user_mode(regs);
}

int irq_depth;
/* Preemption disabled while non-zero (one CPU: Linux's per-CPU preempt_count).
 * The kGraft trampolines raise it around their decision, as upstream's
 * klp_ftrace_handler() runs under preempt_disable_notrace(). */
int preempt_count;
u8 kgr_irq_universe;
/* in .rodata with its flags spelled out: gcc would mark a volatile object's section writable */
const volatile u8 kgr_target_universe __attribute__((section(".rodata.kgr,\"a\",@progbits #")));

static notrace void irq_enter(void)
{
	irq_depth++;
}

/* Interrupt exit: the safe point of the interrupt context, which keeps a
 * universe flag of its own (kGraft's per-CPU kgr_irq_use_new). */
static notrace void irq_exit(void)
{
	if (READ_ONCE(kgr_irq_universe) != READ_ONCE(kgr_target_universe))
		kgr_irq_safe();
	irq_depth--;
}

static notrace void irqentry_exit(struct pt_regs *regs)
{
	if (user_mode(regs))
		irqentry_exit_to_user_mode(regs);
	else if (READ_ONCE(need_resched) && (regs->flags & X86_EFLAGS_IF) && !READ_ONCE(preempt_count) &&
		 !(current->flags & PF_IDLE))
		/* irqentry_exit_cond_resched(); the idle task runs with preemption
		 * off, as Linux's do_idle() does, and schedules by itself */
		preempt_schedule_irq();
}

notrace void do_IRQ(struct pt_regs *regs)
{
	irq_enter();
	timer_interrupt(regs);
	irq_exit();
	irqentry_exit(regs);
}

/* A reschedule IPI: end the running task's slice now, where it stands. */
notrace void do_reschedule_ipi(struct pt_regs *regs)
{
	irq_enter();
	need_resched = 1;
	irq_exit();
	irqentry_exit(regs);
}

/* The stopped CPU's work, in instructions: set by the lab for each stop. */
unsigned long stop_machine_cost;

notrace void do_stop_cpu(struct pt_regs *regs)
{
	unsigned long i, n = READ_ONCE(stop_machine_cost);

	for (i = 0; i < n; i++)
		barrier();
}

/* Linux's fault-injection hook (should_fail()): the lab sets make_it_fail in
 * a task struct and the task takes a real fault the next time it passes. */
unsigned long fault_inject_address = 0x10;	/* in the unmapped first page */

static __noinline void fault_inject_crash(void)
{
	*(volatile unsigned long *)READ_ONCE(fault_inject_address) = 0xdead;
}

void check_fault_injection(void)
{
	if (unlikely(current->make_it_fail))
		fault_inject_crash();
}
