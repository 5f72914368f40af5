/* livepatch.c - the upstream live patching API inside the kernel
 * (kernel/livepatch/core.c, state.c and the sysfs side of it).
 *
 * The guest keeps what upstream's core keeps: the list of registered
 * patches (klp_patches), the patch in transition and its target, and
 * it runs every callback itself, in the task upstream runs it in: the
 * pre-patch callbacks in insmod (klp_enable_patch()), the pre-unpatch
 * ones in the task writing to the patch's `enabled` file, the post ones
 * where the transition completes (kmodloader, the system workqueue's
 * role).  The lab's core does what ftrace and the transition code do:
 * it reads and resolves the patch (HC_KLP_INIT), writes trampolines and
 * pads, moves tasks, and says when every task has moved.
 */
#define pr_fmt(fmt) "livepatch: " fmt
#include "kernel.h"
#include "livepatch.h"
#include "kgraft.h"
#include "kprobes.h"

#define KLP_UNDEFINED -1
#define KLP_UNPATCHED 0
#define KLP_PATCHED   1

struct klp_patch *klp_patches;             /* registered patches, oldest first */
struct klp_patch *klp_transition_patch;
int klp_target_state = KLP_UNDEFINED;
/* Written by the lab when every task has moved: kmodloader then runs
 * klp_complete_transition() (upstream's klp_transition_work). */
volatile unsigned long klp_complete_request;

static const char *klp_obj_name(struct klp_object *obj)
{
	return obj->name ? obj->name : "vmlinux";
}

static bool klp_is_object_loaded(struct klp_object *obj)
{
	return !obj->name || obj->mod;
}

#define klp_for_each_patch(p) for (p = klp_patches; p; p = p->next)

static void klp_list_del(struct klp_patch *patch)
{
	struct klp_patch **pp;

	for (pp = &klp_patches; *pp; pp = &(*pp)->next)
		if (*pp == patch) {
			*pp = patch->next;
			break;
		}
	patch->next = NULL;
}

static void klp_list_add_tail(struct klp_patch *patch)
{
	struct klp_patch **pp = &klp_patches;

	while (*pp)
		pp = &(*pp)->next;
	patch->next = NULL;
	*pp = patch;
}

/* ---- system states (kernel/livepatch/state.c) ---- */

struct klp_state *klp_get_state(struct klp_patch *patch, unsigned long id)
{
	struct klp_state *state;

	klp_for_each_state(patch, state)
		if (state->id == id)
			return state;
	return NULL;
}

/* The state as the patches installed before the one in transition left it. */
struct klp_state *klp_get_prev_state(unsigned long id)
{
	struct klp_patch *patch;
	struct klp_state *state, *last = NULL;

	if (!klp_transition_patch)
		return NULL;
	klp_for_each_patch(patch) {
		if (patch == klp_transition_patch)
			break;
		state = klp_get_state(patch, id);
		if (state)
			last = state;
	}
	return last;
}

/* A cumulative patch must take over every state the installed ones
 * changed, in at least their version; a patch that replaces nothing may
 * leave a state alone. */
static bool klp_is_state_compatible(struct klp_patch *patch, struct klp_patch *old)
{
	struct klp_state *old_state, *state;

	klp_for_each_state(old, old_state) {
		state = klp_get_state(patch, old_state->id);
		if (!state)
			return !patch->replace;
		if (state->version < old_state->version)
			return false;
	}
	return true;
}

static bool klp_is_patch_compatible(struct klp_patch *patch)
{
	struct klp_patch *old;

	klp_for_each_patch(old)
		if (!klp_is_state_compatible(patch, old))
			return false;
	return true;
}

/* ---- callbacks (kernel/livepatch/core.h) ---- */

static int klp_pre_patch_callback(struct klp_object *obj)
{
	int ret = 0;

	if (obj->callbacks.pre_patch)
		ret = obj->callbacks.pre_patch(obj);
	obj->callbacks.post_unpatch_enabled = !ret;
	return ret;
}

