/* The new capable() disables interrupts and spins forever.  Linux: the first caller hangs the CPU; the NMI watchdog reports a hard LOCKUP and panics (hardlockup_panic). */
#include "bad.h"

static bool bad_new_capable(int cap)
{
	asm volatile("cli; 1: jmp 1b" ::: "memory");
	return cap;
}

static struct kgr_patch patch = {
	.name = "bad_replacement_cli_loop",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, bad_new_capable, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
