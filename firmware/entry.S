/* entry.S - boot, system call and interrupt entry, the way back to the
 * interrupted context, and the context switch.
 *
 * Everything runs at CPL 0 (Unicorn cannot come back up from CPL 3 through a
 * hooked `syscall`); user and kernel mode are told apart by the CS value the
 * entry code saves in pt_regs, exactly where Linux looks (`testb $3, CS(%rsp)`).
 * Offsets into struct task_struct come from asm-offsets.c as absolute symbols.
 */
#include "hypercall.h"

#define USER_CS 0x33
#define USER_DS 0x2b
#define ENOSYS 38

/* pt_regs, from the top of the frame down: ss sp flags cs ip orig_ax di si dx
 * cx ax r8 r9 r10 r11 bx bp r12 r13 r14 r15 (struct pt_regs in kernel.h) */
.macro PUSH_REGS rax=%rax
	pushq	%rdi
	pushq	%rsi
	pushq	%rdx
	pushq	%rcx
	pushq	\rax
	pushq	%r8
	pushq	%r9
	pushq	%r10
	pushq	%r11
	pushq	%rbx
	pushq	%rbp
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
.endm

.macro POP_REGS
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbp
	popq	%rbx
	popq	%r11
	popq	%r10
	popq	%r9
	popq	%r8
	popq	%rax
	popq	%rcx
	popq	%rdx
	popq	%rsi
	popq	%rdi
.endm

	.section .text.entry, "ax"

/* The lab loads the image and starts here with interrupts off. */
	.globl _start
	.type	_start, @function
_start:
	leaq	task_stacks(%rip), %rsp		/* the idle task's stack: slot 0 */
	addq	$KSTACK_SLOT_BYTES, %rsp	/* (asm-offsets), above its guard page */
	xorl	%ebp, %ebp
	call	start_kernel
1:	hlt
	jmp	1b
	.size	_start, . - _start

/* System call entry.  The lab emulates the SYSCALL instruction the way the CPU
 * does it (rcx = return address, r11 = rflags, IF cleared) and jumps here; the
 * user stack is still live, so switch to the task's kernel stack first. */
	.globl entry_SYSCALL_64
	.type	entry_SYSCALL_64, @function
	.cfi_sections .debug_frame
entry_SYSCALL_64:
	/* for debuggers: the kernel stack begins here, there is no caller */
	.cfi_startproc
	.cfi_undefined rip
	movq	%rsp, cpu_user_rsp(%rip)
	movq	current_task(%rip), %rsp
	movq	TASK_stack_top(%rsp), %rsp
	pushq	$USER_DS
	pushq	cpu_user_rsp(%rip)
	pushq	%r11
	pushq	$USER_CS
	pushq	%rcx
	pushq	%rax			/* orig_ax: the system call number */
	PUSH_REGS rax=$-ENOSYS
	xorl	%ebp, %ebp		/* the user's rbp is no frame: the kernel's chain ends here */
	movq	%rsp, %rdi
	call	do_syscall_64
	jmp	restore_regs_and_return
	.cfi_endproc
	.size	entry_SYSCALL_64, . - entry_SYSCALL_64

/* Interrupt entry.  The lab delivers the timer interrupt between two slices
 * as the CPU would: it picks the stack (the task's kernel stack when user mode
 * was interrupted), pushes ss, sp, flags, cs, ip, clears IF and jumps here. */
	.globl common_interrupt
	.type	common_interrupt, @function
common_interrupt:
	pushq	$-1			/* orig_ax: not a system call */
	PUSH_REGS
	movq	%rsp, %rdi
	call	do_IRQ
	.globl irq_return_site		/* the unwinder finds pt_regs above this return address */
irq_return_site:
	jmp	restore_regs_and_return
	.size	common_interrupt, . - common_interrupt

/* The stop-machine "IPI": the lab delivers it like an interrupt when a
 * stop-the-world consistency model stops the machine; the handler spins,
 * interrupts off, for the instructions the stop and its stack checks cost,
 * so that cost is paid in emulated time while every task stands still. */
	.globl stop_machine_entry
	.type	stop_machine_entry, @function
stop_machine_entry:
	pushq	$-1
	PUSH_REGS
	movq	%rsp, %rdi
	call	do_stop_cpu
	.globl stop_return_site
stop_return_site:
	jmp	restore_regs_and_return
	.size	stop_machine_entry, . - stop_machine_entry

/* The reschedule IPI (Linux's scheduler_ipi()): the lab sends it to force a
 * preemption at an exact instruction (lab run --preempt-at, the explorer). */
	.globl reschedule_entry
	.type	reschedule_entry, @function
