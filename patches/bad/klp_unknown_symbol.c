/* A klp patch of a function the kernel does not have.  Linux: "livepatch: symbol 'no_such_function' not found in symbol table", -EINVAL, the load fails and nothing is patched. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"

static long bad_no_such_function(void)
{
	return 0;
}

static struct klp_func funcs[] = {
	{ .old_name = "no_such_function", .new_func = bad_no_such_function },
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
