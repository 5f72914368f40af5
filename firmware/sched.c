/* sched.c - tasks, the round-robin scheduler, wait queues, sleep and wake-up.
 *
 * One CPU.  The lab delivers the timer tick at the end of every slice of
 * instructions; the tick sets need_resched and the interrupt exit path calls
 * schedule(), which picks the next runnable task in sched_order[] (the lab
 * may permute it with --seed).  Task 0 is the idle task, run when nothing
 * else can run.
 */
#include "kernel.h"
#include "kgraft.h"

struct task_struct tasks[NR_TASKS];
struct task_struct *current_task = &tasks[0];
unsigned long task_stacks[NR_TASKS][KSTACK_SLOT / 8] __attribute__((aligned(4096)));
/* The order schedule() walks the tasks in: slot order from sched_init(); the
 * lab may rewrite it before the first task runs (the schedule seed).  Holds
 * task ids. */
int sched_order[NR_TASKS];
int need_resched;
int nr_tasks;
int system_state;	/* SYSTEM_BOOTING until start_kernel() is done */
/* Woken by every exiting task, as wait4() waiters are (wait_chldexit). */
DECLARE_WAIT_QUEUE_HEAD(task_exit_wq);

static struct cred root_cred = { .uid = 0, .cap_effective = ~0UL };

void __switch_to_asm(struct task_struct *prev, struct task_struct *next);
void ret_from_fork(void);

/* The first step of start_kernel(), as Linux's sched_init(): the run queue
 * before any task exists, here the order schedule() walks the slots in. */
void __init sched_init(void)
{
	int i;

	for (i = 0; i < NR_TASKS; i++)
		sched_order[i] = i;
}

struct task_struct *find_task(int tid)
{
	if (tid < 0 || tid >= nr_tasks || tasks[tid].state == TASK_UNUSED)
		return NULL;
	return &tasks[tid];
}

static notrace struct task_struct *pick_next_task(struct task_struct *prev)
{
	int i, pos = 0;

	/* a fault injected into the idle task: run it now, or it might never
	 * run on a busy CPU and the injection would do nothing */
	if (unlikely(tasks[0].make_it_fail))
		return &tasks[0];
	for (i = 0; i < nr_tasks; i++)
		if (sched_order[i] == prev->tid)
			pos = i;
	for (i = 1; i <= nr_tasks; i++) {
		struct task_struct *p = &tasks[sched_order[(pos + i) % nr_tasks]];
		if ((p->state == TASK_RUNNING || p->preempted) && !(p->flags & PF_IDLE))
			return p;
	}
	return &tasks[0];
}

/* The scheduler proper is notrace, as Linux's __schedule() is: a patched
 * scheduler is not something a live patch may do. */
notrace void schedule(void)
{
	unsigned long flags = local_irq_save();
	struct task_struct *prev = current, *next;

	need_resched = 0;
	next = pick_next_task(prev);
	if (next != prev) {
		prev->nr_switches++;
		hypercall2(HC_SWITCH, prev->tid, next->tid);
		current_task = next;
		__switch_to_asm(prev, next);
		/* back in prev, switched to by someone else */
	}
	if (unlikely(current->make_it_fail) && (current->flags & PF_KTHREAD))
		check_fault_injection();	/* a kernel thread makes no system call */
	local_irq_restore(flags);
}

/* Called from the interrupt exit path with interrupts off.  A preempted
 * task stays runnable whatever its state says: it may have been caught
 * between prepare_to_wait() and checking its condition, and only it can
 * finish that check (Linux's __schedule(SM_PREEMPT) does not dequeue it). */
notrace void preempt_schedule_irq(void)
{
	current->preempted = 1;
	schedule();
	current->preempted = 0;
}

/* A new task's first instructions after its first switch (ret_from_fork). */
notrace void schedule_tail(void)
{
	local_irq_enable();
}

void set_current_state(int state)
{
	WRITE_ONCE(current->state, state);
}

int wake_up_process(struct task_struct *p)
{
	unsigned long flags = local_irq_save();
	int woken = 0;

	if (p->state == TASK_INTERRUPTIBLE) {
		p->state = TASK_RUNNING;
		p->wakeup_at = 0;
		woken = 1;
	}
	local_irq_restore(flags);
	return woken;
}

void prepare_to_wait(struct wait_queue_head *wq, struct wait_queue_entry *w, int state)
{
	unsigned long flags = local_irq_save();

	if (!w->queued) {
		w->next = wq->head;
		wq->head = w;
		w->queued = true;
	}
	current->state = state;
	local_irq_restore(flags);
}

void finish_wait(struct wait_queue_head *wq, struct wait_queue_entry *w)
{
	unsigned long flags = local_irq_save();
	struct wait_queue_entry **pp;

	current->state = TASK_RUNNING;
	if (w->queued) {
		for (pp = &wq->head; *pp; pp = &(*pp)->next)
			if (*pp == w) {
				*pp = w->next;
				break;
			}
		w->queued = false;
	}
	local_irq_restore(flags);
}

void wake_up(struct wait_queue_head *wq)
{
	unsigned long flags = local_irq_save();
	struct wait_queue_entry *w;

	for (w = wq->head; w; w = w->next)
		wake_up_process(w->task);
	local_irq_restore(flags);
}

/* Sleep for a number of timer ticks; a signal ends the sleep early.
 * Returns the ticks left. */
long schedule_timeout(unsigned long ticks)
{
	unsigned long expire = jiffies + ticks;

	current->wakeup_at = expire;
	set_current_state(TASK_INTERRUPTIBLE);
	if (!signal_pending(current))
		schedule();
	current->state = TASK_RUNNING;
	current->wakeup_at = 0;
	return jiffies >= expire ? 0 : (long)(expire - jiffies);
}

