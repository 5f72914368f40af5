/* livepatch_shadow_fix1.c - the first fix of upstream's shadow variable
 * samples, for the lab's kernel: dummy_alloc() keeps the memory it used to
 * leak in a shadow variable of the dummy, and dummy_free() frees it.  The
 * dummies allocated before the fix have no such variable; they leak as
 * before.  A pre-unpatch callback frees what the shadow variables hold. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"

#define EXPIRE_PERIOD	12		/* seconds, as the module has it */
#define SV_LEAK		1		/* shadow variable id: the dummy's leak */

struct dummy {
	struct dummy *next;
	unsigned long jiffies_expire;
};

/* the constructor stores the leak pointer in the new shadow variable */
static int shadow_leak_ctor(void *obj, void *shadow_data, void *ctor_data)
{
	void **shadow_leak = shadow_data;
	void *leak = ctor_data;

	*shadow_leak = leak;
	return 0;
}

static struct dummy *livepatch_fix1_dummy_alloc(void)
{
	struct dummy *d;
	int *leak;

	d = kzalloc(sizeof(*d), GFP_KERNEL);
	if (!d)
		return NULL;
	d->jiffies_expire = jiffies + EXPIRE_PERIOD * HZ;
	/* the leak is kept this time, in a shadow variable of the dummy */
	leak = kzalloc(sizeof(*leak), GFP_KERNEL);
	if (!leak) {
		kfree(d);
		return NULL;
	}
	klp_shadow_alloc(d, SV_LEAK, sizeof(leak), GFP_KERNEL, shadow_leak_ctor, leak);
	pr_info("%s: dummy @ %p, expires @ %lx\n", __func__, d, d->jiffies_expire);
	return d;
}

static void livepatch_fix1_dummy_leak_dtor(void *obj, void *shadow_data)
{
	void *d = obj;
	int **shadow_leak = shadow_data;

	pr_info("%s: dummy @ %p, prevented leak @ %p\n", __func__, d, *shadow_leak);
	kfree(*shadow_leak);
}

static void livepatch_fix1_dummy_free(struct dummy *d)
{
	int **shadow_leak;

	/* a dummy allocated before this patch has no shadow variable */
	shadow_leak = klp_shadow_get(d, SV_LEAK);
	if (shadow_leak)
		klp_shadow_free(d, SV_LEAK, livepatch_fix1_dummy_leak_dtor);
	else
		pr_info("%s: dummy @ %p leaked!\n", __func__, d);
	kfree(d);
}

static struct klp_func funcs[] = {
	{ .old_name = "dummy_alloc", .new_func = livepatch_fix1_dummy_alloc },
	{ .old_name = "dummy_free", .new_func = livepatch_fix1_dummy_free },
	{ }
};

static struct klp_object objs[] = {
	{ .name = "livepatch_shadow_mod", .funcs = funcs },
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int livepatch_shadow_fix1_init(void)
{
	return klp_enable_patch(&patch);
}

static void livepatch_shadow_fix1_exit(void)
{
	/* the leaks the shadow variables still hold */
	klp_shadow_free_all(SV_LEAK, livepatch_fix1_dummy_leak_dtor);
}

module_init(livepatch_shadow_fix1_init);
module_exit(livepatch_shadow_fix1_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
