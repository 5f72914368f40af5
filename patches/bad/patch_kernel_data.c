/* The init hands kgr_patch_kernel() a pointer into kernel data (jiffies), not a kgr_patch of its own.  Linux: the core reads the kernel's variables as a patch: garbage pointers, an oops. */
#include "bad.h"

static int __init bad_init(void)
{
	return kgr_patch_kernel(OPAQUE((struct kgr_patch *)&jiffies));
}
module_init(bad_init);
