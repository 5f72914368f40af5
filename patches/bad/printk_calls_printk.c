/* Replaces printk() with a function that calls printk(): the call goes through the patched pad into itself.  Linux: endless recursion on the first printk in the new universe, a stack overflow and a panic (ftrace's recursion protection does not cover a replacement). */
#include "bad.h"

static int bad_new_printk(const char *fmt, ...)
{
	int n = printk("%s", fmt);

	return OPAQUE(n) + 1;   /* not a tail call: every level keeps its frame */
}

static struct kgr_patch patch = {
	.name = "bad_printk_calls_printk",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(printk, bad_new_printk, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
