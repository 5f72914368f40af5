/* The init patches, then spins forever with interrupts on.  Linux: insmod never returns and never reaches a safe point, so the transition waits for it for ever. */
#include "bad.h"

BAD_PATCH("bad_init_loops_after_patch");

static int __init bad_init(void)
{
	int ret = kgr_patch_kernel(&patch);

	while (!ret)
		cpu_relax();
	return ret;
}
module_init(bad_init);
