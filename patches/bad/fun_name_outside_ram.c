/* A kgr_patch_fun whose function name points outside RAM.  Linux: kallsyms_lookup_name() reads it: a page fault oops in insmod. */
#include "bad.h"

static struct kgr_patch patch = {
	.name = "bad_fun_name_outside_ram",
	.owner = THIS_MODULE,
	.patches = {
		{ .name = (const char *)0x10000000UL, .new_fun = bad_good_capable, .abort_if_missing = 1 },
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
