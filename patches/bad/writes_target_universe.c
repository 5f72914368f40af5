/* The init flips kgr_target_universe, the kGraft core's own variable, with no transition running.  Linux: nothing stops a module writing kernel data; kGraft's accounting is corrupted. */
#include "bad.h"

BAD_PATCH("bad_writes_target_universe");

static int __init bad_init(void)
{
	WRITE_ONCE(kgr_target_universe, 1 - READ_ONCE(kgr_target_universe));
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