/* Sleep at least msecs, whatever wakes the task meanwhile (Linux's msleep()
 * sleeps uninterruptibly). */
void msleep(unsigned int msecs)
{
	unsigned long expire = jiffies + (msecs * HZ + 999) / 1000;

	while (jiffies < expire)
		schedule_timeout(expire - jiffies);
}

bool kthread_should_stop(void)
{
	return false;
}

/* A free slot: a new one while there are, else the lowest one whose task
 * is dead and no longer running (Linux frees a dead task_struct once the
 * next task has switched away from it, in finish_task_switch()).  NULL
 * when every slot is in use: fork() fails with -EAGAIN. */
static struct task_struct *task_alloc(const char *name, unsigned int flags)
{
	struct task_struct *p = NULL;
	int i;

	if (nr_tasks < NR_TASKS) {
		p = &tasks[nr_tasks];
		i = nr_tasks++;
	} else {
		for (i = 1; i < NR_TASKS; i++)
			if (tasks[i].state == TASK_DEAD && &tasks[i] != current) {
				p = &tasks[i];
				break;
			}
		if (!p)
			return NULL;
	}
	memset(p, 0, sizeof(*p));
	p->tid = i;
	p->flags = flags;
	p->cred = &root_cred;
	p->kgr_universe = kgr_target_universe;
	p->kgr_migrated_by = system_state == SYSTEM_RUNNING ? KGR_SAFE_FORK : KGR_SAFE_BOOT;
	p->stack_top = (unsigned long)&task_stacks[p->tid][KSTACK_SLOT / 8];
	strscpy(p->comm, name, TASK_COMM_LEN);
	hypercall1(HC_TASK_NEW, p->tid);
	return p;
}

/* Lay out a new task's kernel stack: pt_regs on top (Linux reserves it for
 * kthreads too), below it the frame __switch_to_asm pops on the first switch. */
static void task_stack_init(struct task_struct *p, unsigned long fn, unsigned long arg)
{
	struct pt_regs *regs = (struct pt_regs *)p->stack_top - 1;
	unsigned long *sp = (unsigned long *)regs;

	memset(regs, 0, sizeof(*regs));
	*--sp = (unsigned long)ret_from_fork;
	*--sp = 0;		/* flags: interrupts off until schedule_tail() */
	*--sp = 0;		/* rbp */
	*--sp = fn;		/* rbx */
	*--sp = arg;		/* r12 */
	*--sp = 0;		/* r13 */
	*--sp = 0;		/* r14 */
	*--sp = 0;		/* r15 */
	p->thread.sp = (unsigned long)sp;
}

struct task_struct *kthread_create(int (*fn)(void *), void *arg, const char *name,
				   unsigned int flags)
{
	struct task_struct *p = task_alloc(name, PF_KTHREAD | flags);

	if (!p) {
		if (system_state != SYSTEM_RUNNING)
			panic("too many tasks");
		return NULL;
	}
	task_stack_init(p, (unsigned long)fn, (unsigned long)arg);
	p->state = TASK_RUNNING;
	return p;
}

struct task_struct *user_task_create(void (*entry)(void), const char *name)
{
	struct task_struct *p = task_alloc(name, 0);
	struct pt_regs *regs;
	unsigned long ustack;

	if (!p)
		panic("too many tasks");
	regs = (struct pt_regs *)p->stack_top - 1;
	ustack = USER_STACKS_TOP - p->tid * USER_STACK_SIZE;
	task_stack_init(p, 0, 0);
	regs->ip = (unsigned long)entry;
	regs->cs = USER_CS;
	regs->ss = USER_DS;
	regs->flags = X86_EFLAGS_IF | 0x2;
	regs->sp = ustack - 8;	/* as if called: the ABI's entry alignment */
	regs->orig_ax = -1UL;
	fd_install(p, alloc_file(&console_fops, NULL));	/* fd 0 */
	fd_install(p, alloc_file(&console_fops, NULL));	/* fd 1 */
	p->state = TASK_RUNNING;
	return p;
}

void do_exit(int code)
{
	int i;

	local_irq_save();
	for (i = 0; i < NR_OPEN; i++)
		if (current->files[i]) {
			fput(current->files[i]);
			current->files[i] = NULL;
		}
	current->exit_code = code;
	current->state = TASK_DEAD;
	hypercall2(HC_TASK_EXIT, current->tid, code);
	wake_up(&task_exit_wq);
	schedule();
	panic("dead task scheduled");
}

/* A kernel thread finished one round of its loop: the unit of work the
 * checker holds to its consistency rule.  Called where each loop finishes
 * its work, not at its kGraft safe point, so a misplaced safe point shows. */
notrace __noinline void kthread_iteration_done(void)
{
	current->nr_iterations++;
	barrier();
}

/* After an oops: the lab has rewound the stack (rewind_stack_and_make_dead). */
notrace void make_task_dead(void)
{
	irq_depth = 0;
	current->flags |= PF_OOPSED;
	local_irq_enable();
	do_exit(-1);
}

/* The idle loop.  Like upstream's do_idle() calling klp_update_patch_state(),
 * it is a safe point for the idle task. */
void cpu_idle(void)
{
	local_irq_enable();
	for (;;) {
		while (!READ_ONCE(need_resched)) {
			if (unlikely(kgr_task_in_progress(current)))
				kgr_task_safe();
			cpu_relax();
		}
		schedule();
	}
}
