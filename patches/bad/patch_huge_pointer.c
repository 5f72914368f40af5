/* The init hands kgr_patch_kernel() a non-canonical pointer (0xdead000000000000).  Linux: a general protection fault oops in insmod. */
#include "bad.h"

static int __init bad_init(void)
{
	return kgr_patch_kernel(OPAQUE((struct kgr_patch *)0xdead000000000000UL));
}
module_init(bad_init);
