/* The init overwrites the first byte of the kernel's capable().  Linux: kernel text is read-only (STRICT_KERNEL_RWX), so the write oopses and nothing is patched. */
#include "bad.h"

BAD_PATCH("bad_init_write_text");

static int __init bad_init(void)
{
	volatile unsigned char *text = OPAQUE((volatile unsigned char *)&capable);

	text[0] = 0xcc;
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
