/* ulib.h - what the lab's user programs have instead of a libc: system call
 * wrappers that use the SYSCALL instruction, and a few string helpers. */
#ifndef _LAB_ULIB_H
#define _LAB_ULIB_H
#include "uapi.h"

typedef unsigned long size_t;

static inline long syscall3(long nr, long a, long b, long c)
{
	long ret;
	asm volatile("syscall"
		     : "=a"(ret)
		     : "a"(nr), "D"(a), "S"(b), "d"(c)
		     : "rcx", "r11", "memory");
	return ret;
}
#define syscall0(nr) syscall3(nr, 0, 0, 0)
#define syscall1(nr, a) syscall3(nr, (long)(a), 0, 0)
#define syscall2(nr, a, b) syscall3(nr, (long)(a), (long)(b), 0)

static inline long read(int fd, void *buf, size_t n) { return syscall3(__NR_read, fd, (long)buf, n); }
static inline long write(int fd, const void *buf, size_t n) { return syscall3(__NR_write, fd, (long)buf, n); }
static inline long open(const char *path, int flags) { return syscall2(__NR_open, path, flags); }
static inline long close(int fd) { return syscall1(__NR_close, fd); }
static inline long getpid(void) { return syscall0(__NR_getpid); }
static inline long pipe(int *fds) { return syscall1(__NR_pipe, fds); }
static inline long sethostname(const char *name, size_t len) { return syscall2(__NR_sethostname, name, len); }
static inline long gethostname(char *name, size_t len) { return syscall2(__NR_gethostname, name, len); }
static inline long sleep_ticks(unsigned long t) { return syscall1(__NR_nanosleep, t); }
static inline long init_module(const void *image, unsigned long len, const char *args)
{
	return syscall3(__NR_init_module, (long)image, len, (long)args);
}
static inline long delete_module(const char *name, unsigned int flags)
{
	return syscall2(__NR_delete_module, name, flags);
}
static inline __attribute__((noreturn)) void exit(int code)
{
	syscall1(__NR_exit, code);
	for (;;)
		;
}

void __restore_rt(void);
static inline long sigaction(int sig, void (*handler)(int), unsigned long flags)
{
	struct sigaction_u act = { (unsigned long)handler, flags, (unsigned long)__restore_rt };
	return syscall3(__NR_rt_sigaction, sig, (long)&act, 0);
}

size_t ustrlen(const char *s);
int ustreq(const char *a, const char *b);
char *ustpcpy(char *d, const char *s);
char *ultoa(char *d, long v);
void uputs(const char *s);
unsigned long user_work(unsigned long seed, int rounds);

#endif