static void klp_post_patch_callback(struct klp_object *obj)
{
	if (obj->callbacks.post_patch)
		obj->callbacks.post_patch(obj);
}

static void klp_pre_unpatch_callback(struct klp_object *obj)
{
	if (obj->callbacks.pre_unpatch)
		obj->callbacks.pre_unpatch(obj);
}

static void klp_post_unpatch_callback(struct klp_object *obj)
{
	if (obj->callbacks.post_unpatch_enabled && obj->callbacks.post_unpatch)
		obj->callbacks.post_unpatch(obj);
	obj->callbacks.post_unpatch_enabled = false;
}

/* ---- the transition, the guest's half ---- */

static void klp_init_transition(struct klp_patch *patch, int state)
{
	klp_transition_patch = patch;
	klp_target_state = state;
	pr_debug("'%s': initializing %s transition\n", patch->mod->name,
		 state == KLP_PATCHED ? "patching" : "unpatching");
}

static int klp_start_transition(void)
{
	struct klp_patch *patch = klp_transition_patch;

	pr_notice("'%s': starting %s transition\n", patch->mod->name,
		  klp_target_state == KLP_PATCHED ? "patching" : "unpatching");
	return (int)hypercall2(HC_KLP_START, patch, klp_target_state);
}

/* The patch leaves the registered list: its directory in sysfs goes and
 * its module may be removed again (klp_free_patch_start/finish()), unless
 * it was forced: then nobody can tell whether a task still runs its code. */
static void klp_free_patch(struct klp_patch *patch)
{
	klp_list_del(patch);
	patch->registered = false;
	if (!patch->forced)
		patch->mod->refcnt--;
	hypercall1(HC_KLP_FREE, patch);
}

/* Upstream's klp_complete_transition() and what klp_try_complete_transition()
 * does after it: post callbacks, then freeing what the transition retired. */
static void klp_complete_transition(void)
{
	struct klp_patch *patch = klp_transition_patch, *old, *next;
	struct klp_object *obj;
	int state = klp_target_state;

	pr_debug("'%s': completing %s transition\n", patch->mod->name,
		 state == KLP_PATCHED ? "patching" : "unpatching");
	if (patch->replace && state == KLP_PATCHED)
		klp_for_each_patch(old)
			if (old != patch)
				old->enabled = false;	/* klp_unpatch_replaced_patches() */
	klp_for_each_object_static(patch, obj) {
		if (!klp_is_object_loaded(obj))
			continue;
		if (state == KLP_UNPATCHED)
			obj->patched = false;	/* klp_unpatch_objects() */
		if (state == KLP_PATCHED)
			klp_post_patch_callback(obj);
		else
			klp_post_unpatch_callback(obj);
	}
	pr_notice("'%s': %s complete\n", patch->mod->name,
		  state == KLP_PATCHED ? "patching" : "unpatching");
	klp_target_state = KLP_UNDEFINED;
	klp_transition_patch = NULL;
	if (!patch->enabled) {
		klp_free_patch(patch);
	} else if (patch->replace) {
		for (old = klp_patches; old; old = next) {
			next = old->next;
			if (old != patch)
				klp_free_patch(old);
		}
	}
	/* the core's work is over once what it retired is freed: a module
	 * can be removed as soon as the lab says the transition is done */
	hypercall2(HC_KLP_DONE, patch, state);
}

/* Run by kmodloader when the lab asks (every task has moved). */
void klp_transition_work_fn(void)
{
	struct klp_patch *patch = (struct klp_patch *)klp_complete_request;

	klp_complete_request = 0;
	if (patch && patch == klp_transition_patch)
		klp_complete_transition();
}

