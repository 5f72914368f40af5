/* The init spins forever with interrupts on.  Linux: insmod never returns; without preemption the soft lockup watchdog reports "BUG: soft lockup - CPU#0 stuck". */
#include "bad.h"

BAD_PATCH("bad_init_busy_loop");

static int __init bad_init(void)
{
	for (;;)
		cpu_relax();
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
