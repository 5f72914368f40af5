/* The init looks up a 4096-byte name with no NUL.  Linux: kallsyms compares up to KSYM_NAME_LEN and finds nothing (0); the init carries on. */
#include "bad.h"

BAD_PATCH("bad_kallsyms_unterminated");
static char bad_long[4096] = { [0 ... 4095] = 'k' };

static int __init bad_init(void)
{
	if (kallsyms_lookup_name(bad_long))
		return -EINVAL;
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
