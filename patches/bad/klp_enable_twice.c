/* A klp patch enabled twice from one init.  Linux: the second klp_enable_patch() finds the patch already enabled and fails; the first stays and completes. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"

static int twice_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s\n", "enabled twice");
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "cmdline_proc_show", .new_func = twice_cmdline_proc_show },
	{ }
};

static struct klp_object objs[] = {
	{ .name = NULL, .funcs = funcs },
	{ }
};

static struct klp_patch patch = { .mod = THIS_MODULE, .objs = objs };

static int bad_init(void)
{
	int ret = klp_enable_patch(&patch);

	if (ret)
		return ret;
	klp_enable_patch(&patch);	/* ignored failure, as a careless init would */
	return 0;
}

module_init(bad_init);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
