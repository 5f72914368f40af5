/* The init calls kgr_patch_remove() on a patch it never applied, then patches.  Linux (kGraft): removing an unregistered patch touches lists it was never on: a WARN or an oops. */
#include "bad.h"

BAD_PATCH("bad_remove_never_patched");

static int __init bad_init(void)
{
	kgr_patch_remove(&patch);
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