static void klp_cancel_transition(void)
{
	struct klp_patch *patch = klp_transition_patch;
	struct klp_object *obj;

	pr_debug("'%s': canceling patching transition, going to unpatch\n", patch->mod->name);
	klp_target_state = KLP_UNPATCHED;
	pr_debug("'%s': completing unpatching transition\n", patch->mod->name);
	klp_for_each_object_static(patch, obj) {
		obj->patched = false;
		if (klp_is_object_loaded(obj))
			klp_post_unpatch_callback(obj);
	}
	pr_notice("'%s': unpatching complete\n", patch->mod->name);
	klp_target_state = KLP_UNDEFINED;
	klp_transition_patch = NULL;
}

/* ftrace_enabled (/proc/sys/kernel/ftrace_enabled): with ftrace off, no
 * handler can be registered, so no function can be patched. */
int ftrace_enabled = 1;

/* klp_patch_object(): the lab writes the trampolines and pads when the
 * transition starts; what can refuse it is checked here, as
 * register_ftrace_function() would refuse it. */
static int klp_patch_object(struct klp_object *obj)
{
	struct klp_func *func;

	klp_for_each_func_static(obj, func) {
		long ret = -EBUSY;
		unsigned long ip;

		/* register_ftrace_function(): refused with ftrace off, or when
		 * another user may already change where the function goes */
		if (ftrace_enabled) {
			ip = obj->name ? 0 : kallsyms_lookup_name(func->old_name);
			ret = ip ? hypercall3(HC_FTRACE_OPS, ip, FTRACE_OPS_LIVEPATCH | FTRACE_OPS_IPMODIFY, 2) : 0;
		}
		if (ret) {
			pr_err("failed to register ftrace handler for function '%s' (%ld)\n", func->old_name, ret);
			return (int)ret;
		}
	}
	obj->patched = true;
	return 0;
}

static int __klp_enable_patch(struct klp_patch *patch)
{
	struct klp_object *obj;
	int ret;

	if (klp_transition_patch)
		return -EBUSY;
	pr_notice("enabling patch '%s'\n", patch->mod->name);
	klp_init_transition(patch, KLP_PATCHED);
	klp_for_each_object_static(patch, obj) {
		if (!klp_is_object_loaded(obj))
			continue;
		ret = klp_pre_patch_callback(obj);
		if (ret) {
			pr_warn("pre-patch callback failed for object '%s'\n", klp_obj_name(obj));
			goto err;
		}
		ret = klp_patch_object(obj);
		if (ret) {
			pr_warn("failed to patch object '%s'\n", klp_obj_name(obj));
			goto err;
		}
	}
	ret = klp_start_transition();
	if (ret)
		goto err;
	patch->enabled = true;
	return 0;
err:
	pr_warn("failed to enable patch '%s'\n", patch->mod->name);
	klp_cancel_transition();
	return ret;
}

int klp_enable_patch(struct klp_patch *patch)
{
	struct klp_object *obj;
	int ret;

	if (!patch || !patch->mod || !patch->objs)
		return -EINVAL;
	if (patch->registered)
		return -EEXIST;		/* enabled already: nothing of it is touched */
	klp_for_each_object_static(patch, obj) {
		if (!obj->funcs)
			return -EINVAL;
		/* klp_find_object_module(): a module object is loaded if its
		 * module is here and not going */
		obj->mod = NULL;
		if (obj->name) {
			struct module *mod = find_module(obj->name);

			if (mod && mod->klp_alive)
				obj->mod = mod;
		}
	}
	if (!patch->mod->klp) {
		pr_err("module %s is not marked as a livepatch module\n", patch->mod->name);
		return -EINVAL;
	}
	if (!klp_is_patch_compatible(patch)) {
		pr_err("Livepatch patch (%s) is not compatible with the already installed livepatches.\n",
		       patch->mod->name);
		return -EINVAL;
	}
	/* klp_init_patch(): the lab reads the structures, resolves every
	 * function and refuses what upstream refuses */
	ret = (int)hypercall1(HC_KLP_INIT, patch);
	if (ret)
		return ret;
	patch->mod->refcnt++;		/* try_module_get() */
	patch->registered = true;
	klp_list_add_tail(patch);
	ret = __klp_enable_patch(patch);
	if (ret)
		klp_free_patch(patch);
	return ret;
}

