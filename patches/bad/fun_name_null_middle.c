/* A NULL function name in the middle of the table ends it early: the entry after it is silently ignored.  Linux (kGraft): the same; the patch applies with one function fewer than its author meant. */
#include "bad.h"

static bool bad_new_ns_capable(struct user_namespace *ns, int cap)
{
	return cap >= 0 && ns != NULL;
}

static struct kgr_patch patch = {
	.name = "bad_fun_name_null_middle",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, bad_good_capable, true),
		{ .name = (const char *)0, .new_fun = bad_new_ns_capable, .abort_if_missing = 1 },
		KGR_PATCH(ns_capable, bad_new_ns_capable, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
