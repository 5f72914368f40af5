/* test_klp_callbacks_demo.c - the upstream selftests' callback demo: every
 * callback of every object says when it runs; the vmlinux pre-patch one
 * returns pre_patch_ret, so a test can make it fail; it patches the busy
 * module's work function. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"

static int pre_patch_ret;
module_param(pre_patch_ret, int, 0644);
MODULE_PARM_DESC(pre_patch_ret, "pre_patch_ret (default=0)");

static void callback_info(const char *callback, struct klp_object *obj)
{
	if (obj->mod)
		pr_info("%s: %s -> %s\n", callback, obj->mod->name, module_state_str(obj->mod));
	else
		pr_info("%s: vmlinux\n", callback);
}

static int pre_patch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
	return pre_patch_ret;
}

static void post_patch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
}

static void pre_unpatch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
}

static void post_unpatch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
}

static int patched_work_func(void *arg)
{
	pr_info("%s\n", __func__);
	return 0;
}

static struct klp_func no_funcs[] = {
	{ }
};

static struct klp_func busymod_funcs[] = {
	{ .old_name = "busymod_work_func", .new_func = patched_work_func },
	{ }
};

#define CALLBACKS { \
	.pre_patch = pre_patch_callback, .post_patch = post_patch_callback, \
	.pre_unpatch = pre_unpatch_callback, .post_unpatch = post_unpatch_callback }

static struct klp_object objs[] = {
	{ .name = NULL, .funcs = no_funcs, .callbacks = CALLBACKS },	/* vmlinux */
	{ .name = "test_klp_callbacks_mod", .funcs = no_funcs, .callbacks = CALLBACKS },
	{ .name = "test_klp_callbacks_busy", .funcs = busymod_funcs, .callbacks = CALLBACKS },
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int test_klp_callbacks_demo_init(void)
{
	return klp_enable_patch(&patch);
}

static void test_klp_callbacks_demo_exit(void)
{
}

module_init(test_klp_callbacks_demo_init);
module_exit(test_klp_callbacks_demo_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
