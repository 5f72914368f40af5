/* module.c - running live patch modules' init and exit functions.
 *
 * The lab relocates a module into the module area itself (it is the
 * "insmod" of this machine); the init function then runs here, in kmodloader,
 * a kernel thread, as Linux runs it in the context of the insmod process.
 * Modules listed for boot run from start_kernel() before any task exists, so
 * a patch applied at boot is in place before the first task runs.
 */
#include "kernel.h"
#include "module.h"

struct module *lab_modules[MAX_MODULES];

struct module *find_module(const char *name)
{
	int i;

	for (i = 0; i < MAX_MODULES; i++)
		if (lab_modules[i] && !strcmp(lab_modules[i]->name, name))
			return lab_modules[i];
	return NULL;
}

static struct module *module_of_init(unsigned long fn)
{
	int i;

	for (i = 0; i < MAX_MODULES; i++)
		if (lab_modules[i] && (unsigned long)lab_modules[i]->init == fn)
			return lab_modules[i];
	return NULL;
}

typedef int (*initcall_t)(void);

/* Written by the lab: the next module init to run, then kmodloader is woken. */
volatile unsigned long modload_request;

/* Written by the lab: one more request for kmodloader (rmmod, or a write
 * to or read of a file, as `echo VALUE > PATH` and `cat PATH` from a
 * shell), answered with HC_REQUEST_DONE from the task that did it. */
#define LAB_REQ_RMMOD 1
#define LAB_REQ_WRITE 2
#define LAB_REQ_READ  3
#define LAB_REQ_STAT  4
#define LAB_REQ_SPAWN 5		/* start the user program named in path, as a shell's `prog &` */

/* The user programs a shell could start (their entry points). */
void user_getpid_main(void);
void user_insmod_main(void);
void user_rmmod_main(void);
static const struct { const char *name; void (*entry)(void); } spawnable[] = {
	{ "test_klp-call_getpid", user_getpid_main },
	{ "insmod-sample", user_insmod_main },		/* init_module() of livepatch_sample */
	{ "rmmod-sample", user_rmmod_main },		/* delete_module("livepatch_sample") */
};
struct lab_request {
	int kind;
	unsigned long arg;		/* rmmod: the module's exit function, or 0 */
	struct module *mod;		/* rmmod: its struct module, or NULL (a kGraft module) */
	char path[96];
	char buf[128];			/* the value written, or what was read */
};
volatile int lab_request_pending;
struct lab_request lab_request;
extern volatile unsigned long klp_complete_request;
void klp_transition_work_fn(void);
/* Written by the lab before boot: init functions of the patches to apply at boot. */
unsigned long boot_module_inits[8];
int nr_boot_modules;

/* The end of load_module() and do_init_module(): live patches that patch
 * this module are applied to it first (klp_module_coming(), which may
 * refuse the module), then its init runs; a module whose init fails goes
 * again, its patches reverted. */
static int do_one_initcall(initcall_t fn)
{
	struct module *mod = module_of_init((unsigned long)fn);
	int ret = 0;

	hypercall2(HC_MODULE_START, (unsigned long)fn, current->tid);
	if (mod)
		ret = klp_module_coming(mod);
	if (!ret) {
		ret = fn();
		if (mod && ret) {
			mod->state = MODULE_STATE_GOING;
			klp_module_going(mod);
		} else if (mod) {
			mod->state = MODULE_STATE_LIVE;
		}
	}
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

static int request_fn(void *arg)
{
	struct lab_request *req = arg;
	long ret = 0;

	switch (req->kind) {
	case LAB_REQ_RMMOD:
		/* delete_module(): going first, then the exit, then the
		 * notifiers (klp_module_going()) */
		if (req->mod)
			req->mod->state = MODULE_STATE_GOING;
		if (req->arg)
			((void (*)(void))req->arg)();
		if (req->mod)
			klp_module_going(req->mod);
		break;
	case LAB_REQ_WRITE:
		ret = kernel_file_write(req->path, req->buf, strlen(req->buf));
		break;
	case LAB_REQ_READ:
		memset(req->buf, 0, sizeof(req->buf));
		ret = kernel_file_read(req->path, req->buf, sizeof(req->buf) - 1);
		break;
	case LAB_REQ_STAT:
		ret = klp_sysfs_mode(req->path);
		break;
	case LAB_REQ_SPAWN: {
		unsigned int i;
		struct task_struct *p = NULL;

		ret = -ENOENT;
		for (i = 0; i < ARRAY_SIZE(spawnable); i++)
			if (!strcmp(req->path, spawnable[i].name)) {
				p = user_task_create(spawnable[i].entry, spawnable[i].name);
				ret = p ? p->tid : -EAGAIN;
			}
		break;
	}
	}
	hypercall2(HC_REQUEST_DONE, req->kind, ret);
	return 0;
}

static const char *const request_comm[] = {
	[LAB_REQ_RMMOD] = "rmmod", [LAB_REQ_WRITE] = "echo", [LAB_REQ_READ] = "cat", [LAB_REQ_STAT] = "stat",
	[LAB_REQ_SPAWN] = "sh",
};

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
			READ_ONCE(modload_request) != 0 || READ_ONCE(lab_request_pending) ||
			READ_ONCE(klp_complete_request) != 0; }));
		if (READ_ONCE(klp_complete_request)) {
			/* upstream's klp_transition_work, on the system workqueue */
			klp_transition_work_fn();
			kthread_iteration_done();
			continue;
		}
		if (READ_ONCE(lab_request_pending)) {
			int kind = lab_request.kind;

			lab_request_pending = 0;
			if (kind < 1 || kind > LAB_REQ_SPAWN ||
			    !kthread_create(request_fn, &lab_request, request_comm[kind], 0))
				hypercall2(HC_REQUEST_DONE, kind, -EAGAIN);
			kthread_iteration_done();
			continue;
		}
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

