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

/* Written by the lab: the next module function to call, then kmodloader is woken. */
volatile unsigned long modload_request;
/* Written by the lab before boot: init functions of the patches to apply at boot. */
unsigned long boot_module_inits[8];
int nr_boot_modules;

static DECLARE_WAIT_QUEUE_HEAD(modload_wq);

static int do_one_initcall(initcall_t fn)
{
	int ret = fn();

	hypercall2(HC_MODULE_DONE, (unsigned long)fn, ret);
	return ret;
}

/* Annotated for kGraft like any non-freezable kthread (SUSE's note). */
static int kmodloader_fn(void *arg)
{
	for (;;) {
		unsigned long fn;

		if (wait_event_interruptible(modload_wq, ({
				kgr_task_safe();
				READ_ONCE(modload_request) != 0; })))
			continue;
		fn = modload_request;
		modload_request = 0;
		do_one_initcall((initcall_t)fn);
		current->nr_iterations++;
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
