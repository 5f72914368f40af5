/* kgr_pipe_wait.c - a patch of the function the eternal sleeper sleeps in.
 *
 * pipe-reader sleeps inside pipe_wait_readable() forever, so this patch
 * cannot complete until the fake signal sends it through the kernel exit
 * (its safe point) and its read() restarts, now in the new universe.  Under a
 * stop-the-machine model the patch never applies: the sleeper is always inside
 * the function.  The new version keeps the wait and counts the sleepers. */
#include "kernel.h"
#include "kgraft.h"

/* struct pipe_inode_info as fs.c defines it: a patch must match the layout of
 * the kernel it patches, which is why patch authors copy such definitions. */
#define PIPE_BUF_SIZE 256
struct pipe_inode_info {
	struct wait_queue_head rd_wait;
	char buf[PIPE_BUF_SIZE];
	size_t head, len;
	int readers, writers;
	bool in_use;
};

static unsigned long kgr_pipe_sleepers;

static long kgr_pipe_wait_readable(struct pipe_inode_info *pipe)
{
	if (kgr_pipe_sleepers++ == 0)
		printk(KERN_INFO "kgr_pipe_wait: %s[%d] waits in the patched pipe_wait_readable()\n",
		       current->comm, current->tid);
	return wait_event_interruptible(pipe->rd_wait, READ_ONCE(pipe->len) > 0 ||
					!READ_ONCE(pipe->writers));
}

static struct kgr_patch patch = {
	.name = "kgr_pipe_wait",
	.owner = THIS_MODULE,
	.patches = {
		KGR_PATCH(pipe_wait_readable, kgr_pipe_wait_readable, true),
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
