/* test_klp_kprobe.c - the upstream selftests' kprobe module, for the lab's
 * kernel: a kprobe on cmdline_proc_show(), with a post handler or without;
 * with one it may change where the function continues, so a live patch of
 * the same function is refused while it is there. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"
#include "kprobes.h"

static bool has_post_handler = true;
module_param(has_post_handler, bool, 0444);
MODULE_PARM_DESC(has_post_handler, "Whether the kprobe has a post_handler");

static int pre_handler(struct kprobe *p, struct pt_regs *regs)
{
	return 0;
}

static void post_handler(struct kprobe *p, struct pt_regs *regs, unsigned long flags)
{
}

static struct kprobe kp = {
	.symbol_name = "cmdline_proc_show",
	.pre_handler = pre_handler,
};

static int kprobe_init(void)
{
	if (has_post_handler)
		kp.post_handler = post_handler;
	return register_kprobe(&kp);
}

static void kprobe_exit(void)
{
	unregister_kprobe(&kp);
}

module_init(kprobe_init);
module_exit(kprobe_exit);
MODULE_LICENSE("GPL");
