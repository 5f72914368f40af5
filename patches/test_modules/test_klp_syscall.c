/* test_klp_syscall.c - the upstream selftests' syscall patch, for the lab's
 * kernel: getpid() replaced by a version that counts the given processes
 * down as each of them calls it in the new universe; the count is published
 * in /sys/kernel/test_klp_syscall/npids. */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "livepatch.h"
#include "sysfs.h"

static unsigned int npids, npids_pending;
static int klp_pids[NR_TASKS];
module_param_array(klp_pids, int, &npids_pending, 0);
MODULE_PARM_DESC(klp_pids, "Array of pids to be transitioned to livepatched state.");

static ssize_t npids_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	return sprintf(buf, "%u\n", npids_pending);
}

static struct kobj_attribute klp_attr = __ATTR_RO(npids);
static struct kobject *klp_kobj;

/* the system call as the table calls it (the kernel's __x64_sys_getpid) */
static long lp_sys_getpid(struct pt_regs *regs)
{
	unsigned long flags = local_irq_save();	/* the mutex of the original */
	unsigned int i;

	if (npids_pending > 0) {
		for (i = 0; i < npids; i++) {
			if (current->tid == klp_pids[i]) {
				klp_pids[i] = 0;
				npids_pending--;
				break;
			}
		}
	}
	local_irq_restore(flags);
	return current->tid;
}

static struct klp_func vmlinux_funcs[] = {
	{ .old_name = "__x64_sys_getpid", .new_func = lp_sys_getpid },
	{ }
};

static struct klp_object objs[] = {
	{ .name = NULL, .funcs = vmlinux_funcs },	/* vmlinux */
	{ }
};

static struct klp_patch patch = {
	.mod = THIS_MODULE,
	.objs = objs,
};

static int livepatch_init(void)
{
	int ret;

	klp_kobj = kobject_create_and_add("test_klp_syscall", kernel_kobj);
	if (!klp_kobj)
		return -ENOMEM;
	ret = sysfs_create_file(klp_kobj, &klp_attr.attr);
	if (ret) {
		kobject_put(klp_kobj);
		return ret;
	}
	/* the count before any process is counted down */
	npids = npids_pending;
	return klp_enable_patch(&patch);
}

static void livepatch_exit(void)
{
	kobject_put(klp_kobj);
}

module_init(livepatch_init);
module_exit(livepatch_exit);
MODULE_LICENSE("GPL");
MODULE_INFO(livepatch, "Y");