/* ---- sysfs: /sys/module/<name>/{refcnt,parameters/<param>} ---- */

struct module_sysfs_file {
	struct module *mod;
	const struct kernel_param *kp;	/* NULL: refcnt */
};

static long param_get(const struct kernel_param *kp)
{
	switch (kp->size) {
	case 1:
		return kp->is_signed ? *(signed char *)kp->arg : *(unsigned char *)kp->arg;
	case 4:
		return kp->is_signed ? *(int *)kp->arg : (long)*(unsigned int *)kp->arg;
	default:
		return *(long *)kp->arg;
	}
}

static int module_sysfs_show(struct seq_file *m, void *data)
{
	struct module_sysfs_file *f = data;

	if (!f->kp)
		return seq_printf(m, "%d\n", f->mod->refcnt);
	return seq_printf(m, "%ld\n", param_get(f->kp));
}

static ssize_t module_sysfs_store(void *data, const char *buf)
{
	struct module_sysfs_file *f = data;
	const char *end;
	bool neg = *buf == '-';
	long v;

	if (!f->kp)
		return -EACCES;
	v = (long)simple_strtoul(buf + neg, &end);
	if (end == buf + neg || *end)
		return -EINVAL;
	v = neg ? -v : v;
	switch (f->kp->size) {
	case 1:
		*(char *)f->kp->arg = (char)v;
		break;
	case 4:
		*(int *)f->kp->arg = (int)v;
		break;
	default:
		*(long *)f->kp->arg = v;
	}
	return 0;
}

struct file *module_sysfs_open(const char *path, int flags)
{
	static const char dir[] = "/sys/module/";
	struct module_sysfs_file *f;
	const struct kernel_param *kp = NULL;
	struct module *mod = NULL;
	const char *rest;
	size_t n = 0;
	unsigned int i;

	if (strncmp(path, dir, sizeof(dir) - 1))
		return NULL;
	rest = path + sizeof(dir) - 1;
	for (i = 0; i < MAX_MODULES; i++) {
		if (!lab_modules[i])
			continue;
		n = strlen(lab_modules[i]->name);
		if (!strncmp(rest, lab_modules[i]->name, n) && rest[n] == '/') {
			mod = lab_modules[i];
			break;
		}
	}
	if (!mod)
		return NULL;
	rest += n + 1;
	if (strcmp(rest, "refcnt")) {
		if (strncmp(rest, "parameters/", 11))
			return NULL;
		for (i = 0; i < mod->num_kp; i++)
			if (!strcmp(rest + 11, mod->kp[i].name))
				kp = &mod->kp[i];
		if (!kp)
			return NULL;
	} else if ((flags & O_ACCMODE) != O_RDONLY) {
		return ERR_PTR(-EACCES);
	}
	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return ERR_PTR(-ENOMEM);
	f->mod = mod;
	f->kp = kp;
	return seq_file_open(module_sysfs_show, module_sysfs_store, f, true);
}

/* ---- init_module() and delete_module() for user programs ---- */

#define MAX_MODULE_IMAGE 0x10000
/* Written by the lab at the end of the slice the load request ended: the
 * loaded module's init function, or -errno. */
volatile long load_module_result;

/* The image is copied into the kernel and handed to the loader (the lab);
 * the init then runs here, in the caller's task, as Linux's do_init_module()
 * runs it in the insmod process. */
long sys_init_module(const void *umod, unsigned long len, const char *uargs)
{
	char args[128];
	void *image;
	long ret;
	size_t i;

	if (!capable(CAP_SYS_MODULE))
		return -EPERM;
	if (!len || len > MAX_MODULE_IMAGE)
		return -EINVAL;
	for (i = 0; i < sizeof(args) - 1; i++) {
		if (!uargs || copy_from_user(&args[i], uargs + i, 1))
			break;
		if (!args[i])
			break;
	}
	args[i] = 0;
	image = kmalloc(len, GFP_KERNEL);
	if (!image)
		return -ENOMEM;
	if (copy_from_user(image, umod, len)) {
		kfree(image);
		return -EFAULT;
	}
	load_module_result = 0;
	hypercall3(HC_LOAD_MODULE, (long)image, len, (long)args);	/* the slice ends here */
	ret = READ_ONCE(load_module_result);
	kfree(image);
	if (ret < 0)
		return ret;
	return do_one_initcall((initcall_t)ret);
}

long sys_delete_module(const char *uname, unsigned int flags)
{
	char name[MODULE_NAME_LEN];
	struct module *mod;
	size_t i;

	if (!capable(CAP_SYS_MODULE))
		return -EPERM;
	for (i = 0; i < sizeof(name) - 1; i++) {
		if (copy_from_user(&name[i], uname + i, 1))
			return -EFAULT;
		if (!name[i])
			break;
	}
	name[i] = 0;
	mod = find_module(name);
	if (!mod)
		return -ENOENT;
	if (mod->refcnt)
		return -EWOULDBLOCK;	/* rmmod: "Module is in use" */
	if (mod->state != MODULE_STATE_LIVE)
		return -EBUSY;
	mod->state = MODULE_STATE_GOING;
	if (mod->exit)
		mod->exit();
	klp_module_going(mod);
	hypercall1(HC_MODULE_GONE, mod);
	return 0;
}