/* ---- modules coming and going (klp_module_coming/going()) ---- */

static const char *const module_state_name[] = {
	[MODULE_STATE_LIVE] = "[MODULE_STATE_LIVE] Normal state",
	[MODULE_STATE_COMING] = "[MODULE_STATE_COMING] Full formed, running module_init",
	[MODULE_STATE_GOING] = "[MODULE_STATE_GOING] Going away",
	[MODULE_STATE_UNFORMED] = "[MODULE_STATE_UNFORMED] Still setting it up",
};

const char *module_state_str(struct module *mod)
{
	return mod->state <= MODULE_STATE_UNFORMED ? module_state_name[mod->state] : "?";
}

/* Revert every patch's object for a module, up to (not including) limit. */
static void klp_cleanup_module_patches_limited(struct module *mod, struct klp_patch *limit)
{
	struct klp_patch *patch;
	struct klp_object *obj;

	klp_for_each_patch(patch) {
		if (patch == limit)
			break;
		klp_for_each_object_static(patch, obj) {
			if (!obj->name || strcmp(obj->name, mod->name) || !obj->mod)
				continue;
			if (patch != klp_transition_patch)
				klp_pre_unpatch_callback(obj);
			pr_notice("reverting patch '%s' on unloading module '%s'\n", patch->mod->name,
				  obj->mod->name);
			hypercall3(HC_KLP_OBJECT, (long)patch, (long)obj, 0);	/* klp_unpatch_object() */
			obj->patched = false;
			klp_post_unpatch_callback(obj);
			obj->mod = NULL;
			break;
		}
	}
}

/* Called by the loader before a module's init: every registered patch that
 * patches it is applied to it now; one that fails refuses the module. */
int klp_module_coming(struct module *mod)
{
	struct klp_patch *patch;
	struct klp_object *obj;
	int ret = 0;

	if (!strcmp(mod->name, "vmlinux")) {
		pr_err("vmlinux.ko: invalid module name\n");
		return -EINVAL;
	}
	mod->klp_alive = true;
	klp_for_each_patch(patch) {
		klp_for_each_object_static(patch, obj) {
			if (!obj->name || strcmp(obj->name, mod->name))
				continue;
			obj->mod = mod;
			pr_notice("applying patch '%s' to loading module '%s'\n", patch->mod->name,
				  obj->mod->name);
			ret = klp_pre_patch_callback(obj);
			if (ret) {
				pr_warn("pre-patch callback failed for object '%s'\n", obj->name);
				goto err;
			}
			/* klp_init_object_loaded() and klp_patch_object(): the lab
			 * resolves the module's functions and writes its pads */
			ret = (int)hypercall3(HC_KLP_OBJECT, (long)patch, (long)obj, 1);
			if (ret) {
				pr_warn("failed to apply patch '%s' to module '%s' (%d)\n", patch->mod->name,
					obj->mod->name, ret);
				goto err;
			}
			obj->patched = true;
			if (patch != klp_transition_patch)
				klp_post_patch_callback(obj);
			break;
		}
	}
	return 0;
err:
	pr_warn("patch '%s' failed for module '%s', refusing to load module '%s'\n", patch->mod->name,
		obj->mod->name, obj->mod->name);
	mod->klp_alive = false;
	obj->mod = NULL;
	klp_cleanup_module_patches_limited(mod, patch);
	return ret;
}

void klp_module_going(struct module *mod)
{
	mod->klp_alive = false;
	klp_cleanup_module_patches_limited(mod, NULL);
}

