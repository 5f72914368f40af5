/* The replacement of capable() is the kernel's own ns_capable(), not a function of the module.  Linux (kGraft): accepted; every capable(cap) call becomes ns_capable(cap, garbage). */
#include "bad.h"

static struct kgr_patch patch = {
	.name = "bad_new_fun_in_kernel",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, ns_capable, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
