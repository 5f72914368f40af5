/* The init calls printk(NULL).  Linux: a NULL pointer oops in vprintk(), insmod killed. */
#include "bad.h"

BAD_PATCH("bad_printk_null_format");

static int __init bad_init(void)
{
	printk(OPAQUE((const char *)0));
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
