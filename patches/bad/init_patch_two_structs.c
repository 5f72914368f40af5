/* The init hands two different patches to kgr_patch_kernel().  Linux (kGraft): the second is refused with -EBUSY while the first is in transition, and the init returns an error with the first one live. */
#include "bad.h"

static bool bad_new_ns_capable(struct user_namespace *ns, int cap)
{
	return cap >= 0 && ns != NULL;
}

BAD_PATCH("bad_init_patch_two_structs");

static struct kgr_patch second = {
	.name = "bad_init_patch_two_structs_2",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(ns_capable, bad_new_ns_capable, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	int ret = kgr_patch_kernel(&patch);

	if (ret)
		return ret;
	return kgr_patch_kernel(&second);
}
module_init(bad_init);
