/* shadow.c - shadow variables (kernel/livepatch/shadow.c): a patch that
 * needs a new field in an existing structure attaches it beside the
 * object instead, keyed by (object address, id).
 *
 * Linux keeps them in a hash table under a spinlock; here a list with
 * interrupts off is enough (one CPU).  The semantics are upstream's: alloc
 * refuses a duplicate with a warning, a failing constructor frees the new
 * variable, free and free_all call the destructor before freeing.
 */
#define pr_fmt(fmt) "livepatch: " fmt
#include "kernel.h"
#include "livepatch.h"

struct klp_shadow {
	struct klp_shadow *next;
	void *obj;
	unsigned long id;
	char data[] __attribute__((aligned(16)));
};

static struct klp_shadow *klp_shadow_list;

static struct klp_shadow *shadow_find(void *obj, unsigned long id)
{
	struct klp_shadow *s;

	for (s = klp_shadow_list; s; s = s->next)
		if (s->obj == obj && s->id == id)
			return s;
	return NULL;
}

void *klp_shadow_get(void *obj, unsigned long id)
{
	struct klp_shadow *s = shadow_find(obj, id);

	return s ? s->data : NULL;
}

static void *shadow_get_or_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp,
				 klp_shadow_ctor_t ctor, void *ctor_data, bool warn_on_exist)
{
	struct klp_shadow *s;
	unsigned long flags;
	int err;

	s = shadow_find(obj, id);
	if (s) {
		if (warn_on_exist) {
			pr_warn("Duplicate shadow variable <%p, %lx>\n", obj, id);
			return NULL;
		}
		return s->data;
	}
	s = kzalloc(sizeof(*s) + size, gfp);
	if (!s)
		return NULL;
	s->obj = obj;
	s->id = id;
	if (ctor) {
		err = ctor(obj, s->data, ctor_data);
		if (err) {
			kfree(s);
			pr_err("Failed to construct shadow variable <%p, %lx> (%d)\n", obj, id, err);
			return NULL;
		}
	}
	flags = local_irq_save();
	s->next = klp_shadow_list;
	klp_shadow_list = s;
	local_irq_restore(flags);
	return s->data;
}

void *klp_shadow_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp,
		       klp_shadow_ctor_t ctor, void *ctor_data)
{
	return shadow_get_or_alloc(obj, id, size, gfp, ctor, ctor_data, true);
}

void *klp_shadow_get_or_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp,
			      klp_shadow_ctor_t ctor, void *ctor_data)
{
	return shadow_get_or_alloc(obj, id, size, gfp, ctor, ctor_data, false);
}

/* obj NULL: every object with this id (klp_shadow_free_all()) */
static void shadow_free(void *obj, unsigned long id, klp_shadow_dtor_t dtor, bool all)
{
	struct klp_shadow **pp = &klp_shadow_list, *s;

	while ((s = *pp)) {
		if (s->id == id && (all || s->obj == obj)) {
			*pp = s->next;
			if (dtor)
				dtor(s->obj, s->data);
			kfree(s);
			if (!all)
				return;
			continue;
		}
		pp = &s->next;
	}
}

void klp_shadow_free(void *obj, unsigned long id, klp_shadow_dtor_t dtor)
{
	shadow_free(obj, id, dtor, false);
}

void klp_shadow_free_all(unsigned long id, klp_shadow_dtor_t dtor)
{
	shadow_free(NULL, id, dtor, true);
}
