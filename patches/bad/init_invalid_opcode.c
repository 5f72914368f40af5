/* The init executes ud2, what BUG() compiles to.  Linux: an invalid opcode oops ("kernel BUG at ..."), insmod is killed. */
#include "bad.h"

BAD_PATCH("bad_init_invalid_opcode");

static int __init bad_init(void)
{
	asm volatile("ud2");
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
