/* The init calls kallsyms_lookup_name() with a pointer past the end of RAM.  Linux: a page fault oops in kallsyms_lookup_name(), insmod killed. */
#include "bad.h"

BAD_PATCH("bad_kallsyms_outside_ram");

static int __init bad_init(void)
{
	if (kallsyms_lookup_name(OPAQUE((const char *)0x10000000UL)))
		return -EINVAL;
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
