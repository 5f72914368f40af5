/* The init returns -ENOSYS without patching.  Linux: insmod fails with "Function not implemented", the module is freed, nothing changed. */
#include "bad.h"

BAD_PATCH("bad_init_error_without_patch");

static int __init bad_init(void)
{
	if (OPAQUE(1))
		return -ENOSYS;
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
