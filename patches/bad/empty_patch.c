/* A kgr_patch with no function at all.  Linux (kGraft): a transition that changes nothing; the lab refuses it as having nothing to patch (-EINVAL). */
#include "bad.h"

static struct kgr_patch patch = {
	.name = "bad_empty_patch",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
