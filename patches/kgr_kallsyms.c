/* kgr_kallsyms.c - calling an unexported function from a patch, the trick
 * from the kGraft article: checksum_range() is static in kthread.c, so the
 * module cannot link against it; its init finds the address through
 * kallsyms_lookup_name() and the new function calls it through a pointer. */
#include "kernel.h"
#include "kgraft.h"

extern unsigned long stats_flushed;
static int (*kgr_checksum_range)(unsigned long seed, int n);

static void kgr_process_annotated_work(void)
{
	static int said;

	stats_flushed += kgr_checksum_range(jiffies, 16) & 3;
	if (!said++)
		printk(KERN_INFO "kgr_kallsyms: called the static checksum_range() at %p\n",
		       kgr_checksum_range);
}

static struct kgr_patch patch = {
	.name = "kgr_kallsyms",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(process_annotated_work, kgr_process_annotated_work, true),
		KGR_PATCH_END
	}
};

static int __init kgr_patcher_init(void)
{
	kgr_checksum_range = (void *)kallsyms_lookup_name("checksum_range");
	if (!kgr_checksum_range) {
		pr_err("kgr: function %s not resolved\n", "checksum_range");
		return -ENOENT;
	}
	return kgr_patch_kernel(&patch);
}

static void __exit kgr_patcher_cleanup(void)
{
	kgr_patch_remove(&patch);
}

module_init(kgr_patcher_init);
module_exit(kgr_patcher_cleanup);
