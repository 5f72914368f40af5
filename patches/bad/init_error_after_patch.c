/* The init patches, then returns -EINVAL.  Linux: the failed module is freed while its function is patched in; the next call of capable() jumps into freed memory. */
#include "bad.h"

BAD_PATCH("bad_init_error_after_patch");

static int __init bad_init(void)
{
	int ret = kgr_patch_kernel(&patch);

	return ret ? ret : -EINVAL;
}
module_init(bad_init);
