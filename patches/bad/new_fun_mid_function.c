/* The replacement of capable() points 4 bytes into a function of the module, in the middle of an instruction.  Linux (kGraft): accepted; every call executes garbage. */
#include "bad.h"

static struct kgr_patch patch = {
	.name = "bad_new_fun_mid_function",
	.owner = THIS_MODULE,
	.patches = {
		{ .name = "capable", .new_fun = (const char *)bad_good_capable + 4, .abort_if_missing = 1 },
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
