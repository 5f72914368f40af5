/* The init finds another module's kgr_new_capable() through kallsyms (apply kgr_capable.o first) and writes ud2 over it.  Linux: module text is read-only: a page fault oops in insmod. */
#include "bad.h"

BAD_PATCH("bad_writes_other_module");

static int __init bad_init(void)
{
	volatile unsigned char *other = (volatile unsigned char *)kallsyms_lookup_name("kgr_new_capable");

	other[0] = 0x0f;
	other[1] = 0x0b;
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
