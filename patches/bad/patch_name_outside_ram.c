/* The patch's name points past the end of RAM.  Linux: a page fault oops in the core when it reads the name. */
#include "bad.h"

static struct kgr_patch patch = {
	.name = (const char *)0x10000000UL,
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, bad_good_capable, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
