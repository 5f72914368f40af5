/* test_klp_state.c - the upstream selftests' system state patch, version 1:
 * its callbacks raise console_loglevel and put it back, keeping the old
 * level in the data of a klp_state.  It is cumulative (replace). */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"

#ifndef CONSOLE_LOGLEVEL_STATE_VERSION
#define CONSOLE_LOGLEVEL_STATE_VERSION 1	/* no take-over from an earlier patch */
#endif
#define CONSOLE_LOGLEVEL_STATE 1

static struct klp_patch patch;

static void callback_info(const char *callback, struct klp_object *obj)
{
	if (obj->mod)
		pr_info("%s: %s\n", callback, obj->mod->name);
	else
		pr_info("%s: vmlinux\n", callback);
}

static struct klp_state *loglevel_state(void)
{
	return klp_get_state(&patch, CONSOLE_LOGLEVEL_STATE);
}

static int allocate_loglevel_state(void)
{
	struct klp_state *state = loglevel_state();

#if CONSOLE_LOGLEVEL_STATE_VERSION >= 2
	if (klp_get_prev_state(CONSOLE_LOGLEVEL_STATE)) {
		pr_info("%s: space to store console_loglevel already allocated\n", __func__);
		return 0;
	}
#endif
	if (!state)
		return -EINVAL;
	state->data = kzalloc(sizeof(console_loglevel), GFP_KERNEL);
	if (!state->data)
		return -ENOMEM;
	pr_info("%s: allocating space to store console_loglevel\n", __func__);
	return 0;
}

static void fix_console_loglevel(void)
{
	struct klp_state *state = loglevel_state();

	if (!state)
		return;
#if CONSOLE_LOGLEVEL_STATE_VERSION >= 2
	{
		struct klp_state *prev = klp_get_prev_state(CONSOLE_LOGLEVEL_STATE);

		if (prev) {
			pr_info("%s: taking over the console_loglevel change\n", __func__);
			state->data = prev->data;
			return;
		}
	}
#endif
	pr_info("%s: fixing console_loglevel\n", __func__);
	*(int *)state->data = console_loglevel;
	console_loglevel = CONSOLE_LOGLEVEL_MOTORMOUTH;
}

static void restore_console_loglevel(void)
{
	struct klp_state *state = loglevel_state();

	if (!state)
		return;
	pr_info("%s: restoring console_loglevel\n", __func__);
	console_loglevel = *(int *)state->data;
}

static void free_loglevel_state(void)
{
	struct klp_state *state = loglevel_state();

	if (!state)
		return;
	pr_info("%s: freeing space for the stored console_loglevel\n", __func__);
	kfree(state->data);
}

static int pre_patch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
	return allocate_loglevel_state();
}

static void post_patch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
	fix_console_loglevel();
}

static void pre_unpatch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
	restore_console_loglevel();
}

static void post_unpatch_callback(struct klp_object *obj)
{
	callback_info(__func__, obj);
	free_loglevel_state();
}

static struct klp_func no_funcs[] = {
	{ }
};

static struct klp_object objs[] = {
	{
		.name = NULL,	/* vmlinux */
		.funcs = no_funcs,
		.callbacks = {
			.pre_patch = pre_patch_callback,
			.post_patch = post_patch_callback,
			.pre_unpatch = pre_unpatch_callback,
			.post_unpatch = post_unpatch_callback,
		},
	},
	{ }
};

static struct klp_state states[] = {
	{ .id = CONSOLE_LOGLEVEL_STATE, .version = CONSOLE_LOGLEVEL_STATE_VERSION },
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
	.states = states,
	.replace = true,
};

static int test_klp_state_init(void)
{
	return klp_enable_patch(&patch);
}

static void test_klp_state_exit(void)
{
}

module_init(test_klp_state_init);
module_exit(test_klp_state_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
