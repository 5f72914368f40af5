/* kernel.h - the tiny kernel's types, task structure and common helpers. */
#ifndef _LAB_KERNEL_H
#define _LAB_KERNEL_H

#include "uapi.h"
#include "hypercall.h"

typedef unsigned long size_t;
typedef long ssize_t;
typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long u64;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

#define notrace __attribute__((no_instrument_function))
#define __noinline __attribute__((noinline))
#define __used __attribute__((used))
#define __init
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define offsetof(t, m) __builtin_offsetof(t, m)
#define barrier() asm volatile("" ::: "memory")
#define READ_ONCE(x) (*(volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile __typeof__(x) *)&(x) = (v))
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Memory layout (kernel.ld places the image; these are the regions around it). */
#define USER_STACKS_TOP   0x00600000UL  /* user stacks grow down from here */
/* A task's user stack is the slot of its tid below USER_STACKS_TOP; all
 * NR_TASKS of them must stay above the user programs (kernel.ld checks). */
#define USER_STACK_SIZE   0x4000UL
#define MODULES_VADDR     0x00600000UL  /* the module area the lab loads modules into */
#define MODULES_END       0x007F0000UL  /* trampolines live above, to the end of RAM */
#define KSTACK_SIZE       0x4000UL
/* Below every kernel stack, a guard page the lab makes inaccessible, as
 * Linux's vmap stacks have one: an overflow faults instead of silently
 * overwriting the next task's stack. */
#define KSTACK_GUARD      0x1000UL
#define KSTACK_SLOT       (KSTACK_GUARD + KSTACK_SIZE)

#define USER_CS 0x33   /* RPL 3: the entry code tests the low bits, as Linux does */
#define USER_DS 0x2b
#define KERNEL_CS 0x10
#define KERNEL_DS 0x18
#define X86_EFLAGS_IF 0x200UL

/* printk levels, as Linux spells them. */
#define KERN_SOH "\001"
#define KERN_ERR   KERN_SOH "3"
#define KERN_WARNING KERN_SOH "4"
#define KERN_INFO  KERN_SOH "6"
#define KERN_DEBUG KERN_SOH "7"

/* ---- registers as the entry code saves them (Linux's struct pt_regs order) ---- */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx;
	unsigned long r11, r10, r9, r8, ax, cx, dx, si, di;
	unsigned long orig_ax;
	/* the interrupt frame */
	unsigned long ip, cs, flags, sp, ss;
};

static inline bool user_mode(struct pt_regs *regs) { return (regs->cs & 3) == 3; }

/* ---- wait queues ---- */
struct task_struct;
struct wait_queue_entry {
	struct task_struct *task;
	struct wait_queue_entry *next;
	bool queued;
};
struct wait_queue_head {
	struct wait_queue_entry *head;
};
#define DECLARE_WAIT_QUEUE_HEAD(name) struct wait_queue_head name = { NULL }

/* ---- files ---- */
struct file;
struct file_operations {
	ssize_t (*read)(struct file *f, char *buf, size_t len);
	ssize_t (*write)(struct file *f, const char *buf, size_t len);
	void (*release)(struct file *f);
};
struct file {
	const struct file_operations *f_op;
	void *private_data;
	unsigned long pos;
	int refs;
	bool in_use;
};
#define NR_OPEN 8

/* ---- credentials ---- */
struct cred {
	unsigned int uid;
	unsigned long cap_effective;
};
struct user_namespace { int level; };
extern struct user_namespace init_user_ns;

/* ---- tasks ---- */
enum task_state {
	TASK_UNUSED = 0,
	TASK_RUNNING = 1,
	TASK_INTERRUPTIBLE = 2,
	TASK_DEAD = 3,
};

#define PF_KTHREAD    0x1
#define PF_FREEZABLE  0x2
#define PF_IDLE       0x4
#define PF_WQ_WORKER  0x8   /* runs kthread_worker_fn */
#define PF_OOPSED     0x10

#define TIF_SIGPENDING    0x1
#define TIF_NEED_RESCHED  0x2

struct k_sigaction {
	unsigned long handler;
	unsigned long flags;
	unsigned long restorer;
};

struct thread_struct {
	unsigned long sp;   /* saved kernel stack pointer while switched out */
};

#define TASK_COMM_LEN 16
/* Task slots, the idle task's included: the size of tasks[], task_stacks[]
 * and the user stack area (Linux allocates a task_struct and its stacks at
 * fork; here they are static). */
#define NR_TASKS 72

