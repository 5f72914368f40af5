/* A cumulative (replace_all) patch with no function: applied after another patch, it would silently revert it.  Linux (kGraft): allowed; it reverts every older patch. */
#include "bad.h"

static struct kgr_patch patch = {
	.name = "bad_replace_all_empty",
	.owner = THIS_MODULE,
	.replace_all = 1,
	.patches = {
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
