/* kthread.c - the freezer, kthread_worker, and the kernel threads of the
 * workloads: one freezable, one annotated with kgr_task_safe(), one run by a
 * kthread_worker, and one that sleeps with no annotation at all. */
#include "kernel.h"

void add_periodic_timer(unsigned long period, void (*fn)(void));
void kgr_freezer_safe(void);
void kgr_worker_safe(void);

/* ---- the freezer ---- */

bool pm_freezing;	/* a suspend in progress; never set in the lab */

static bool freezing(struct task_struct *p)
{
	return READ_ONCE(pm_freezing) && (p->flags & PF_FREEZABLE);
}

/* kGraft migrates freezable kernel threads here: the point where a thread
 * could be frozen holds no kernel state worth keeping consistent. */
bool try_to_freeze(void)
{
	kgr_freezer_safe();
	if (!freezing(current))
		return false;
	while (freezing(current))
		schedule_timeout(1);
	return true;
}

/* ---- kthread_worker ---- */

struct kthread_work {
	void (*func)(struct kthread_work *work);
	struct kthread_work *next;
	bool queued;
};

struct kthread_worker {
	struct kthread_work *head;
	struct task_struct *task;
};

bool kthread_queue_work(struct kthread_worker *worker, struct kthread_work *work)
{
	unsigned long flags = local_irq_save();
	bool queued = false;

	if (!work->queued) {
		struct kthread_work **pp = &worker->head;
		while (*pp)
			pp = &(*pp)->next;
		work->next = NULL;
		*pp = work;
		work->queued = true;
		queued = true;
		if (worker->task)
			wake_up_process(worker->task);
	}
	local_irq_restore(flags);
	return queued;
}

/* The worker loop.  kGraft takes care of kthread_worker threads itself: the
 * top of the loop, between two works, is their safe point. */
int kthread_worker_fn(void *arg)
{
	struct kthread_worker *worker = arg;

	for (;;) {
		struct kthread_work *work;
		unsigned long flags;

		kgr_worker_safe();
		flags = local_irq_save();
		work = worker->head;
		if (work) {
			worker->head = work->next;
			work->queued = false;
		} else {
			current->state = TASK_INTERRUPTIBLE;
		}
		local_irq_restore(flags);
		if (work) {
			work->func(work);
			kthread_iteration_done();
		} else {
			schedule();
		}
	}
	return 0;
}

/* ---- the workloads' kernel threads and what they do ---- */

unsigned long writeback_pages, stats_flushed, balanced;

/* Static and kept out of line: a patch reaches it only through
 * kallsyms_lookup_name(), as the kGraft article shows for unexported symbols. */
static __noinline int checksum_range(unsigned long seed, int n)
{
	int i;
	unsigned long h = seed;

	for (i = 0; i < n; i++)
		h = h * 31 + i;
	return (int)(h & 0xffff);
}

__noinline void balance_dirty_pages(void)
{
	writeback_pages += checksum_range(jiffies, 24) & 7;
	balanced++;
}

/* Freezable: calls try_to_freeze() at the top of every round. */
int kfreezerd_fn(void *arg)
{
	printk(KERN_INFO "kfreezerd: started (freezable)\n");
	for (;;) {
		try_to_freeze();
		balance_dirty_pages();
		kthread_iteration_done();
		schedule_timeout(3);
	}
	return 0;
}

static DECLARE_WAIT_QUEUE_HEAD(annotated_wq);
static int annotated_work;

__noinline void process_annotated_work(void)
{
	stats_flushed += checksum_range(annotated_work, 16) & 3;
}

/* Non-freezable, annotated as SUSE's note on kernel threads asks: the
 * kgr_task_safe() call sits inside the wait_event_interruptible() condition,
 * because that macro loops by itself. */
int kannotated_fn(void *arg)
{
	printk(KERN_INFO "kannotated: started (kgr_task_safe annotated)\n");
	for (;;) {
		long rc = wait_event_interruptible(annotated_wq, ({
			kgr_task_safe();
			READ_ONCE(annotated_work) > 0 || kthread_should_stop(); }));
		if (rc)
			continue;
		annotated_work--;
		process_annotated_work();
		kthread_iteration_done();
	}
	return 0;
}

static void annotated_tick(void)
{
	annotated_work++;
	wake_up(&annotated_wq);
}

static DECLARE_WAIT_QUEUE_HEAD(unannotated_wq);
static int unannotated_work;

__noinline void process_unannotated_work(void)
{
	stats_flushed += checksum_range(unannotated_work, 8) & 1;
}

/* Non-freezable and not annotated: no safe point anywhere in its loop, so a
 * kGraft transition can never move it. */
int kunannotated_fn(void *arg)
{
	printk(KERN_INFO "kunannotated: started (no annotation)\n");
	for (;;) {
		wait_event_interruptible(unannotated_wq, READ_ONCE(unannotated_work) > 0);
		if (!unannotated_work)
			continue;
		unannotated_work--;
		process_unannotated_work();
		kthread_iteration_done();
	}
	return 0;
}

static void unannotated_tick(void)
{
	unannotated_work++;
	wake_up(&unannotated_wq);
}

static struct kthread_worker stats_worker;

__noinline void flush_stats(struct kthread_work *work)
{
	stats_flushed += checksum_range(stats_flushed, 12) & 1;
}

static struct kthread_work stats_work = { .func = flush_stats };

static void stats_tick(void)
{
	kthread_queue_work(&stats_worker, &stats_work);
}

void start_kfreezerd(void)
{
	kthread_create(kfreezerd_fn, NULL, "kfreezerd", PF_FREEZABLE);
}

void start_kannotated(void)
{
	kthread_create(kannotated_fn, NULL, "kannotated", 0);
	add_periodic_timer(5, annotated_tick);
}

void start_kworker(void)
{
	stats_worker.task = kthread_create(kthread_worker_fn, &stats_worker, "kworker/stats",
					   PF_WQ_WORKER);
	add_periodic_timer(4, stats_tick);
}

void start_kunannotated(void)
{
	kthread_create(kunannotated_fn, NULL, "kunannotated", 0);
	add_periodic_timer(7, unannotated_tick);
}