/* ---- sysfs: /sys/kernel/livepatch/<patch>/... ---- */

static int __klp_disable_patch(struct klp_patch *patch)
{
	struct klp_object *obj;
	int ret;

	if (!patch->enabled)
		return -EINVAL;
	if (klp_transition_patch)
		return -EBUSY;
	klp_init_transition(patch, KLP_UNPATCHED);
	klp_for_each_object_static(patch, obj)
		if (obj->patched)
			klp_pre_unpatch_callback(obj);
	ret = klp_start_transition();
	if (ret) {
		klp_transition_patch = NULL;
		klp_target_state = KLP_UNDEFINED;
		return ret;
	}
	patch->enabled = false;
	return 0;
}

static void klp_reverse_transition(void)
{
	struct klp_patch *patch = klp_transition_patch;

	pr_debug("'%s': reversing transition from %s\n", patch->mod->name,
		 klp_target_state == KLP_PATCHED ? "patching to unpatching" : "unpatching to patching");
	hypercall1(HC_KLP_REVERSE, patch);
	patch->enabled = !patch->enabled;
	klp_target_state = !klp_target_state;
	klp_start_transition();
}

static ssize_t enabled_store(struct klp_patch *patch, const char *buf)
{
	bool enabled;

	if (!strcmp(buf, "1") || !strcmp(buf, "y") || !strcmp(buf, "Y"))
		enabled = true;
	else if (!strcmp(buf, "0") || !strcmp(buf, "n") || !strcmp(buf, "N"))
		enabled = false;
	else
		return -EINVAL;
	if (patch->enabled == enabled)
		return -EINVAL;		/* already in the requested state */
	/* a pending transition may be reversed either way; a disabled patch
	 * cannot be enabled again */
	if (patch == klp_transition_patch) {
		klp_reverse_transition();
		return 0;
	}
	if (!enabled)
		return __klp_disable_patch(patch);
	return -EINVAL;
}

static ssize_t force_store(struct klp_patch *patch, const char *buf)
{
	struct klp_patch *p;

	if (strcmp(buf, "1") && strcmp(buf, "y") && strcmp(buf, "Y"))
		return -EINVAL;
	if (patch != klp_transition_patch)
		return -EINVAL;
	pr_warn("forcing remaining tasks to the patched state\n");
	/* every registered patch counts as forced: its module stays */
	klp_for_each_patch(p)
		p->forced = true;
	hypercall1(HC_KLP_FORCE, patch);
	return 0;
}

enum klp_attr { KLP_ENABLED, KLP_TRANSITION, KLP_FORCE, KLP_REPLACE, KLP_STACK_ORDER, KLP_PATCHED_ATTR };

static const struct { const char *name; int mode; } klp_attrs[] = {
	[KLP_ENABLED] = { "enabled", 0644 },
	[KLP_TRANSITION] = { "transition", 0444 },
	[KLP_FORCE] = { "force", 0200 },
	[KLP_REPLACE] = { "replace", 0444 },
	[KLP_STACK_ORDER] = { "stack_order", 0444 },
	[KLP_PATCHED_ATTR] = { "patched", 0444 },
};

struct klp_sysfs_file {
	struct klp_patch *patch;
	struct klp_object *obj;
	int attr;
};

static int klp_sysfs_show(struct seq_file *m, void *data)
{
	struct klp_sysfs_file *f = data;

	switch (f->attr) {
	case KLP_ENABLED:
		return seq_printf(m, "%d\n", f->patch->enabled);
	case KLP_TRANSITION:
		return seq_printf(m, "%d\n", f->patch == klp_transition_patch);
	case KLP_STACK_ORDER: {
		/* the patch's place among the registered ones, 1 the oldest */
		struct klp_patch *p;
		int order = 0;

		klp_for_each_patch(p) {
			order++;
			if (p == f->patch)
				break;
		}
		return seq_printf(m, "%d\n", order);
	}
	case KLP_REPLACE:
		return seq_printf(m, "%d\n", f->patch->replace);
	case KLP_PATCHED_ATTR:
		return seq_printf(m, "%d\n", f->obj->patched);
	}
	return -EACCES;
}

