/* The init patches, then points the replacement at NULL in its kgr_patch.  Linux (kGraft): the core copied what it needed at registration; the change is ignored, or seen at revert time. */
#include "bad.h"

BAD_PATCH("bad_patch_then_modify");

static int __init bad_init(void)
{
	int ret = kgr_patch_kernel(&patch);

	patch.patches[0].new_fun = OPAQUE((const void *)0);
	patch.name = OPAQUE((const char *)0);
	return ret;
}
module_init(bad_init);
