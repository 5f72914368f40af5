/* kgraft.h - what a live patch module includes: the patch description and
 * kgr_patch_kernel(), in the shape of kGraft's <linux/kgraft.h>. */
#ifndef _LAB_KGRAFT_H
#define _LAB_KGRAFT_H

#define KGR_SAFE_SYSCALL_EXIT 1
#define KGR_SAFE_FREEZER      2
#define KGR_SAFE_TASK         3   /* kgr_task_safe() */
#define KGR_SAFE_WORKER       4   /* the kthread_worker loop */
#define KGR_SAFE_IRQ          5   /* interrupt exit (the interrupt context's own flag) */
#define KGR_SAFE_IRQ_USER     6   /* a return from an interrupt to user mode */
#define KGR_SAFE_FAKE_SIGNAL  7   /* the exit path, after the fake signal ended the task's sleep */
#define KGR_SAFE_FORCE        8   /* moved by force (the lab's kgr_force / klp force) */
#define KGR_SAFE_STACK_CHECK  9   /* switched by the klp model's stack check */
#define KGR_SAFE_BOOT        10   /* created after a patch applied at boot: born in its universe */
#define KGR_SAFE_FORK        11   /* created during a transition: born in the target universe */

struct kgr_patch_fun {
	const char *name;        /* the function to replace, by symbol name */
	const void *new_fun;     /* its replacement in this module */
	int abort_if_missing;    /* refuse the whole patch if name is not found */
};

#define KGR_PATCH_MAX_FUNS 16

struct kgr_patch {
	const char *name;
	void *owner;
	int replace_all;         /* a cumulative patch replacing every older one */
	struct kgr_patch_fun patches[KGR_PATCH_MAX_FUNS];
};

#ifndef THIS_MODULE
#define THIS_MODULE ((void *)0)
#endif
#define KGR_PATCH(_name, _new_fun, _abort) \
	{ .name = #_name, .new_fun = _new_fun, .abort_if_missing = _abort }
#define KGR_PATCH_END { .name = (const char *)0 }

/* A module's entry points, as Linux spells them: the loader calls
 * init_module() inside the emulated kernel and cleanup_module() on removal. */
#define __exit
#define module_init(fn) int init_module(void) __attribute__((alias(#fn)));
#define module_exit(fn) void cleanup_module(void) __attribute__((alias(#fn)));

int kgr_patch_kernel(struct kgr_patch *patch);
void kgr_patch_remove(struct kgr_patch *patch);
unsigned long kallsyms_lookup_name(const char *name);

#endif