static ssize_t klp_sysfs_store(void *data, const char *buf)
{
	struct klp_sysfs_file *f = data;

	if (f->attr == KLP_ENABLED)
		return enabled_store(f->patch, buf);
	if (f->attr == KLP_FORCE)
		return force_store(f->patch, buf);
	return -EACCES;
}

/* Which attribute of which registered patch path names: 0, or -ENOENT. */
static int klp_sysfs_lookup(const char *path, struct klp_patch **pp, struct klp_object **op, int *ap)
{
	static const char dir[] = "/sys/kernel/livepatch/";
	struct klp_patch *patch;
	struct klp_object *obj = NULL;
	const char *rest, *attr;
	size_t n = 0;
	int a;

	if (strncmp(path, dir, sizeof(dir) - 1))
		return -ENOENT;
	rest = path + sizeof(dir) - 1;
	klp_for_each_patch(patch) {
		n = strlen(patch->mod->name);
		if (!strncmp(rest, patch->mod->name, n) && rest[n] == '/')
			break;
	}
	if (!patch)
		return -ENOENT;
	attr = rest + n + 1;
	for (a = 0; a < (int)ARRAY_SIZE(klp_attrs); a++)
		if (a != KLP_PATCHED_ATTR && !strcmp(attr, klp_attrs[a].name))
			break;
	if (a == (int)ARRAY_SIZE(klp_attrs)) {
		/* <object>/patched */
		klp_for_each_object_static(patch, obj) {
			n = strlen(klp_obj_name(obj));
			if (!strncmp(attr, klp_obj_name(obj), n) && !strcmp(attr + n, "/patched"))
				break;
		}
		if (!obj->funcs && !obj->name)
			return -ENOENT;
		a = KLP_PATCHED_ATTR;
	}
	*pp = patch;
	*op = obj;
	*ap = a;
	return 0;
}

/* The file at path, if it is one of a registered patch's attributes. */
struct file *klp_sysfs_open(const char *path, int flags)
{
	struct klp_sysfs_file *f;
	struct klp_patch *patch;
	struct klp_object *obj;
	int a;

	if (klp_sysfs_lookup(path, &patch, &obj, &a))
		return NULL;
	/* the mode bits, as sysfs checks them at open */
	if (((flags & O_ACCMODE) != O_WRONLY && !(klp_attrs[a].mode & 0444)) ||
	    ((flags & O_ACCMODE) != O_RDONLY && !(klp_attrs[a].mode & 0222)))
		return ERR_PTR(-EACCES);
	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return ERR_PTR(-ENOMEM);
	f->patch = patch;
	f->obj = obj;
	f->attr = a;
	return seq_file_open(klp_sysfs_show, klp_sysfs_store, f, true);
}

/* The mode of a live patching sysfs path, as stat() reports it. */
long klp_sysfs_mode(const char *path)
{
	static const char dir[] = "/sys/kernel/livepatch/";
	struct klp_patch *patch;
	struct klp_object *obj;
	int a;

	if (strncmp(path, dir, sizeof(dir) - 1))
		return -ENOENT;
	klp_for_each_patch(patch)
		if (!strcmp(path + sizeof(dir) - 1, patch->mod->name))
			return S_IFDIR | 0755;
	if (klp_sysfs_lookup(path, &patch, &obj, &a))
		return -ENOENT;
	return S_IFREG | klp_attrs[a].mode;
}

/* ---- /proc/sys/kernel/ftrace_enabled ---- */

/* A registered patch with a patched function keeps a permanent ftrace
 * handler (FTRACE_OPS_FL_PERMANENT): ftrace cannot be turned off under it. */
