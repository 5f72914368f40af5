/* The init hands kgr_patch_kernel() a pointer past the end of RAM (256 MiB).  Linux: an unmapped kernel address: a page fault oops in insmod. */
#include "bad.h"

static int __init bad_init(void)
{
	return kgr_patch_kernel(OPAQUE((struct kgr_patch *)0x10000000UL));
}
module_init(bad_init);
