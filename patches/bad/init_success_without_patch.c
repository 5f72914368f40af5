/* The init returns 0 without calling kgr_patch_kernel().  Linux: the module loads and stays, and patches nothing. */
#include "bad.h"

BAD_PATCH("bad_init_success_without_patch");

static int __init bad_init(void)
{
	if (OPAQUE(1))
		return 0;
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
