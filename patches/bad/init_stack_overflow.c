/* The init recurses without end.  Linux: the stack runs into the guard page below it, a double fault, "stack guard page was hit", and (the #DF runs in NMI context) a panic.  The lab oopses the task instead, naming it: its oops path starts on a fresh stack. */
#include "bad.h"

#pragma GCC diagnostic ignored "-Winfinite-recursion"

BAD_PATCH("bad_init_stack_overflow");

static __noinline unsigned long bad_recurse(unsigned long n)
{
	volatile unsigned long frame[8];

	frame[n & 7] = n;
	return bad_recurse(n + 1) + frame[(n + 3) & 7];
}

static int __init bad_init(void)
{
	if (bad_recurse(OPAQUE(0UL)) == 42)
		return -EINVAL;
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
