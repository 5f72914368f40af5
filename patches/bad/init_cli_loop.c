/* The init disables interrupts and spins forever (cli; jmp .).  Linux: the NMI watchdog reports a hard LOCKUP and, with hardlockup_panic, panics; nothing else runs on that CPU. */
#include "bad.h"

BAD_PATCH("bad_init_cli_loop");

static int __init bad_init(void)
{
	asm volatile("cli; 1: jmp 1b" ::: "memory");
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
