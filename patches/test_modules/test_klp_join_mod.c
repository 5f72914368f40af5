/* test_klp_join_mod.c - a target module of the lab's own, not one of
 * upstream's selftest modules: a kprobe on cmdline_proc_show() whose handler
 * is this module's code, so every task that reads /proc/cmdline runs it.
 * test_klp_join replaces the handler; loaded while that patch's transition
 * runs, the module joins the transition. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"
#include "kprobes.h"

static unsigned long join_mod_calls;

int join_mod_pre(struct kprobe *p, struct pt_regs *regs)
{
	join_mod_calls++;
	return 0;
}

static struct kprobe kp = {
	.symbol_name = "cmdline_proc_show",
	.pre_handler = join_mod_pre,
};

static int test_klp_join_mod_init(void)
{
	return register_kprobe(&kp);
}

static void test_klp_join_mod_exit(void)
{
	unregister_kprobe(&kp);
}

module_init(test_klp_join_mod_init);
module_exit(test_klp_join_mod_exit);
MODULE_LICENSE("GPL");
