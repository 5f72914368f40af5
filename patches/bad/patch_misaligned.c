/* The init hands kgr_patch_kernel() a pointer one byte into its kgr_patch.  Linux: x86 reads the misaligned fields without complaint, so the core sees shifted garbage pointers and oopses on them. */
#include "bad.h"

BAD_PATCH("bad_patch_misaligned");

static int __init bad_init(void)
{
	return kgr_patch_kernel(OPAQUE((struct kgr_patch *)((char *)&patch + 1)));
}
module_init(bad_init);
