/* The init sleeps on a wait queue nobody wakes.  Linux: insmod sleeps until a signal; the hung task detector warns after 120 s if it sleeps uninterruptibly. */
#include "bad.h"

BAD_PATCH("bad_init_sleeps_forever");
static DECLARE_WAIT_QUEUE_HEAD(bad_wq);
static int bad_never;

static int __init bad_init(void)
{
	for (;;)
		wait_event_interruptible(bad_wq, READ_ONCE(bad_never));
	return kgr_patch_kernel(&patch);
}
module_init(bad_init);
