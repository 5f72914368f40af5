/* The init calls do_exit(0) instead of returning.  Linux: insmod exits, the module is stuck in the "coming" state for ever, never patched. */
#include "bad.h"

BAD_PATCH("bad_init_exits");

static int __init bad_init(void)
{
	if (OPAQUE(1))
		do_exit(0);
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
