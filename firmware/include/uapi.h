/* uapi.h - the interface user programs and the kernel share: system call
 * numbers, signal numbers, errno values, open flags. */
#ifndef _LAB_UAPI_H
#define _LAB_UAPI_H

/* System call numbers (the lab's own table; names follow Linux). */
#define __NR_read          0
#define __NR_write         1
#define __NR_open          2
#define __NR_close         3
#define __NR_getpid        4
#define __NR_pipe          5
#define __NR_sched_yield   6
#define __NR_nanosleep     7
#define __NR_kill          8
#define __NR_rt_sigaction  9
#define __NR_rt_sigreturn 10
#define __NR_exit         11
#define __NR_sethostname  12
#define __NR_gethostname  13
#define __NR_setpriority  14
#define __NR_init_module  15
#define __NR_delete_module 16
#define NR_syscalls       17

/* Signals. */
#define SIGINT    2
#define SIGKILL   9
#define SIGUSR1  10
#define SIGUSR2  12
#define SIGTERM  15
#define NSIG     32

#define SA_RESTART 0x10000000UL
#define SIG_DFL    0UL
#define SIG_IGN    1UL

struct sigaction_u {
	unsigned long handler;
	unsigned long flags;
	unsigned long restorer;
};

/* errno values, as Linux numbers them. */
#define EPERM    1
#define ENOENT   2
#define ESRCH    3
#define EINTR    4
#define EIO      5
#define EBADF    9
#define EAGAIN  11
#define EWOULDBLOCK EAGAIN
#define ENOMEM  12
#define EACCES  13
#define EFAULT  14
#define EBUSY   16
#define EEXIST  17
#define ENODEV  19
#define EINVAL  22
#define EMFILE  24
#define ENOSYS  38
#define EADDRINUSE 98

/* Kernel-internal restart codes: never seen by user space. */
#define ERESTARTSYS     512
#define ERESTARTNOINTR  513
#define ERESTARTNOHAND  514

#define O_RDONLY 0
#define O_WRONLY 1
#define O_RDWR   2
#define O_ACCMODE 3

#define S_IFDIR 0040000
#define S_IFREG 0100000

#define CAP_SYS_NICE   23
#define CAP_SYS_ADMIN  21
#define CAP_SYS_MODULE 16

#endif
