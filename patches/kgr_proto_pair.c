/* kgr_proto_pair.c - two functions whose prototype changes together.
 *
 * uts_copy_nodename() takes (len, dst) instead of (dst, len) from now on, and
 * its only caller, do_gethostname(), is replaced to match.  The new caller
 * calls the kernel's symbol, so the call goes through the pad and the
 * consistency model picks the callee: an old do_gethostname() reaching the
 * new uts_copy_nodename() (or the reverse) swaps the arguments and the user
 * sees -EFAULT.  Under kGraft's model a task never mixes the two. */
#include "kernel.h"
#include "kgraft.h"

extern unsigned long uts_generation;
long uts_copy_nodename(size_t len, char *dst);	/* the new prototype */

static long kgr_uts_copy_nodename(size_t len, char *dst)
{
	size_t n = strlen(utsname_nodename) + 1;

	if (n > len)
		return -EINVAL;
	return copy_to_user(dst, utsname_nodename, n) ? -EFAULT : 0;
}

static long kgr_do_gethostname(char *name, size_t len)
{
	unsigned long h = 0, i;

	for (i = 0; i < 1024; i++)
		h = h * 31 + READ_ONCE(utsname_nodename[i & 15]);
	WRITE_ONCE(uts_generation, h);
	return uts_copy_nodename(len, name);
}

static struct kgr_patch patch = {
	.name = "kgr_proto_pair",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(do_gethostname, kgr_do_gethostname, true),
		KGR_PATCH(uts_copy_nodename, kgr_uts_copy_nodename, true),
		KGR_PATCH_END
	}
};

static int __init kgr_patcher_init(void)
{
	return kgr_patch_kernel(&patch);
}

static void __exit kgr_patcher_cleanup(void)
{
	kgr_patch_remove(&patch);
}

module_init(kgr_patcher_init);
module_exit(kgr_patcher_cleanup);