static bool klp_has_ftrace_ops(void)
{
	struct klp_patch *patch;
	struct klp_object *obj;

	klp_for_each_patch(patch)
		klp_for_each_object_static(patch, obj)
			if (obj->patched && obj->funcs && obj->funcs->old_name)
				return true;
	return false;
}

static int ftrace_enabled_show(struct seq_file *m, void *data)
{
	return seq_printf(m, "%d\n", ftrace_enabled);
}

static ssize_t ftrace_enabled_store(void *data, const char *buf)
{
	if (!strcmp(buf, "1")) {
		ftrace_enabled = 1;
		return 0;
	}
	if (strcmp(buf, "0"))
		return -EINVAL;
	if (klp_has_ftrace_ops())
		return -EBUSY;
	ftrace_enabled = 0;
	return 0;
}

struct file *ftrace_enabled_open(void)
{
	return seq_file_open(ftrace_enabled_show, ftrace_enabled_store, NULL, false);
}

/* ---- upstream's consistency model (kernel/livepatch/transition.c) ----
 *
 * With klp_mode == KLP_MODE_UPSTREAM the transition is driven from here,
 * as upstream drives it from klp_transition_work: every second each task
 * still in the old universe is switched if it is not running and its
 * stack holds none of the functions it would leave (klp_try_switch_task());
 * after SIGNALS_TIMEOUT tries the remaining ones get the fake signal.  The
 * lab writes what this needs when a transition starts or reverses: the
 * address ranges a task's stack must not hold, and a generation number.
 */
#define SIGNALS_TIMEOUT 15
#define KLP_MAX_RANGES 64

unsigned long klp_check_ranges[KLP_MAX_RANGES][2];	/* [start, end) */
int klp_nr_check_ranges;
volatile int klp_work_active;		/* a transition is in progress */
volatile unsigned long klp_work_generation;	/* bumped at every start and reversal */
static unsigned long klp_seen_generation;
static int klp_signals_cnt;
static DECLARE_WAIT_QUEUE_HEAD(klp_work_wq);

extern char _stext[], _etext[], irq_return_site[], stop_return_site[], reschedule_return_site[];

static bool klp_in_check_ranges(unsigned long addr)
{
	int i;

	for (i = 0; i < klp_nr_check_ranges && i < KLP_MAX_RANGES; i++)
		if (addr >= klp_check_ranges[i][0] && addr < klp_check_ranges[i][1])
			return true;
	return false;
}

static bool klp_kernel_text(unsigned long addr)
{
	if (addr >= (unsigned long)_stext && addr < (unsigned long)_etext)
		return true;
	/* a module's code (module space holds nothing else that runs) */
	return addr >= MODULES_VADDR && addr < MODULES_END;
}

/* The frame-pointer form of a reliable stack walk (upstream's
 * arch_stack_walk_reliable()): 0 if the stack is clean, -EADDRINUSE if it
 * holds a function of the transition, -EINVAL if it cannot be trusted (an
 * interrupt frame in the middle of the kernel stack: the interrupted
 * function may not have set up its frame yet). */
static notrace int klp_check_stack(struct task_struct *task)
{
	unsigned long lo = task->stack_top - KSTACK_SIZE, hi = task->stack_top;
	unsigned long rbp, ret;
	int depth = 0;

	if (task == current) {
		rbp = (unsigned long)__builtin_frame_address(0);
		ret = (unsigned long)__builtin_return_address(0);
	} else {
		unsigned long sp = task->thread.sp;

		if (sp < lo || sp + 8 * 8 > hi)
			return -EINVAL;
		/* what __switch_to_asm pushed: r15 r14 r13 r12 rbx rbp flags, ret */
		rbp = ((unsigned long *)sp)[5];
		ret = ((unsigned long *)sp)[7];
	}
	for (;;) {
		if (klp_in_check_ranges(ret))
			return -EADDRINUSE;
		if (rbp < lo || rbp + 16 > hi || ++depth > 64)
			return 0;
		ret = ((unsigned long *)rbp)[1];
		if (ret == (unsigned long)irq_return_site || ret == (unsigned long)stop_return_site ||
		    ret == (unsigned long)reschedule_return_site) {
			struct pt_regs *regs = (struct pt_regs *)(rbp + 16);

			if (user_mode(regs))
				return 0;	/* the kernel stack ends at the user's frame */
			return -EINVAL;
		}
		if (!klp_kernel_text(ret))
			return 0;
		rbp = ((unsigned long *)rbp)[0];
	}
}

