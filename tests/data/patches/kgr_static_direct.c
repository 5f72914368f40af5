/* A patch that calls the static checksum_range() directly, as if it were
 * exported: the loader must refuse it and point at kallsyms_lookup_name(). */
#include "kernel.h"
#include "kgraft.h"

extern unsigned long stats_flushed;
int checksum_range(unsigned long seed, int n);

static void kgr_process_annotated_work(void)
{
	stats_flushed += checksum_range(jiffies, 16) & 3;
}

static struct kgr_patch patch = {
	.name = "kgr_static_direct",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(process_annotated_work, kgr_process_annotated_work, true),
		KGR_PATCH_END
	}
};

static int __init kgr_patcher_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(kgr_patcher_init);
