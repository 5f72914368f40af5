/* The init divides by zero.  Linux: a divide error (#DE) oopses insmod; the module is never live. */
#include "bad.h"

BAD_PATCH("bad_init_divide_error");
static volatile int zero;
int bad_quotient;

static int __init bad_init(void)
{
	bad_quotient = 100 / zero;
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
