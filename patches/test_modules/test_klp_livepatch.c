/* test_klp_livepatch.c - the upstream selftests' basic live patch, for the
 * lab's kernel: /proc/cmdline says which module patched it. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"

static int livepatch_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s: %s\n", THIS_MODULE->name, "this has been live patched");
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "cmdline_proc_show", .new_func = livepatch_cmdline_proc_show },
	{ }
};

static struct klp_object objs[] = {
	{ .name = NULL, .funcs = funcs },	/* vmlinux */
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int test_klp_livepatch_init(void)
{
	return klp_enable_patch(&patch);
}

static void test_klp_livepatch_exit(void)
{
}

module_init(test_klp_livepatch_init);
module_exit(test_klp_livepatch_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
