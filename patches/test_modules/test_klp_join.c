/* test_klp_join.c - a live patch of the lab's own, not one of upstream's
 * selftest modules.  It replaces busymod_work_func(), which the worker of
 * test_klp_callbacks_busy sleeps in (so the transition stays open while it
 * sleeps, as in upstream's busy-module selftests), and the kprobe handler of
 * test_klp_join_mod: that module, loaded during the transition, joins it,
 * each task running the handler of its own universe until it moves. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"
#include "kprobes.h"

static int livepatch_busymod_work_func(void *arg)
{
	pr_info("%s\n", __func__);
	return 0;
}

static unsigned long livepatch_join_calls;

static int livepatch_join_mod_pre(struct kprobe *p, struct pt_regs *regs)
{
	livepatch_join_calls++;
	return 0;
}

static struct klp_func busymod_funcs[] = {
	{ .old_name = "busymod_work_func", .new_func = livepatch_busymod_work_func },
	{ }
};

static struct klp_func join_mod_funcs[] = {
	{ .old_name = "join_mod_pre", .new_func = livepatch_join_mod_pre },
	{ }
};

static struct klp_object objs[] = {
	{ .name = "test_klp_callbacks_busy", .funcs = busymod_funcs },
	{ .name = "test_klp_join_mod", .funcs = join_mod_funcs },
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int test_klp_join_init(void)
{
	return klp_enable_patch(&patch);
}

static void test_klp_join_exit(void)
{
}

module_init(test_klp_join_init);
module_exit(test_klp_join_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
