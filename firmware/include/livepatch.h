/* livepatch.h - what an upstream-style live patch module includes: the
 * klp structures, klp_enable_patch(), callbacks, system states and shadow
 * variables, in the shape of Linux's <linux/livepatch.h>.
 *
 * A klp module is compiled with -DKBUILD_MODNAME='"name"' (patches/Makefile
 * and `lab patch build` pass it), which gives it its struct module, as
 * modpost's generated .mod.c gives one to every Linux module.
 */
#ifndef _LAB_LIVEPATCH_H
#define _LAB_LIVEPATCH_H

#include "kernel.h"
#include "module.h"

struct klp_object;

/* One replaced function.  old_name is looked up in the object's symbols
 * (kallsyms); old_sympos picks among static functions of the same name
 * (0: the name must be unique).  The rest is filled in by the core. */
struct klp_func {
	const char *old_name;
	void *new_func;
	unsigned long old_sympos;
	/* internal */
	unsigned long old_func;
	bool nop;          /* added by an atomic replace: back to the original */
	bool patched;
	bool transition;
};

struct klp_callbacks {
	int (*pre_patch)(struct klp_object *obj);
	void (*post_patch)(struct klp_object *obj);
	void (*pre_unpatch)(struct klp_object *obj);
	void (*post_unpatch)(struct klp_object *obj);
	bool post_unpatch_enabled;
};

/* The functions of one object: vmlinux (name NULL) or a module by name.
 * An object whose module is not loaded is patched when it loads. */
struct klp_object {
	const char *name;
	struct klp_func *funcs;
	struct klp_callbacks callbacks;
	/* internal */
	struct module *mod;   /* NULL for vmlinux, or while the module is not loaded */
	bool patched;
};

/* A system state a patch changes (klp_state): later cumulative patches
 * must know it, in at least the same version. */
struct klp_state {
	unsigned long id;
	unsigned int version;
	void *data;
};

struct klp_patch {
	struct module *mod;
	struct klp_object *objs;
	struct klp_state *states;
	bool replace;
	/* internal */
	struct klp_patch *next;    /* in klp_patches, oldest first */
	bool enabled;
	bool forced;
	bool registered;
};

#define klp_for_each_object_static(patch, obj) \
	for (obj = (patch)->objs; obj->funcs || obj->name; obj++)
#define klp_for_each_func_static(obj, func) \
	for (func = (obj)->funcs; func && func->old_name; func++)
#define klp_for_each_state(patch, state) \
	for (state = (patch)->states; state && state->id; state++)

int klp_enable_patch(struct klp_patch *patch);
const char *module_state_str(struct module *mod);

struct klp_state *klp_get_state(struct klp_patch *patch, unsigned long id);
struct klp_state *klp_get_prev_state(unsigned long id);

/* Shadow variables (kernel/livepatch/shadow.c): data attached to an
 * existing object by a patch, found again by (object, id). */
typedef int (*klp_shadow_ctor_t)(void *obj, void *shadow_data, void *ctor_data);
typedef void (*klp_shadow_dtor_t)(void *obj, void *shadow_data);

void *klp_shadow_get(void *obj, unsigned long id);
void *klp_shadow_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp_flags,
		       klp_shadow_ctor_t ctor, void *ctor_data);
void *klp_shadow_get_or_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp_flags,
			      klp_shadow_ctor_t ctor, void *ctor_data);
void klp_shadow_free(void *obj, unsigned long id, klp_shadow_dtor_t dtor);
void klp_shadow_free_all(unsigned long id, klp_shadow_dtor_t dtor);

#endif
