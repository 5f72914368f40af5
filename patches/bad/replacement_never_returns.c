/* The new capable() spins forever with interrupts on.  Linux: every caller is stuck in the kernel; without preemption the soft lockup watchdog reports it. */
#include "bad.h"

static bool bad_new_capable(int cap)
{
	for (;;)
		cpu_relax();
	return cap;
}

static struct kgr_patch patch = {
	.name = "bad_replacement_never_returns",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(capable, bad_new_capable, true),
		KGR_PATCH_END
	}
};

static int __init bad_init(void)
{
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
