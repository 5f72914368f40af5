/* writeback.c - dirty page accounting and the background flusher, after
 * mm/page-writeback.c and fs/fs-writeback.c, for the writeback workload:
 * kjournald dirties pages of two block devices and throttles itself in
 * balance_dirty_pages_ratelimited(); kflushd writes them back and reports.
 *
 * gcc, with the kernel's flags, does to this file what it does to Linux and
 * what a live patch author must know about (`lab patch analyze` shows it;
 * tests/test_authoring.py fails if gcc stops doing any of it):
 *   - wb_dirty_limit() is small: it is inlined into both its callers,
 *     balance_dirty_pages_ratelimited() and wb_over_bg_thresh(), and stays
 *     out of line, with its pad, for others;
 *   - wb_bandwidth() only reads its struct bdi_writeback: IPA-SRA passes
 *     the fields it reads by value instead (wb_bandwidth.isra.0);
 *   - wb_writeout_add() is only ever called with the same reason: IPA-CP
 *     clones it with the constant folded in (wb_writeout_add.constprop.0);
 *   - wb_report() starts with a cheap rate limit: ipa-split inlines that
 *     test into its callers and leaves the rest out of line
 *     (wb_report.part.0);
 *   - wb_workfn() ends with a call to wb_do_writeback() that becomes a jmp,
 *     a tail call: wb_workfn() has no frame left while it runs;
 *   - wb_report() keeps its rate limit in a static local, wb_report_last;
 *   - wb_throttle() is static and out of line: a patch of it, or one that
 *     calls it, finds it through kallsyms_lookup_name().
 */
#include "kernel.h"

#define WB_REASON_BACKGROUND	1
#define WB_REASON_SYNC		2
#define WB_NR_DEVICES		2

struct bdi_writeback {
	const char *name;
	unsigned long nr_dirty;		/* pages dirty now */
	unsigned long nr_written;	/* pages written back so far */
	unsigned long nr_throttled;	/* times a dirtier was throttled */
	unsigned long bw;		/* write bandwidth, pages per round */
	unsigned long dirty_ratio;	/* percent of the device's pages */
	unsigned long nr_pages;		/* the device's size in pages */
	unsigned long reasons[3];	/* pages written, by WB_REASON_* */
};

static struct bdi_writeback bdi_wb[WB_NR_DEVICES] = {
	{ .name = "sda", .bw = 8, .dirty_ratio = 20, .nr_pages = 1024 },
	{ .name = "sdb", .bw = 3, .dirty_ratio = 10, .nr_pages = 512 },
};

unsigned long global_dirty_pages;
unsigned long wb_rounds;

/* The number of dirty pages above which a device is written back in the
 * background and its dirtiers are throttled. */
unsigned long wb_dirty_limit(struct bdi_writeback *wb)
{
	return wb->nr_pages * wb->dirty_ratio / 100;
}

/* Static, reached only from wb_do_writeback(): pages to write this round.
 * It reads two fields of wb and nothing else, so gcc passes those. */
static __noinline unsigned long wb_bandwidth(struct bdi_writeback *wb, unsigned long rounds)
{
	unsigned long chunk = wb->bw;

	if (rounds & 1)
		chunk += chunk / 2;
	if (chunk > wb->nr_dirty)
		chunk = wb->nr_dirty;
	return chunk;
}

static __noinline void wb_writeout_add(struct bdi_writeback *wb, unsigned long nr, int reason)
{
	wb->nr_dirty -= nr;
	wb->nr_written += nr;
	wb->reasons[reason] += nr;
	global_dirty_pages -= nr;
}

/* A report line now and then: the rate limit is the static local
 * wb_report_last, shared by every caller. */
