/* The init calls kgr_patch_kernel(NULL).  Linux (kGraft): kgr_patch_kernel() dereferences it: a NULL pointer oops in insmod. */
#include "bad.h"

static int __init bad_init(void)
{
	return kgr_patch_kernel(OPAQUE((struct kgr_patch *)0));
}
module_init(bad_init);
