/* Named "sample_kgraft_patch", like kgr_capable.o's patch (apply that one first).  Linux: the sysfs directory exists already: -EEXIST, refused. */
#include "bad.h"

static struct kgr_patch patch = {
	.name = "sample_kgraft_patch",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(ns_capable, bad_good_capable, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
