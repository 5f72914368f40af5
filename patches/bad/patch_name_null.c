/* The kgr_patch has no name (.name = NULL).  Linux: kobject_init_and_add() of a NULL name fails or the core oopses printing it. */
#include "bad.h"

static struct kgr_patch patch = {
	.name = (const char *)0,
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, bad_good_capable, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
