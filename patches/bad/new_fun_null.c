/* The replacement of capable() is NULL.  Linux (kGraft): accepted; every call of capable() jumps to address 0 and oopses. */
#include "bad.h"

static struct kgr_patch patch = {
	.name = "bad_new_fun_null",
	.owner = THIS_MODULE,
	.patches = {
		{ .name = "capable", .new_fun = (const void *)0, .abort_if_missing = 1 },
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