struct task_struct {
	int tid;
	int state;                  /* enum task_state */
	unsigned int flags;         /* PF_* */
	unsigned int thread_flags;  /* TIF_* */
	/* kGraft: the universe the task lives in, 0 (old) or 1 (new).  A task is
	 * "in progress" while it differs from kgr_target_universe; it moves at its
	 * own safe point.  kGraft kept a TIF_KGR_IN_PROGRESS bit; an absolute
	 * universe, as upstream's task->patch_state, lets a transition be reversed
	 * without a trampoline ever changing meaning under a running task. */
	u8 kgr_universe;
	u8 make_it_fail;            /* fault injection, as Linux's task->make_it_fail */
	u8 in_syscall;
	/* kGraft: why the task last moved (KGR_SAFE_*), written where it moved;
	 * and whether its last sleep was ended by the fake signal */
	u8 kgr_migrated_by;
	u8 kgr_fake_wakeup;
	u8 preempted;               /* switched out by preemption: runnable whatever its state */
	u8 pad0[2];
	int exit_code;
	unsigned long sig_pending;  /* bitmask of real, queued signals */
	struct k_sigaction sighand[NSIG];
	unsigned long stack_top;    /* top of the kernel stack */
	struct thread_struct thread;
	unsigned long wakeup_at;    /* jiffies when schedule_timeout() expires; 0: none */
	struct cred *cred;
	struct file *files[NR_OPEN];
	/* progress counters, read by the lab */
	unsigned long nr_syscalls;
	unsigned long nr_switches;
	unsigned long nr_iterations;
	unsigned long nr_signals;
	char comm[TASK_COMM_LEN];
};

/* A workload, chosen by workload=NAME, and the numeric parameters it reads
 * from the command line (NAME=VALUE).  The lab lists both from the image
 * and refuses an out-of-range value before booting; setup() refuses it too. */
struct workload_param {
	const char *name;
	long min, max, def;
	const char *description;
};

struct workload {
	const char *name;
	const char *description;
	void (*setup)(void);
	const struct workload_param *params;
	int nr_params;
};

long workload_param(const struct workload_param *p);

extern struct task_struct tasks[NR_TASKS];
extern int nr_tasks;	/* slots ever used: tasks[nr_tasks..] are TASK_UNUSED */
#define SYSTEM_BOOTING 0
#define SYSTEM_RUNNING 1
extern int system_state;
void check_fault_injection(void);
void kthread_iteration_done(void);
extern struct wait_queue_head task_exit_wq;
extern struct task_struct *current_task;
#define current current_task
extern volatile unsigned long jiffies;
extern int irq_depth;
extern int preempt_count;
extern u8 kgr_irq_universe;
/* Written by the lab only (it owns the transition): read-only to the CPU,
 * so a module cannot flip it behind the core's back. */
extern const volatile u8 kgr_target_universe;
#define KLP_MODE_UPSTREAM 1
extern int klp_mode;
#define KSYM_NAME_LEN 128
static inline bool kgr_task_in_progress(struct task_struct *p)
{
	return READ_ONCE(p->kgr_universe) != READ_ONCE(kgr_target_universe);
}
extern int need_resched;

/* ---- interrupts ---- */
static inline __attribute__((always_inline)) unsigned long local_irq_save(void)
{
	unsigned long flags;
	asm volatile("pushfq; popq %0; cli" : "=r"(flags) :: "memory");
	return flags;
}
static inline __attribute__((always_inline)) void local_irq_restore(unsigned long flags)
{
	if (flags & X86_EFLAGS_IF)
		asm volatile("sti" ::: "memory");
}
static inline __attribute__((always_inline)) void local_irq_enable(void)
{
	asm volatile("sti" ::: "memory");
}
static inline __attribute__((always_inline)) void cpu_relax(void)
{
	asm volatile("pause" ::: "memory");
}

/* ---- lib ---- */
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strscpy(char *d, const char *s, size_t n);
const char *strstr_word(const char *hay, const char *key);
int vsnprintf(char *buf, size_t size, const char *fmt, __builtin_va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...);
unsigned long simple_strtoul(const char *s, const char **end);

/* ---- printk ---- */
int printk(const char *fmt, ...);
/* A file defines pr_fmt before its first #include to prefix its lines
 * (livepatch.c: "livepatch: "; a module: KBUILD_MODNAME ": "), as in Linux. */
#ifndef pr_fmt
#define pr_fmt(fmt) fmt
#endif
#define KERN_NOTICE KERN_SOH "5"
#define pr_err(fmt, ...)    printk(KERN_ERR pr_fmt(fmt), ##__VA_ARGS__)
#define pr_warn(fmt, ...)   printk(KERN_WARNING pr_fmt(fmt), ##__VA_ARGS__)
#define pr_notice(fmt, ...) printk(KERN_NOTICE pr_fmt(fmt), ##__VA_ARGS__)
#define pr_info(fmt, ...)   printk(KERN_INFO pr_fmt(fmt), ##__VA_ARGS__)
/* dynamic debug is on for kernel/livepatch in the selftests (set_dynamic_debug) */
#define pr_debug(fmt, ...)  printk(KERN_DEBUG pr_fmt(fmt), ##__VA_ARGS__)
#define BUG_ON(c) do { if (unlikely(c)) panic("BUG at " __FILE__ ":" _STR(__LINE__)); } while (0)
#define _STR(x) _STR2(x)
#define _STR2(x) #x
void panic(const char *msg) __attribute__((noreturn));

