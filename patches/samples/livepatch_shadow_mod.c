/* livepatch_shadow_mod.c - the buggy module of upstream's shadow variable
 * samples, for the lab's kernel.  A worker allocates a "dummy" every second
 * and, with it, a little memory it forgets ("leak"); every third second it
 * frees the dummies that have expired, but never the leak.
 * livepatch_shadow_fix1 fixes the leak with a shadow variable that remembers
 * it; livepatch_shadow_fix2 adds a counter to every dummy, another shadow
 * variable. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"

#define ALLOC_PERIOD	1			/* seconds between two dummies */
#define CLEANUP_PERIOD	(3 * ALLOC_PERIOD)	/* seconds between two cleanups */
#define EXPIRE_PERIOD	(4 * CLEANUP_PERIOD)	/* a dummy's life */

struct dummy {
	struct dummy *next;
	unsigned long jiffies_expire;
};

static struct dummy *dummy_list;
static volatile int stopping, stopped;

__noinline struct dummy *dummy_alloc(void)
{
	struct dummy *d;
	void *leak;

	d = kzalloc(sizeof(*d), GFP_KERNEL);
	if (!d)
		return NULL;
	d->jiffies_expire = jiffies + EXPIRE_PERIOD * HZ;
	/* Oops, forgot to save leak! */
	leak = kzalloc(sizeof(int), GFP_KERNEL);
	(void)leak;
	pr_info("%s: dummy @ %p, expires @ %lx\n", __func__, d, d->jiffies_expire);
	return d;
}

__noinline void dummy_free(struct dummy *d)
{
	pr_info("%s: dummy @ %p, expired = %lx\n", __func__, d, d->jiffies_expire);
	kfree(d);
}

__noinline bool dummy_check(struct dummy *d, unsigned long now)
{
	return now > d->jiffies_expire;
}

static void alloc_work_func(void)
{
	struct dummy *d = dummy_alloc();
	unsigned long flags;

	if (!d)
		return;
	flags = local_irq_save();	/* the sample's mutex */
	d->next = dummy_list;
	dummy_list = d;
	local_irq_restore(flags);
}

static void cleanup_work_func(void)
{
	struct dummy **pp = &dummy_list, *d;
	unsigned long j = jiffies, flags;

	pr_info("%s: jiffies = %lx\n", __func__, j);
	flags = local_irq_save();
	while ((d = *pp)) {
		if (dummy_check(d, j)) {
			*pp = d->next;
			dummy_free(d);
		} else {
			pp = &d->next;
		}
	}
	local_irq_restore(flags);
}

/* The two delayed works of the sample, in one kernel thread. */
static int dummy_worker(void *arg)
{
	unsigned long n;

	for (n = 1; !READ_ONCE(stopping); n++) {
		msleep(ALLOC_PERIOD * 1000);
		alloc_work_func();
		if (n % (CLEANUP_PERIOD / ALLOC_PERIOD) == 0)
			cleanup_work_func();
	}
	WRITE_ONCE(stopped, 1);
	return 0;
}

static int livepatch_shadow_mod_init(void)
{
	if (!kthread_create(dummy_worker, NULL, "kworker/dummy", 0))
		return -EAGAIN;
	return 0;
}

static void livepatch_shadow_mod_exit(void)
{
	struct dummy *d;

	/* cancel_delayed_work_sync(): wait for the worker to stop */
	WRITE_ONCE(stopping, 1);
	while (!READ_ONCE(stopped))
		msleep(10);
	while ((d = dummy_list)) {
		dummy_list = d->next;
		dummy_free(d);
	}
}

module_init(livepatch_shadow_mod_init);
module_exit(livepatch_shadow_mod_exit);
MODULE_LICENSE("GPL");
