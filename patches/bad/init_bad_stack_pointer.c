/* The init points its stack pointer at unmapped memory and spins with interrupts on.  Linux: the next interrupt cannot push its frame: a page fault that cannot be delivered either, a double fault, and a panic. */
#include "bad.h"

BAD_PATCH("bad_init_bad_stack_pointer");

static int __init bad_init(void)
{
	asm volatile("movq $0x61, %%rsp; sti; 1: jmp 1b" ::: "memory");
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
