/* Replaces do_gethostname() with a function of another prototype that writes through its first argument as if it were a buffer of 4096 bytes.  Linux: memory corruption in every caller; an oops sooner or later. */
#include "bad.h"

static long bad_do_gethostname(char *name, int len)
{
	(void)len;
	memset(name, 'x', 4096);
	return 0;
}

static struct kgr_patch patch = {
	.name = "bad_replacement_wrong_prototype",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(do_gethostname, bad_do_gethostname, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
