/* livepatch_cmdline.c - upstream's livepatch sample, kGraft style: the show
 * function of /proc/cmdline prints "this has been live patched". */
#include "kernel.h"
#include "kgraft.h"

struct seq_file;
int seq_printf(struct seq_file *m, const char *fmt, ...);

static int livepatch_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s\n", "this has been live patched");
	return 0;
}

static struct kgr_patch patch = {
	.name = "livepatch_sample",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(cmdline_proc_show, livepatch_cmdline_proc_show, true),
		KGR_PATCH_END
	}
};

static int __init livepatch_init(void)
{
	return kgr_patch_kernel(&patch);
}

static void __exit livepatch_exit(void)
{
	kgr_patch_remove(&patch);
}

module_init(livepatch_init);
module_exit(livepatch_exit);
