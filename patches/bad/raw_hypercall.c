/* The init executes the hypercall instruction itself (HC_SWITCH with made-up tasks).  Linux: a module has no such back door; the lab faults it as a privileged instruction: an oops in insmod. */
#include "kernel.h"
#include "kgraft.h"
static int __init bad_init(void)
{
	hypercall2(HC_SWITCH, 1, 99);
	return 0;
}
module_init(bad_init);
