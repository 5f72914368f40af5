/* The init calls kgr_patch_kernel() twice with the same patch.  Linux (kGraft): the second call finds a transition in progress and fails with -EBUSY; the init returns that error while the first patch is live. */
#include "bad.h"

BAD_PATCH("bad_init_patch_twice_same");

static int __init bad_init(void)
{
	int ret = kgr_patch_kernel(&patch);

	if (ret)
		return ret;
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
