/* The init patches and returns with interrupts disabled.  Linux: do_one_initcall() warns "initcall returned with disabled interrupts" and re-enables them. */
#include "bad.h"

BAD_PATCH("bad_init_returns_irqs_off");

static int __init bad_init(void)
{
	int ret = kgr_patch_kernel(&patch);

	local_irq_save();
	return ret;
}
module_init(bad_init);
