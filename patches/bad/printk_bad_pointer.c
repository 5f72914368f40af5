/* The init prints a string at address 0x10.  Linux: vsnprintf() prints "(efault)" for pointers below a page; the lab's printk faults: an oops in insmod. */
#include "bad.h"

BAD_PATCH("bad_printk_bad_pointer");

static int __init bad_init(void)
{
	printk(KERN_INFO "bad_printk_bad_pointer: %s\n", OPAQUE((const char *)0x10));
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