reschedule_entry:
	pushq	$-1
	PUSH_REGS
	movq	%rsp, %rdi
	call	do_reschedule_ipi
	.globl reschedule_return_site
reschedule_return_site:
	jmp	restore_regs_and_return
	.size	reschedule_entry, . - reschedule_entry

/* The one way back to an interrupted context, user or kernel.  It stands in
 * for IRETQ, which Unicorn would only execute with a GDT behind it: copy ip
 * and flags (and a scratch register) just below the target stack pointer,
 * switch to it, then popfq; ret.  Nothing else may sit below the target sp:
 * the firmware and its user programs are built with -mno-red-zone. */
	.globl restore_regs_and_return
	.type	restore_regs_and_return, @function
restore_regs_and_return:
	POP_REGS
	addq	$8, %rsp		/* orig_ax; now ip cs flags sp ss */
	pushq	%rcx
	pushq	%rbx
	pushq	%rax			/* rax rbx rcx ip cs flags sp ss */
	movq	24(%rsp), %rax		/* ip */
	movq	40(%rsp), %rbx		/* flags */
	movq	48(%rsp), %rcx		/* target sp */
	movq	%rax, -8(%rcx)
	movq	%rbx, -16(%rcx)
	movq	16(%rsp), %rax		/* the interrupted rcx */
	movq	%rax, -24(%rcx)
	movq	(%rsp), %rax
	movq	8(%rsp), %rbx
	leaq	-24(%rcx), %rsp
	popq	%rcx
	popfq
	.globl return_to_interrupted
return_to_interrupted:
	ret
	.size	restore_regs_and_return, . - restore_regs_and_return

/* void __switch_to_asm(struct task_struct *prev, struct task_struct *next)
 * Called with interrupts off.  Saves the callee-saved registers and flags on
 * prev's stack and resumes next where it last called this. */
	.globl __switch_to_asm
	.type	__switch_to_asm, @function
__switch_to_asm:
	pushfq
	pushq	%rbp
	pushq	%rbx
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	movq	%rsp, TASK_thread_sp(%rdi)
	movq	TASK_thread_sp(%rsi), %rsp
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbx
	popq	%rbp
	popfq
	ret
	.size	__switch_to_asm, . - __switch_to_asm

/* A new task's first switch returns here (kthread_create and user_task_create
 * build the frame): rbx = thread function (0 for a user task), r12 = argument. */
	.globl ret_from_fork
	.type	ret_from_fork, @function
ret_from_fork:
	.cfi_startproc
	.cfi_undefined rip
	call	schedule_tail
	testq	%rbx, %rbx
	jz	1f
	movq	%r12, %rdi
	call	*%rbx
	movl	%eax, %edi
	call	do_exit
1:	movq	%rsp, %rdi		/* user task: pt_regs sits on top */
	call	irqentry_exit_to_user_mode
	jmp	restore_regs_and_return
	.cfi_endproc
	.size	ret_from_fork, . - ret_from_fork

/* After an oops the lab points the dead task here on a fresh stack. */
	.globl rewind_stack_and_make_dead
	.type	rewind_stack_and_make_dead, @function
rewind_stack_and_make_dead:
	movq	current_task(%rip), %rsp
	movq	TASK_stack_top(%rsp), %rsp
	subq	$256, %rsp
	xorl	%ebp, %ebp
	call	make_task_dead
2:	hlt
	jmp	2b
	.size	rewind_stack_and_make_dead, . - rewind_stack_and_make_dead

/* What the code on a pad calls first when the function has users besides
 * its live patch (kprobes, the function tracer): ftrace_ops_list_func(
 * function, its caller), with the argument registers kept.  The caller
 * code pushed the function's address; above it are the return address
 * into the function (after its pad) and the one into its caller. */
	.globl ftrace_ops_caller
	.type	ftrace_ops_caller, @function
ftrace_ops_caller:
	pushq	%rdi
	pushq	%rsi
	pushq	%rdx
	pushq	%rcx
	pushq	%rax
	pushq	%r8
	pushq	%r9
	pushq	%r10
	movq	72(%rsp), %rdi		/* the function */
	movq	88(%rsp), %rsi		/* where it was called from */
	call	ftrace_ops_list_func
	popq	%r10
	popq	%r9
	popq	%r8
	popq	%rax
	popq	%rcx
	popq	%rdx
	popq	%rsi
	popq	%rdi
	ret
	.size	ftrace_ops_caller, . - ftrace_ops_caller

	.section .bss
	.balign 16
	.globl cpu_user_rsp
cpu_user_rsp:
	.quad 0
