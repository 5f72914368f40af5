/* Replaces a function the kernel does not have, with abort_if_missing.  Linux (kGraft): "kgr: function no_such_function not resolved", the whole patch is refused (-ENOENT). */
#include "bad.h"

static long bad_no_such_function(void)
{
	return 0;
}

static struct kgr_patch patch = {
	.name = "bad_missing_abort",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, bad_good_capable, true),
		KGR_PATCH(no_such_function, bad_no_such_function, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
