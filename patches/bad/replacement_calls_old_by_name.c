/* The new capable() calls "the old one" at the address kallsyms gives for capable, which goes through the patched pad back into itself.  Linux: the same endless recursion into the guard page and a panic; the lab oopses the caller. */
#include "bad.h"

static bool (*bad_old_capable)(int cap);

static bool bad_new_capable(int cap)
{
	return bad_old_capable(cap);
}

static struct kgr_patch patch = {
	.name = "bad_replacement_calls_old_by_name",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, bad_new_capable, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	bad_old_capable = (void *)kallsyms_lookup_name("capable");
	if (!bad_old_capable)
		return -ENOENT;
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
