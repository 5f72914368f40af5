/* module.c - running live patch modules' init and exit functions.
 *
 * The lab relocates a module into the module area itself (it is the
 * "insmod" of this machine); the init function then runs here, in kmodloader,
 * a kernel thread, as Linux runs it in the context of the insmod process.
 * Modules listed for boot run from start_kernel() before any task exists, so
 * a patch applied at boot is in place before the first task runs.
 */
#include "kernel.h"

typedef int (*initcall_t)(void);

/* Written by the lab: the next module init to run, then kmodloader is woken. */
volatile unsigned long modload_request;
/* Written by the lab before boot: init functions of the patches to apply at boot. */
unsigned long boot_module_inits[8];
int nr_boot_modules;

static int do_one_initcall(initcall_t fn)
{
	int ret;

	hypercall2(HC_MODULE_START, (unsigned long)fn, current->tid);
	ret = fn();
	hypercall2(HC_MODULE_DONE, (unsigned long)fn, ret);
	return ret;
}

/* One load: the init runs in a task of its own that exits afterwards, as
 * it runs in the insmod process in Linux.  An init that oopses kills this
 * task and nothing else; the next load gets a new one. */
static int insmod_fn(void *arg)
{
	return do_one_initcall((initcall_t)arg);
}

/* The daemon that starts loads (kthreadd's role for module loading): it
 * starts an insmod task for every request and does not wait for the init,
 * so an init that never returns holds up nothing but its own task.  It
 * sleeps on task_exit_wq too, so it passes its safe point when an insmod
 * exits: a transition an init started does not wait for the next load.
 * Annotated for kGraft like any non-freezable kthread (SUSE's note). */
static int kmodloader_fn(void *arg)
{
	for (;;) {
		unsigned long fn;

		wait_event_interruptible(task_exit_wq, ({
			kgr_task_safe();
			READ_ONCE(modload_request) != 0; }));
		fn = READ_ONCE(modload_request);
		if (!fn)
			continue;	/* an exit or a wake-up: the safe point was passed */
		modload_request = 0;
		if (!kthread_create(insmod_fn, (void *)fn, "insmod", 0))
			hypercall2(HC_MODULE_DONE, fn, -EAGAIN);	/* fork() failed */
		kthread_iteration_done();
	}
	return 0;
}

void start_kmodloader(void)
{
	kthread_create(kmodloader_fn, NULL, "kmodloader", 0);
}

void do_boot_modules(void)
{
	int i;

	for (i = 0; i < nr_boot_modules && i < (int)ARRAY_SIZE(boot_module_inits); i++)
		do_one_initcall((initcall_t)boot_module_inits[i]);
}
