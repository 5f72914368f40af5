/* kgraft.c - the kGraft safe points inside the kernel, and the entry points a
 * patch module calls (kgr_patch_kernel(), kallsyms_lookup_name()).
 *
 * The universe flag lives in the task struct; when a transition starts the lab
 * puts every task in the old universe and sets the target; each task moves
 * itself here, at a safe point, then tells the lab which safe point it was so
 * the move can be reported.
 * The safe-point kinds are exported to the lab as KGR_SAFE_* symbols.
 */
#include "kernel.h"
#include "kgraft.h"

/* The consistency model, chosen at boot (written by the lab before the
 * kernel runs): 0 kGraft's, every annotated safe point moves its task;
 * KLP_MODE_UPSTREAM upstream's (kernel/livepatch/transition.c): only the
 * exit to user mode and the idle loop move a task by itself, sleeping
 * tasks are switched by klp_try_switch_task()'s stack check, and the
 * interrupt context has no universe of its own. */
int klp_mode;

static notrace void kgr_mark_task_safe(int kind)
{
	current->kgr_universe = kgr_target_universe;
	current->kgr_migrated_by = kind;
	hypercall2(HC_KGR_SAFE, current->tid, kind);
}

/* The annotation for kernel threads that never freeze (kGraft's note on
 * kernel threads): put it where the thread holds no kernel state, typically
 * inside its wait_event_interruptible() condition. */
notrace void kgr_task_safe(void)
{
	/* upstream honours no annotation; its idle loop moves the idle task
	 * (klp_update_patch_state() in do_idle()) */
	if (klp_mode == KLP_MODE_UPSTREAM && !(current->flags & PF_IDLE))
		return;
	if (unlikely(kgr_task_in_progress(current)))
		kgr_mark_task_safe(KGR_SAFE_TASK);
}

/* kind: KGR_SAFE_SYSCALL_EXIT or KGR_SAFE_IRQ_USER, by the way the task
 * is leaving the kernel; the fake signal's, when it was what ended the
 * task's sleep on the way here. */
notrace void kgr_user_safe(int kind)
{
	if (current->kgr_fake_wakeup)
		kind = KGR_SAFE_FAKE_SIGNAL;
	kgr_mark_task_safe(kind);
}

notrace void kgr_worker_safe(void)
{
	if (klp_mode == KLP_MODE_UPSTREAM)
		return;
	if (unlikely(kgr_task_in_progress(current)))
		kgr_mark_task_safe(KGR_SAFE_WORKER);
}

notrace void kgr_freezer_safe(void)
{
	if (klp_mode == KLP_MODE_UPSTREAM)
		return;
	if (unlikely(kgr_task_in_progress(current)))
		kgr_mark_task_safe(KGR_SAFE_FREEZER);
}

u8 kgr_irq_migrated_by;

notrace void kgr_irq_safe(void)
{
	if (klp_mode == KLP_MODE_UPSTREAM)
		return;
	kgr_irq_universe = kgr_target_universe;
	kgr_irq_migrated_by = KGR_SAFE_IRQ;
	hypercall2(HC_KGR_SAFE, -1, KGR_SAFE_IRQ);
}

/* Hands the patch description to the lab's kGraft core, which resolves the
 * functions, writes the trampolines and pads and starts the transition. */
int kgr_patch_kernel(struct kgr_patch *patch)
{
	return (int)hypercall1(HC_KGR_PATCH, patch);
}

void kgr_patch_remove(struct kgr_patch *patch)
{
	hypercall1(HC_KGR_UNPATCH, patch);
}

/* Every symbol of the kernel, static ones too, as /proc/kallsyms has them.
 * The table is the image's own symbol table, which the lab holds. */
unsigned long kallsyms_lookup_name(const char *name)
{
	/* the name is read here, in the kernel, as Linux's kallsyms does: a bad
	 * pointer faults in the caller's context instead of reaching the lab */
	if (strlen(name) >= KSYM_NAME_LEN)
		return 0;
	return (unsigned long)hypercall1(HC_KALLSYMS_LOOKUP, name);
}

/* Written by the lab: 1 while a transition is in progress (any model). */
volatile int kgr_in_progress;

/* /sys/kernel/kgraft/in_progress (kGraft's): whether a patch is still being
 * applied or removed. */
static int kgr_in_progress_show(struct seq_file *m, void *data)
{
	return seq_printf(m, "%d\n", READ_ONCE(kgr_in_progress));
}

/* /proc/<pid>/patch_state (upstream's): -1 with no transition, else the
 * universe the task is in (0 unpatched, 1 patched, whatever the target). */
static int patch_state_show(struct seq_file *m, void *data)
{
	struct task_struct *p = data;

	if (!READ_ONCE(kgr_in_progress))
		return seq_printf(m, "%d\n", -1);
	return seq_printf(m, "%d\n", p->kgr_universe);
}

struct file *kgraft_proc_open(const char *path, int flags)
{
	static const char proc[] = "/proc/";
	const char *end;
	unsigned long pid;
	struct task_struct *p;

	if (!strcmp(path, "/sys/kernel/kgraft/in_progress")) {
		if ((flags & O_ACCMODE) != O_RDONLY)
			return ERR_PTR(-EACCES);
		return seq_file_open(kgr_in_progress_show, NULL, NULL, false);
	}
	if (strncmp(path, proc, sizeof(proc) - 1))
		return NULL;
	pid = simple_strtoul(path + sizeof(proc) - 1, &end);
	if (end == path + sizeof(proc) - 1 || strcmp(end, "/patch_state"))
		return NULL;
	p = find_task((int)pid);
	if (!p || p->state == TASK_UNUSED || p->state == TASK_DEAD)
		return NULL;
	if ((flags & O_ACCMODE) != O_RDONLY)
		return ERR_PTR(-EACCES);
	return seq_file_open(patch_state_show, NULL, p, false);
}
