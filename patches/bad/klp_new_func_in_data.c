/* A klp patch whose new_func points into the module's data.  Linux would jump there and crash; the lab refuses the patch (-EINVAL) before any pad is touched, as it refuses a kGraft one. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"

static unsigned long not_code[4];

static struct klp_func funcs[] = {
	{ .old_name = "cmdline_proc_show", .new_func = not_code },
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
MODULE_INFO(livepatch, "Y");
