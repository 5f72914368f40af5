/* The patch's name is 512 bytes with no NUL.  Linux: the core reads past the array to whatever NUL follows: a garbage sysfs name, or an oops at the end of the mapping. */
#include "bad.h"

static char bad_name[512] = { [0 ... 511] = 'n' };

static struct kgr_patch patch = {
	.name = bad_name,
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, bad_good_capable, true),
		KGR_PATCH_END
	}
};

static char bad_after[64] = { [0 ... 63] = 'm' };

static int __init bad_init(void)
{
	bad_after[0] = bad_name[0];
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
