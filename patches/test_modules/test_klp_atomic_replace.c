/* test_klp_atomic_replace.c - the upstream selftests' second live patch:
 * it patches /proc/meminfo, and with replace=1 it is a cumulative patch
 * that atomically replaces every patch before it. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"

static int replace;
module_param(replace, int, 0644);
MODULE_PARM_DESC(replace, "replace (default=0)");

static int livepatch_meminfo_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s: %s\n", THIS_MODULE->name, "this has been live patched");
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "meminfo_proc_show", .new_func = livepatch_meminfo_proc_show },
	{ }
};

static struct klp_object objs[] = {
	{ .name = NULL, .funcs = funcs },	/* vmlinux */
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
	/* .replace is set from the parameter by the init */
};

static int test_klp_atomic_replace_init(void)
{
	patch.replace = replace;
	return klp_enable_patch(&patch);
}

static void test_klp_atomic_replace_exit(void)
{
}

module_init(test_klp_atomic_replace_init);
module_exit(test_klp_atomic_replace_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