/* ---- sched ---- */
void schedule(void);
void preempt_schedule_irq(void);
long schedule_timeout(unsigned long ticks);
/* A tick every quantum of the lab (20,000 instructions by default): a
 * second of the kernel's time is HZ ticks. */
#define HZ 100
void msleep(unsigned int msecs);
int wake_up_process(struct task_struct *p);
void wake_up(struct wait_queue_head *wq);
void prepare_to_wait(struct wait_queue_head *wq, struct wait_queue_entry *w, int state);
void finish_wait(struct wait_queue_head *wq, struct wait_queue_entry *w);
void set_current_state(int state);
struct task_struct *kthread_create(int (*fn)(void *), void *arg, const char *name, unsigned int flags);
struct task_struct *user_task_create(void (*entry)(void), const char *name);
void do_exit(int code) __attribute__((noreturn));
bool kthread_should_stop(void);
void cpu_idle(void) __attribute__((noreturn));
struct task_struct *find_task(int tid);

static inline bool signal_pending(struct task_struct *p)
{
	return READ_ONCE(p->thread_flags) & TIF_SIGPENDING;
}

/* Sleep until cond is true; a pending signal (real or kGraft's fake one) ends
 * the wait with -ERESTARTSYS, so the system call is restarted or fails with
 * -EINTR as do_signal() decides. */
#define wait_event_interruptible(wq, cond)				\
({									\
	long __ret = 0;							\
	struct wait_queue_entry __wait = { current, NULL, false };	\
	for (;;) {							\
		prepare_to_wait(&(wq), &__wait, TASK_INTERRUPTIBLE);	\
		if (cond)						\
			break;						\
		if (signal_pending(current)) {				\
			__ret = -ERESTARTSYS;				\
			break;						\
		}							\
		schedule();						\
	}								\
	finish_wait(&(wq), &__wait);					\
	__ret;								\
})

/* ---- signals and entry ---- */
void syscall_exit_to_user_mode(struct pt_regs *regs);
void irqentry_exit_to_user_mode(struct pt_regs *regs);
int send_signal(struct task_struct *p, int sig);
void signal_wake_up(struct task_struct *p);
long sys_rt_sigreturn(struct pt_regs *regs);

/* ---- files ---- */
int fd_install(struct task_struct *p, struct file *f);
struct file *fget(int fd);
struct file *alloc_file(const struct file_operations *fops, void *priv);
void fput(struct file *f);
struct file *proc_open(const char *path, int flags);
struct seq_file;
int seq_printf(struct seq_file *m, const char *fmt, ...);
/* A file whose reads show(m, data) produces and whose writes go to
 * store(data, text) (one line, the newline dropped), as sysfs attributes;
 * data is kfree()d on the last close when owned. */
struct file *seq_file_open(int (*show)(struct seq_file *m, void *data),
			   ssize_t (*store)(void *data, const char *buf), void *data, bool owned);
struct file *klp_sysfs_open(const char *path, int flags);
long klp_sysfs_mode(const char *path);
struct file *ftrace_enabled_open(void);
ssize_t kernel_file_write(const char *path, const char *buf, size_t len);
ssize_t kernel_file_read(const char *path, char *buf, size_t len);

#define MAX_ERRNO 4095
static inline void *ERR_PTR(long error) { return (void *)error; }
static inline long PTR_ERR(const void *ptr) { return (long)ptr; }
static inline bool IS_ERR(const void *ptr) { return (unsigned long)ptr >= (unsigned long)-MAX_ERRNO; }
static inline bool IS_ERR_OR_NULL(const void *ptr) { return !ptr || IS_ERR(ptr); }

/* the console log level (printk.c); the state selftests patch it */
extern int console_loglevel;
#define CONSOLE_LOGLEVEL_DEFAULT 7
#define CONSOLE_LOGLEVEL_MOTORMOUTH 15
int do_pipe(int fds[2]);
extern const struct file_operations console_fops;

/* ---- misc subsystems ---- */
bool capable(int cap);
bool ns_capable(struct user_namespace *ns, int cap);
extern char saved_command_line[256];
extern char utsname_nodename[65];
unsigned long kallsyms_lookup_name(const char *name);
bool try_to_freeze(void);
void kgr_task_safe(void);
void kgr_irq_safe(void);
void kgr_user_safe(int kind);
void timer_interrupt(struct pt_regs *regs);
void check_fault_injection(void);
const char *cmdline_get(const char *key);

/* copy to/from user: no MMU, so these are plain copies with a range check */
bool access_ok(const void *p, size_t len);
long copy_to_user(void *to, const void *from, size_t n);
long copy_from_user(void *to, const void *from, size_t n);

#endif
