/* test_klp_callbacks_busy.c - the upstream selftests' busy target module:
 * its init starts a worker that sits in busymod_work_func() for sleep_secs
 * seconds, so a patch of that function waits for it (the stack check);
 * its exit waits for the worker, as cancel_work_sync() would. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"

static int sleep_secs;
module_param(sleep_secs, int, 0644);
MODULE_PARM_DESC(sleep_secs, "sleep_secs (default=0)");

static volatile int work_done;

__noinline int busymod_work_func(void *arg)
{
	pr_info("%s, sleeping %d seconds ...\n", __func__, sleep_secs);
	msleep(sleep_secs * 1000);
	pr_info("%s exit\n", __func__);
	return 0;
}

static int busymod_worker(void *arg)
{
	busymod_work_func(arg);
	WRITE_ONCE(work_done, 1);
	return 0;
}

static int test_klp_callbacks_busy_init(void)
{
	pr_info("%s\n", __func__);
	if (!kthread_create(busymod_worker, NULL, "kworker/busy", 0))
		return -EAGAIN;
	return 0;
}

static void test_klp_callbacks_busy_exit(void)
{
	while (!READ_ONCE(work_done))
		msleep(10);
	pr_info("%s\n", __func__);
}

module_init(test_klp_callbacks_busy_init);
module_exit(test_klp_callbacks_busy_exit);
MODULE_LICENSE("GPL");
