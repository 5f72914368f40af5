/* test_klp_shadow_vars.c - the upstream selftests' shadow variable test, for
 * the lab's kernel: a plain module (no patch) whose init drives the shadow
 * variable API and logs every call.  Pointers are logged as PTR<n>, numbered
 * in order of first appearance, so the log does not depend on addresses. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"

#define NUM_OBJS 3
#define SV_ID1 0x1234
#define SV_ID2 0x1235

static void *seen[64];
static int nr_seen;

/* the number of a pointer; NULL is PTR0 once it has been seen first */
static int ptr_id(void *ptr)
{
	int i;

	for (i = 0; i < nr_seen; i++)
		if (seen[i] == ptr)
			return i;
	if (nr_seen == (int)ARRAY_SIZE(seen))
		return -ENOMEM;
	seen[nr_seen] = ptr;
	return nr_seen++;
}

static void *shadow_get(void *obj, unsigned long id)
{
	void *sv = klp_shadow_get(obj, id);

	pr_info("klp_%s(obj=PTR%d, id=0x%lx) = PTR%d\n", __func__, ptr_id(obj), id, ptr_id(sv));
	return sv;
}

static void *shadow_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp,
			  klp_shadow_ctor_t ctor, void *ctor_data)
{
	int **var = ctor_data;
	void *sv = klp_shadow_alloc(obj, id, size, gfp, ctor, var);

	pr_info("klp_%s(obj=PTR%d, id=0x%lx, size=%zx, gfp_flags=%pGg), ctor=PTR%d, ctor_data=PTR%d = PTR%d\n",
		__func__, ptr_id(obj), id, size, &gfp, ptr_id(ctor), ptr_id(*var), ptr_id(sv));
	return sv;
}

static void *shadow_get_or_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp,
				 klp_shadow_ctor_t ctor, void *ctor_data)
{
	int **var = ctor_data;
	void *sv = klp_shadow_get_or_alloc(obj, id, size, gfp, ctor, var);

	pr_info("klp_%s(obj=PTR%d, id=0x%lx, size=%zx, gfp_flags=%pGg), ctor=PTR%d, ctor_data=PTR%d = PTR%d\n",
		__func__, ptr_id(obj), id, size, &gfp, ptr_id(ctor), ptr_id(*var), ptr_id(sv));
	return sv;
}

static void shadow_free(void *obj, unsigned long id, klp_shadow_dtor_t dtor)
{
	klp_shadow_free(obj, id, dtor);
	pr_info("klp_%s(obj=PTR%d, id=0x%lx, dtor=PTR%d)\n", __func__, ptr_id(obj), id, ptr_id(dtor));
}

static void shadow_free_all(unsigned long id, klp_shadow_dtor_t dtor)
{
	klp_shadow_free_all(id, dtor);
	pr_info("klp_%s(id=0x%lx, dtor=PTR%d)\n", __func__, id, ptr_id(dtor));
}

/* the constructor keeps the pointer it is given */
static int shadow_ctor(void *obj, void *shadow_data, void *ctor_data)
{
	int **sv = shadow_data, **var = ctor_data;

	if (!var)
		return -EINVAL;
	*sv = *var;
	pr_info("%s: PTR%d -> PTR%d\n", __func__, ptr_id(sv), ptr_id(*var));
	return 0;
}

static void shadow_dtor(void *obj, void *shadow_data)
{
	pr_info("%s(obj=PTR%d, shadow_data=PTR%d)\n", __func__, ptr_id(obj), ptr_id(shadow_data));
}

struct test_object {
	int unused;	/* shadow variables stand in for fields added later */
};

