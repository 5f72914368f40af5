/* Replaces panic(), which must not return, with one that returns.  Linux: the caller runs on past its __noreturn call into whatever code follows: undefined behaviour, usually a second oops. */
#include "bad.h"

static void bad_panic(const char *msg)
{
	printk(KERN_ERR "bad_panic_returns: ignoring panic: %s\n", msg);
}

static struct kgr_patch patch = {
	.name = "bad_panic_returns",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(panic, bad_panic, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
