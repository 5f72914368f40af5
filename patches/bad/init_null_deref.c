/* The init dereferences NULL before patching.  Linux: an oops kills insmod; the module is never live and nothing is patched. */
#include "bad.h"

BAD_PATCH("bad_init_null_deref");

static int __init bad_init(void)
{
	int *p = OPAQUE((int *)0);

	*p = 1;
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
