/* The init patches, then returns 1.  Linux: do_init_module() warns "init suspiciously returned 1, it should follow 0/-E convention" and treats it as success. */
#include "bad.h"

BAD_PATCH("bad_init_positive_return");

static int __init bad_init(void)
{
	int ret = kgr_patch_kernel(&patch);

	return ret ? ret : 1;
}
module_init(bad_init);