static void wb_report(struct bdi_writeback *wb, const char *why)
{
	static unsigned long wb_report_last;
	unsigned long limit;

	if (jiffies - wb_report_last < 20)
		return;
	wb_report_last = jiffies;
	limit = wb_dirty_limit(wb);
	printk(KERN_INFO "writeback: %s: %s: %lu dirty (limit %lu), %lu written, %lu throttled\n",
	       wb->name, why, wb->nr_dirty, limit, wb->nr_written, wb->nr_throttled);
	if (wb->nr_dirty > 2 * limit)
		printk(KERN_WARNING "writeback: %s: dirty pages %lu far over the limit %lu\n",
		       wb->name, wb->nr_dirty, limit);
}

/* Should kflushd write wb back now? */
__noinline bool wb_over_bg_thresh(struct bdi_writeback *wb)
{
	return wb->nr_dirty > wb_dirty_limit(wb) / 2;
}

/* One round of background writeback of every device over its threshold. */
__noinline long wb_do_writeback(struct bdi_writeback *wbs, int n)
{
	long written = 0;
	int i;

	for (i = 0; i < n; i++) {
		struct bdi_writeback *wb = &wbs[i];
		unsigned long nr;

		if (!wb_over_bg_thresh(wb))
			continue;
		nr = wb_bandwidth(wb, wb_rounds);
		wb_writeout_add(wb, nr, WB_REASON_BACKGROUND);
		written += nr;
		wb_report(wb, "background");
	}
	return written;
}

/* kflushd's work: count the round, then write back.  The call is the
 * function's last act, so gcc makes it a jmp. */
__noinline long wb_workfn(void)
{
	wb_rounds++;
	return wb_do_writeback(bdi_wb, WB_NR_DEVICES);
}

/* A dirtier calls this for every page it dirtied. */
void account_page_dirtied(struct bdi_writeback *wb)
{
	wb->nr_dirty++;
	global_dirty_pages++;
}

/* Static and out of line: a patch finds it with kallsyms.  It writes to
 * its bdi_writeback, so gcc passes the pointer as it is. */
static __noinline void wb_throttle(struct bdi_writeback *wb)
{
	wb->nr_throttled++;
	if (wb->nr_throttled % 64 == 0)
		printk(KERN_INFO "writeback: %s: dirtier throttled %lu times\n", wb->name, wb->nr_throttled);
}

/* Dirtiers are throttled while their device is over its dirty limit:
 * they sleep and let kflushd catch up (Linux's balance_dirty_pages()). */
__noinline void balance_dirty_pages_ratelimited(struct bdi_writeback *wb)
{
	if (wb->nr_dirty <= wb_dirty_limit(wb))
		return;
	wb_throttle(wb);
	wb_report(wb, "throttled");
	schedule_timeout(1);
}

/* ---- the writeback workload's kernel threads ---- */

/* Freezable, as Linux's flusher threads are: try_to_freeze() is its safe point. */
static int kflushd_fn(void *arg)
{
	printk(KERN_INFO "kflushd: started (freezable)\n");
	for (;;) {
		try_to_freeze();
		wb_workfn();
		kthread_iteration_done();
		schedule_timeout(2);
	}
	return 0;
}

/* Writes journal blocks to both devices, dirtying pages as it goes. */
static int kjournald_fn(void *arg)
{
	unsigned long i;

	printk(KERN_INFO "kjournald: started (freezable)\n");
	for (i = 0;; i++) {
		struct bdi_writeback *wb = &bdi_wb[i % WB_NR_DEVICES];
		int n;

		try_to_freeze();
		for (n = 0; n < 4; n++) {
			account_page_dirtied(wb);
			balance_dirty_pages_ratelimited(wb);
		}
		kthread_iteration_done();
		schedule_timeout(1);
	}
	return 0;
}

void user_reader_main(void);

void setup_writeback(void)
{
	user_task_create(user_reader_main, "pipe-reader");
	kthread_create(kflushd_fn, NULL, "kflushd", PF_FREEZABLE);
	kthread_create(kjournald_fn, NULL, "kjournald", PF_FREEZABLE);
}
