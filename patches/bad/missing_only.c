/* Its only function does not exist and is not required (abort_if_missing 0).  Linux (kGraft): skipped with a warning; the patch applies and changes nothing. */
#include "bad.h"

static long bad_no_such_function(void)
{
	return 0;
}

static struct kgr_patch patch = {
	.name = "bad_missing_only",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(no_such_function, bad_no_such_function, false),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
