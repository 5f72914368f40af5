/* The init puts a 64 KiB array on a 16 KiB kernel stack.  Linux: the store jumps over the one guard page into whatever lies below (silent corruption of another stack, or an oops); only -Wframe-larger-than warns at build time. */
#include "bad.h"

BAD_PATCH("bad_init_huge_frame");

static int __init bad_init(void)
{
	volatile char buf[65536];

	buf[0] = 1;
	buf[OPAQUE(100)] = buf[0];
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