/* Switch one task if it is safe (klp_try_switch_task()); true when it is
 * in the target universe afterwards. */
static notrace bool klp_try_switch_task(struct task_struct *task)
{
	unsigned long flags;
	bool switched;
	u8 target;

	/* Upstream checks and switches inside task_call_func(), which holds the
	 * task's pi_lock and runqueue lock with interrupts off: the task cannot
	 * run between the stack check and the switch, the target cannot change
	 * under it, and the switch and its record are one step.  Preempted in
	 * between, this worker would switch a task that had meanwhile entered
	 * an old function, or record the move after the task had already run
	 * in the new universe. */
	flags = local_irq_save();
	target = kgr_target_universe;
	switched = task->kgr_universe == target;
	if (!switched && !klp_check_stack(task)) {
		task->kgr_universe = target;
		task->kgr_migrated_by = KGR_SAFE_STACK_CHECK;
		hypercall2(HC_KGR_SAFE, task->tid, KGR_SAFE_STACK_CHECK);
		switched = true;
	}
	local_irq_restore(flags);
	return switched;
}

/* klp_send_signals(): user tasks get the fake signal, kthreads a wake-up. */
static void klp_send_signals(void)
{
	int i;

	if (klp_signals_cnt == SIGNALS_TIMEOUT)
		pr_notice("signaling remaining tasks\n");
	for (i = 0; i < nr_tasks; i++) {
		struct task_struct *p = &tasks[i];

		if (p->state == TASK_UNUSED || p->state == TASK_DEAD || p->flags & PF_IDLE ||
		    p->kgr_universe == kgr_target_universe)
			continue;
		if (p->flags & PF_KTHREAD)
			wake_up_process(p);
		else
			signal_wake_up(p);
	}
}

static void klp_try_complete_transition(void)
{
	bool complete = true;
	int i;

	if (klp_seen_generation != klp_work_generation) {
		klp_seen_generation = klp_work_generation;
		klp_signals_cnt = 0;
	}
	for (i = 0; i < nr_tasks; i++) {	/* for_each_process_thread() */
		struct task_struct *p = &tasks[i];

		if (p->state == TASK_UNUSED || p->state == TASK_DEAD)
			continue;
		if (!klp_try_switch_task(p))
			complete = false;
	}
	if (!complete) {
		if (klp_signals_cnt && !(klp_signals_cnt % SIGNALS_TIMEOUT))
			klp_send_signals();
		klp_signals_cnt++;
		return;
	}
	/* every task moved: a klp patch completes here; a kGraft patch's
	 * transition the lab completes at the next slice */
	if (klp_transition_patch)
		klp_complete_transition();
}

/* klp_transition_work: tries at once when a transition starts (the lab
 * wakes it), then once a second. */
static int klp_worker_fn(void *arg)
{
	for (;;) {
		wait_event_interruptible(klp_work_wq, READ_ONCE(klp_work_active));
		if (!READ_ONCE(klp_work_active))
			continue;
		klp_try_complete_transition();
		if (READ_ONCE(klp_work_active))
			schedule_timeout(HZ);
		kthread_iteration_done();
	}
	return 0;
}

void start_klp_worker(void)
{
	kthread_create(klp_worker_fn, NULL, "kworker/klp", 0);
}
