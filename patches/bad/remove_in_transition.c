/* The init patches and at once removes the patch, while its transition runs.  Linux (kGraft): kgr_patch_remove() during a transition is refused (-EBUSY); the patch stays. */
#include "bad.h"

BAD_PATCH("bad_remove_in_transition");

static int __init bad_init(void)
{
	int ret = kgr_patch_kernel(&patch);

	if (!ret)
		kgr_patch_remove(&patch);
	return ret;
}
module_init(bad_init);
