/* syscalls.c - the system call table and the calls themselves. */
#include "kernel.h"

char utsname_nodename[65] = "lab";

static long ksys_read(int fd, char *buf, size_t len)
{
	struct file *f = fget(fd);

	if (!f || !f->f_op->read)
		return -EBADF;
	if (!access_ok(buf, len))
		return -EFAULT;
	return f->f_op->read(f, buf, len);
}

static long ksys_write(int fd, const char *buf, size_t len)
{
	struct file *f = fget(fd);

	if (!f || !f->f_op->write)
		return -EBADF;
	if (!access_ok(buf, len))
		return -EFAULT;
	return f->f_op->write(f, buf, len);
}

static long do_sys_open(const char *upath, int flags)
{
	char path[96];
	struct file *f;
	size_t i;

	for (i = 0; i < sizeof(path) - 1; i++) {
		if (copy_from_user(&path[i], upath + i, 1))
			return -EFAULT;
		if (!path[i])
			break;
	}
	path[i] = 0;
	f = proc_open(path, flags);
	if (IS_ERR(f))
		return PTR_ERR(f);
	if (!f)
		return -ENOENT;
	return fd_install(current, f);
}

static long ksys_close(int fd)
{
	struct file *f = fget(fd);

	if (!f)
		return -EBADF;
	current->files[fd] = NULL;
	fput(f);
	return 0;
}

/* sethostname() may only be called with CAP_SYS_ADMIN: this is the call that
 * brings user space to capable(), the function the kGraft sample patches. */
static long sys_sethostname(const char *name, size_t len)
{
	char tmp[65];

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	if (len > 64)
		return -EINVAL;
	if (copy_from_user(tmp, name, len))
		return -EFAULT;
	tmp[len] = 0;
	memcpy(utsname_nodename, tmp, len + 1);
	return 0;
}

/* Copies the node name out to user space.  A live patch changes this
 * function's prototype together with its only caller, do_gethostname(): an
 * old caller reaching the new callee (or the reverse) passes the arguments in
 * the wrong order and the user sees -EFAULT. */
__noinline long uts_copy_nodename(char *dst, size_t len)
{
	size_t n = strlen(utsname_nodename) + 1;

	if (n > len)
		return -EINVAL;
	return copy_to_user(dst, utsname_nodename, n) ? -EFAULT : 0;
}

unsigned long uts_generation;

/* Reads the node name consistently: the loop stands for taking uts_sem and
 * checking the name's generation, work done before the copy. */
__noinline long do_gethostname(char *name, size_t len)
{
	unsigned long h = 0, i;

	for (i = 0; i < 1024; i++)
		h = h * 31 + READ_ONCE(utsname_nodename[i & 15]);
	WRITE_ONCE(uts_generation, h);
	return uts_copy_nodename(name, len);
}

static long sys_gethostname(char *name, size_t len)
{
	return do_gethostname(name, len);
}

static long sys_setpriority(int prio)
{
	if (prio < 0 && !capable(CAP_SYS_NICE))
		return -EPERM;
	return 0;
}

static long sys_pipe(int *ufds)
{
	int fds[2];
	long ret = do_pipe(fds);

	if (ret)
		return ret;
	return copy_to_user(ufds, fds, sizeof(fds)) ? -EFAULT : 0;
}

static long sys_nanosleep(unsigned long ticks)
{
	return schedule_timeout(ticks) ? -ERESTARTNOHAND : 0;
}

static long sys_sched_yield(void)
{
	schedule();
	return 0;
}

#define ARG(n) (regs->n)
long sys_init_module(const void *umod, unsigned long len, const char *uargs);
long sys_delete_module(const char *uname, unsigned int flags);
static long __x64_sys_init_module(struct pt_regs *regs)
{
	return sys_init_module((const void *)ARG(di), ARG(si), (const char *)ARG(dx));
}
static long __x64_sys_delete_module(struct pt_regs *regs)
{
	return sys_delete_module((const char *)ARG(di), ARG(si));
}
static long __x64_sys_read(struct pt_regs *regs) { return ksys_read(ARG(di), (char *)ARG(si), ARG(dx)); }
static long __x64_sys_write(struct pt_regs *regs) { return ksys_write(ARG(di), (const char *)ARG(si), ARG(dx)); }
static long __x64_sys_open(struct pt_regs *regs) { return do_sys_open((const char *)ARG(di), ARG(si)); }
static long __x64_sys_close(struct pt_regs *regs) { return ksys_close(ARG(di)); }
static long __x64_sys_getpid(struct pt_regs *regs) { return current->tid; }
static long __x64_sys_pipe(struct pt_regs *regs) { return sys_pipe((int *)ARG(di)); }
static long __x64_sys_sched_yield(struct pt_regs *regs) { return sys_sched_yield(); }
static long __x64_sys_nanosleep(struct pt_regs *regs) { return sys_nanosleep(ARG(di)); }
long sys_kill(int tid, int sig);
static long __x64_sys_kill(struct pt_regs *regs) { return sys_kill(ARG(di), ARG(si)); }
long sys_rt_sigaction(int sig, const struct sigaction_u *act, struct sigaction_u *old);
static long __x64_sys_rt_sigaction(struct pt_regs *regs)
{
	return sys_rt_sigaction(ARG(di), (const struct sigaction_u *)ARG(si), (struct sigaction_u *)ARG(dx));
}
static long __x64_sys_rt_sigreturn(struct pt_regs *regs) { return sys_rt_sigreturn(regs); }
static long __x64_sys_exit(struct pt_regs *regs) { do_exit(ARG(di)); }
static long __x64_sys_sethostname(struct pt_regs *regs) { return sys_sethostname((const char *)ARG(di), ARG(si)); }
static long __x64_sys_gethostname(struct pt_regs *regs) { return sys_gethostname((char *)ARG(di), ARG(si)); }
static long __x64_sys_setpriority(struct pt_regs *regs) { return sys_setpriority(ARG(di)); }

typedef long (*syscall_fn_t)(struct pt_regs *regs);
const syscall_fn_t sys_call_table[NR_syscalls] = {
	[__NR_read] = __x64_sys_read,
	[__NR_write] = __x64_sys_write,
	[__NR_open] = __x64_sys_open,
	[__NR_close] = __x64_sys_close,
	[__NR_getpid] = __x64_sys_getpid,
	[__NR_pipe] = __x64_sys_pipe,
	[__NR_sched_yield] = __x64_sys_sched_yield,
	[__NR_nanosleep] = __x64_sys_nanosleep,
	[__NR_kill] = __x64_sys_kill,
	[__NR_rt_sigaction] = __x64_sys_rt_sigaction,
	[__NR_rt_sigreturn] = __x64_sys_rt_sigreturn,
	[__NR_exit] = __x64_sys_exit,
	[__NR_sethostname] = __x64_sys_sethostname,
	[__NR_gethostname] = __x64_sys_gethostname,
	[__NR_setpriority] = __x64_sys_setpriority,
	[__NR_init_module] = __x64_sys_init_module,
	[__NR_delete_module] = __x64_sys_delete_module,
};
