/* The init calls kallsyms_lookup_name(NULL).  Linux: a NULL pointer oops in kallsyms_lookup_name(), insmod killed. */
#include "bad.h"

BAD_PATCH("bad_kallsyms_null");

static int __init bad_init(void)
{
	if (kallsyms_lookup_name(OPAQUE((const char *)0)))
		return -EINVAL;
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
