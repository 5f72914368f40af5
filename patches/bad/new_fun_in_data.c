/* The replacement of capable() points into the module's data (bytes of a ret).  Linux: module data is not executable (NX): every call oopses. */
#include "bad.h"

static unsigned char bad_code[16] = { 0x31, 0xc0, 0xc3 };   /* xor eax, eax; ret */

static struct kgr_patch patch = {
	.name = "bad_new_fun_in_data",
	.owner = THIS_MODULE,
	.patches = {
		{ .name = "capable", .new_fun = bad_code, .abort_if_missing = 1 },
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
