/* kprobes.h - a probe on a function's entry, as Linux's <linux/kprobes.h>
 * has it; on this kernel every probe is an ftrace-based one (KPROBES_ON_FTRACE):
 * it sits on the function's fentry pad. */
#ifndef _LAB_KPROBES_H
#define _LAB_KPROBES_H

#include "kernel.h"

struct kprobe;
typedef int (*kprobe_pre_handler_t)(struct kprobe *p, struct pt_regs *regs);
typedef void (*kprobe_post_handler_t)(struct kprobe *p, struct pt_regs *regs, unsigned long flags);

struct kprobe {
	const char *symbol_name;
	unsigned long addr;		/* filled in from symbol_name */
	kprobe_pre_handler_t pre_handler;
	kprobe_post_handler_t post_handler;	/* needs IPMODIFY: exclusive with a live patch */
	unsigned long nhit;		/* how many times it fired */
	struct kprobe *next;
};

int register_kprobe(struct kprobe *p);
void unregister_kprobe(struct kprobe *p);

/* What uses a function's pad besides its live patch (ftrace_ops flags). */
#define FTRACE_OPS_TRACER     1
#define FTRACE_OPS_KPROBE     2
#define FTRACE_OPS_IPMODIFY   4	/* may change where the function continues */
#define FTRACE_OPS_LIVEPATCH  8

#endif
