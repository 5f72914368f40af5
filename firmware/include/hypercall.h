/* hypercall.h - the one port through which the firmware talks to the lab.
 *
 * `outl %eax, $HYPERCALL_PORT` with the hypercall number in eax and up to three
 * arguments in rdi, rsi, rdx; the lab answers in rax.  The numbers are exported
 * to the lab as absolute symbols (see asm-offsets.c), so this file is their only
 * definition.
 */
#ifndef _LAB_HYPERCALL_H
#define _LAB_HYPERCALL_H

#define HYPERCALL_PORT 0xe9

#define HC_CONSOLE          1   /* (buf, len, level): one printk line */
#define HC_SWITCH           2   /* (prev tid, next tid): context switch */
#define HC_BOOTED           3   /* (): start_kernel is done, tasks exist */
#define HC_TASK_EXIT        4   /* (tid, code) */
#define HC_PANIC            5   /* (message): BUG(), the lab oopses the task */
#define HC_KGR_SAFE         6   /* (tid or -1 for irq, safe point): migrated */
#define HC_KALLSYMS_LOOKUP  7   /* (name) -> address or 0 */
#define HC_KGR_PATCH        8   /* (struct kgr_patch *) -> 0 or -errno */
#define HC_KGR_UNPATCH      9   /* (struct kgr_patch *) -> 0 or -errno */
#define HC_MODULE_DONE     10   /* (init function, its return value) */
#define HC_TASK_NEW        11   /* (tid): a task slot was (re)used */
#define HC_MODULE_START    12   /* (init function, tid): its init starts in that task */
#define HC_KLP_INIT        13   /* (struct klp_patch *) -> 0 or -errno: read, resolve, register */
#define HC_KLP_START       14   /* (patch, target state): start the transition -> 0 or -errno */
#define HC_KLP_REVERSE     15   /* (patch): reverse the transition in progress */
#define HC_KLP_FORCE       16   /* (patch): move every remaining task now */
#define HC_KLP_DONE        17   /* (patch, state): the transition completed, callbacks ran */
#define HC_KLP_FREE        18   /* (patch): the patch left klp_patches */
#define HC_REQUEST_DONE    19   /* (request kind, result): a lab request finished (file, rmmod) */
#define HC_KLP_OBJECT      20   /* (patch, object, 1: patch it / 0: unpatch it): a module came or goes */
#define HC_FTRACE_OPS      21   /* (function, FTRACE_OPS_* flags, 1 on / 0 off / 2 would it be refused?) */
#define HC_LOAD_MODULE     22   /* (image, length, arguments): load it; the result is in load_module_result */
#define HC_MODULE_GONE     23   /* (struct module *): delete_module() ran its exit; free it */

#ifndef __ASSEMBLER__
static inline __attribute__((always_inline)) long
hypercall3(long nr, long a, long b, long c)
{
	long ret;
	asm volatile("outl %%eax, %1"
		     : "=a"(ret)
		     : "i"(HYPERCALL_PORT), "a"(nr), "D"(a), "S"(b), "d"(c)
		     : "memory");
	return ret;
}
#define hypercall0(nr)        hypercall3(nr, 0, 0, 0)
#define hypercall1(nr, a)     hypercall3(nr, (long)(a), 0, 0)
#define hypercall2(nr, a, b)  hypercall3(nr, (long)(a), (long)(b), 0)
#endif

#endif
