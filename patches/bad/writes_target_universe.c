/* The init flips kgr_target_universe, the kGraft core's own variable, with no transition running.  Linux: nothing stops a module writing kernel data and kGraft's accounting is corrupted; the lab keeps the variable read-only for the CPU, so the write oopses insmod. */
#include "bad.h"

BAD_PATCH("bad_writes_target_universe");

static int __init bad_init(void)
{
	volatile u8 *target = (volatile u8 *)&kgr_target_universe;

	*target = 1 - *target;
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