static int test_klp_shadow_vars_init(void)
{
	struct test_object objs[NUM_OBJS];
	char nfields1[NUM_OBJS], *pnfields1[NUM_OBJS], **sv1[NUM_OBJS], *pndup[NUM_OBJS];
	int nfields2[NUM_OBJS], *pnfields2[NUM_OBJS], **sv2[NUM_OBJS];
	void **sv;
	int i, ret = 0;

	ptr_id(NULL);
	/* an empty table finds nothing */
	if (!shadow_get(&objs[0], SV_ID1))
		pr_info("  got expected NULL result\n");

	/* pass 1: a char* and an int* shadow variable for each object */
	for (i = 0; i < NUM_OBJS; i++) {
		pnfields1[i] = &nfields1[i];
		ptr_id(pnfields1[i]);
		if (i % 2)
			sv1[i] = shadow_alloc(&objs[i], SV_ID1, sizeof(pnfields1[i]), GFP_KERNEL,
					      shadow_ctor, &pnfields1[i]);
		else
			sv1[i] = shadow_get_or_alloc(&objs[i], SV_ID1, sizeof(pnfields1[i]), GFP_KERNEL,
						     shadow_ctor, &pnfields1[i]);
		if (!sv1[i]) {
			ret = -ENOMEM;
			goto out;
		}
		pnfields2[i] = &nfields2[i];
		ptr_id(pnfields2[i]);
		sv2[i] = shadow_alloc(&objs[i], SV_ID2, sizeof(pnfields2[i]), GFP_KERNEL,
				      shadow_ctor, &pnfields2[i]);
		if (!sv2[i]) {
			ret = -ENOMEM;
			goto out;
		}
	}

	/* pass 2: each is found again and holds what the constructor put there */
	for (i = 0; i < NUM_OBJS; i++) {
		sv = shadow_get(&objs[i], SV_ID1);
		if (!sv) {
			ret = -EINVAL;
			goto out;
		}
		if ((char **)sv == sv1[i] && *sv1[i] == pnfields1[i])
			pr_info("  got expected PTR%d -> PTR%d result\n", ptr_id(sv1[i]), ptr_id(*sv1[i]));
		sv = shadow_get(&objs[i], SV_ID2);
		if (!sv) {
			ret = -EINVAL;
			goto out;
		}
		if ((int **)sv == sv2[i] && *sv2[i] == pnfields2[i])
			pr_info("  got expected PTR%d -> PTR%d result\n", ptr_id(sv2[i]), ptr_id(*sv2[i]));
	}

	/* pass 3: get_or_alloc returns the variable that is there */
	for (i = 0; i < NUM_OBJS; i++) {
		pndup[i] = &nfields1[i];
		ptr_id(pndup[i]);
		sv = shadow_get_or_alloc(&objs[i], SV_ID1, sizeof(pndup[i]), GFP_KERNEL,
					 shadow_ctor, &pndup[i]);
		if (!sv) {
			ret = -EINVAL;
			goto out;
		}
		if ((char **)sv == sv1[i] && *sv1[i] == pnfields1[i])
			pr_info("  got expected PTR%d -> PTR%d result\n", ptr_id(sv1[i]), ptr_id(*sv1[i]));
	}

	/* pass 4: free the char* ones, one by one */
	for (i = 0; i < NUM_OBJS; i++) {
		shadow_free(&objs[i], SV_ID1, shadow_dtor);
		if (!shadow_get(&objs[i], SV_ID1))
			pr_info("  got expected NULL result\n");
	}

	/* pass 5: the int* ones are still there */
	for (i = 0; i < NUM_OBJS; i++) {
		sv = shadow_get(&objs[i], SV_ID2);
		if (!sv) {
			ret = -EINVAL;
			goto out;
		}
		if ((int **)sv == sv2[i] && *sv2[i] == pnfields2[i])
			pr_info("  got expected PTR%d -> PTR%d result\n", ptr_id(sv2[i]), ptr_id(*sv2[i]));
	}

	/* pass 6: free them all at once */
	shadow_free_all(SV_ID2, NULL);
	for (i = 0; i < NUM_OBJS; i++)
		if (!shadow_get(&objs[i], SV_ID2))
			pr_info("  got expected NULL result\n");
	return 0;
out:
	shadow_free_all(SV_ID1, NULL);
	shadow_free_all(SV_ID2, NULL);
	return ret;
}

static void test_klp_shadow_vars_exit(void)
{
}

module_init(test_klp_shadow_vars_init);
module_exit(test_klp_shadow_vars_exit);
MODULE_LICENSE("GPL");
