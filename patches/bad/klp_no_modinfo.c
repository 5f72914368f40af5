/* A klp patch without MODULE_INFO(livepatch, "Y").  Linux: "livepatch: module klp_no_modinfo is not marked as a livepatch module", klp_enable_patch() returns -EINVAL and the load fails. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"

static int bad_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s\n", "not marked as a live patch");
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "cmdline_proc_show", .new_func = bad_cmdline_proc_show },
	{ }
};

static struct klp_object objs[] = {
	{ .name = NULL, .funcs = funcs },
	{ }
};

static struct klp_patch patch = { .mod = THIS_MODULE, .objs = objs };

static int bad_init(void)
{
	return klp_enable_patch(&patch);
}

module_init(bad_init);
MODULE_LICENSE("GPL");
