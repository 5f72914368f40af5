/* signal.c - signals: queueing, delivery on the exit path, system call
 * restart, and the user signal frame.  The restart rules are Linux's
 * (arch/x86/kernel/signal.c): -ERESTARTSYS restarts when no handler runs or
 * the handler has SA_RESTART, else the call fails with -EINTR. */
#include "kernel.h"

struct rt_sigframe {
	unsigned long pretcode;	/* the handler returns into its restorer */
	struct pt_regs regs;	/* the interrupted user context */
	unsigned long sig;
};

/* Make p notice TIF_SIGPENDING: wake it if it sleeps interruptibly.  With no
 * real signal queued this is kGraft's fake signal: the task passes the exit
 * path (its safe point), finds nothing to deliver and restarts its call. */
void signal_wake_up(struct task_struct *p)
{
	unsigned long flags = local_irq_save();

	p->thread_flags |= TIF_SIGPENDING;
	wake_up_process(p);
	local_irq_restore(flags);
}

int send_signal(struct task_struct *p, int sig)
{
	if (sig <= 0 || sig >= NSIG)
		return -EINVAL;
	if (p->flags & PF_KTHREAD)
		return 0;		/* kernel threads ignore signals */
	if (p->sighand[sig].handler == SIG_IGN && sig != SIGKILL)
		return 0;
	p->sig_pending |= 1UL << sig;
	signal_wake_up(p);
	return 0;
}

static int dequeue_signal(struct task_struct *p)
{
	int sig;

	for (sig = 1; sig < NSIG; sig++)
		if (p->sig_pending & (1UL << sig)) {
			p->sig_pending &= ~(1UL << sig);
			return sig;
		}
	return 0;
}

static void restart_syscall(struct pt_regs *regs)
{
	regs->ax = regs->orig_ax;
	regs->ip -= 2;		/* back onto the SYSCALL instruction */
}

static bool setup_rt_frame(int sig, struct k_sigaction *ka, struct pt_regs *regs)
{
	struct rt_sigframe *frame;

	frame = (struct rt_sigframe *)((regs->sp - sizeof(*frame)) & ~15UL) ;
	frame = (struct rt_sigframe *)((unsigned long)frame - 8);
	if (!access_ok(frame, sizeof(*frame)))
		return false;
	frame->pretcode = ka->restorer;
	frame->regs = *regs;
	frame->sig = sig;
	regs->sp = (unsigned long)frame;
	regs->ip = ka->handler;
	regs->di = sig;
	return true;
}

void do_signal(struct pt_regs *regs)
{
	unsigned long flags = local_irq_save();
	int sig = dequeue_signal(current);
	bool in_call = (long)regs->orig_ax >= 0;
	long ret = (long)regs->ax;

	if (!current->sig_pending)
		current->thread_flags &= ~TIF_SIGPENDING;
	local_irq_restore(flags);

	if (sig) {
		struct k_sigaction *ka = &current->sighand[sig];

		current->nr_signals++;
		if (ka->handler == SIG_DFL || sig == SIGKILL) {
			/* the default action kills quietly, as in Linux: the
			 * exit code says which signal (the lab's exit event) */
			do_exit(128 + sig);
		}
		if (in_call) {
			if (ret == -ERESTARTNOHAND || (ret == -ERESTARTSYS && !(ka->flags & SA_RESTART)))
				regs->ax = -EINTR;
			else if (ret == -ERESTARTSYS || ret == -ERESTARTNOINTR)
				restart_syscall(regs);
		}
		regs->orig_ax = -1UL;	/* the handler's return must not restart again */
		if (!setup_rt_frame(sig, ka, regs))
			do_exit(128 + SIGKILL);
		return;
	}
	/* No signal to deliver (a fake signal, or one already taken): restart
	 * whatever the interrupted call asked to be restarted. */
	if (in_call && (ret == -ERESTARTSYS || ret == -ERESTARTNOHAND || ret == -ERESTARTNOINTR)) {
		restart_syscall(regs);
		regs->orig_ax = -1UL;
		/* the sleep ended for no real signal: kGraft's fake signal did it */
		current->kgr_fake_wakeup = 1;
	}
}

long sys_rt_sigreturn(struct pt_regs *regs)
{
	struct rt_sigframe *frame = (struct rt_sigframe *)(regs->sp - 8);
	struct pt_regs saved;

	if (!access_ok(frame, sizeof(*frame)))
		do_exit(128 + SIGKILL);
	saved = frame->regs;
	saved.cs = USER_CS;
	saved.ss = USER_DS;
	saved.flags |= X86_EFLAGS_IF;
	*regs = saved;
	regs->orig_ax = -1UL;	/* never restart the sigreturn itself */
	return regs->ax;
}

long sys_rt_sigaction(int sig, const struct sigaction_u *act, struct sigaction_u *old)
{
	struct k_sigaction *k;

	if (sig <= 0 || sig >= NSIG || sig == SIGKILL)
		return -EINVAL;
	k = &current->sighand[sig];
	if (old) {
		struct sigaction_u o = { k->handler, k->flags, k->restorer };
		if (copy_to_user(old, &o, sizeof(o)))
			return -EFAULT;
	}
	if (act) {
		struct sigaction_u a;
		if (copy_from_user(&a, act, sizeof(a)))
			return -EFAULT;
		k->handler = a.handler;
		k->flags = a.flags;
		k->restorer = a.restorer;
	}
	return 0;
}

long sys_kill(int tid, int sig)
{
	struct task_struct *p = find_task(tid);

	if (!p || p->state == TASK_DEAD)
		return -ESRCH;
	return send_signal(p, sig);
}
