/* The init disables interrupts and halts (cli; hlt).  Linux: the CPU never wakes again; the NMI watchdog reports a hard LOCKUP and, with hardlockup_panic, panics. */
#include "bad.h"

BAD_PATCH("bad_init_halts_irqs_off");

static int __init bad_init(void)
{
	asm volatile("cli; 1: hlt; jmp 1b" ::: "memory");
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
