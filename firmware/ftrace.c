/* ftrace.c - the users of a function's pad inside the kernel besides live
 * patching: kprobes and the function tracer, each an ftrace_ops on the pad.
 *
 * The lab writes the pads and the code they call (it is this kernel's
 * ftrace core): when a function has such users, its pad calls code that
 * first calls ftrace_ops_list_func() with the function's address, then
 * goes on (into the function, or into its live patch's decision).  Only
 * one user may have FTRACE_OPS_IPMODIFY on a function: a kprobe with a
 * post handler and a live patch exclude each other (-EBUSY), as in Linux.
 */
#include "kernel.h"
#include "module.h"
#include "kprobes.h"

static struct kprobe *kprobes;

/* Register with the lab's ftrace core: 0, or -EBUSY / -EINVAL. */
static long ftrace_ops_register(unsigned long ip, int flags, int on)
{
	return hypercall3(HC_FTRACE_OPS, ip, flags, on);
}

int register_kprobe(struct kprobe *p)
{
	unsigned long addr = p->addr ? p->addr : kallsyms_lookup_name(p->symbol_name);
	int flags = FTRACE_OPS_KPROBE | (p->post_handler ? FTRACE_OPS_IPMODIFY : 0);
	long ret;

	if (!addr)
		return -ENOENT;
	ret = ftrace_ops_register(addr, flags, 1);
	if (ret)
		return (int)ret;
	p->addr = addr;
	p->nhit = 0;
	p->next = kprobes;
	kprobes = p;
	return 0;
}

void unregister_kprobe(struct kprobe *p)
{
	struct kprobe **pp;

	for (pp = &kprobes; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			ftrace_ops_register(p->addr, FTRACE_OPS_KPROBE | (p->post_handler ? FTRACE_OPS_IPMODIFY : 0), 0);
			return;
		}
}

/* ---- the function tracer (tracefs: current_tracer, set_ftrace_filter, trace) ---- */

#define MAX_FILTER 4
#define TRACE_ENTRIES 16

static struct { unsigned long ip; char name[48]; } filter[MAX_FILTER];
static int nr_filter;
static bool tracer_on;
static struct { int f; int tid; unsigned long parent; unsigned long when; char comm[TASK_COMM_LEN]; }
	trace_buf[TRACE_ENTRIES];
static unsigned long trace_next;

static notrace void trace_function(int f, unsigned long parent)
{
	unsigned long i = trace_next++ % TRACE_ENTRIES;

	trace_buf[i].f = f;
	trace_buf[i].tid = current->tid;
	trace_buf[i].parent = parent;
	trace_buf[i].when = jiffies;
	memcpy(trace_buf[i].comm, current->comm, TASK_COMM_LEN);
}

/* Called by what the pad calls, before the function (or its live patch's
 * decision) runs: every user of this function's pad, in turn. */
notrace void ftrace_ops_list_func(unsigned long ip, unsigned long parent_ip)
{
	struct kprobe *p;
	int i;

	for (p = kprobes; p; p = p->next) {
		if (p->addr != ip)
			continue;
		p->nhit++;
		if (p->pre_handler)
			p->pre_handler(p, NULL);
		if (p->post_handler)
			p->post_handler(p, NULL, 0);
	}
	if (tracer_on)
		for (i = 0; i < nr_filter; i++)
			if (filter[i].ip == ip)
				trace_function(i, parent_ip);
}

static void clear_filter(void)
{
	while (nr_filter > 0) {
		nr_filter--;
		if (tracer_on)
			ftrace_ops_register(filter[nr_filter].ip, FTRACE_OPS_TRACER, 0);
	}
}

static int current_tracer_show(struct seq_file *m, void *data)
{
	return seq_printf(m, "%s\n", tracer_on ? "function" : "nop");
}

static ssize_t current_tracer_store(void *data, const char *buf)
{
	int i;

	if (!strcmp(buf, "function")) {
		if (!tracer_on)
			for (i = 0; i < nr_filter; i++)
				ftrace_ops_register(filter[i].ip, FTRACE_OPS_TRACER, 1);
		tracer_on = true;
		return 0;
	}
	if (!strcmp(buf, "nop")) {
		if (tracer_on)
			for (i = 0; i < nr_filter; i++)
				ftrace_ops_register(filter[i].ip, FTRACE_OPS_TRACER, 0);
		tracer_on = false;
		return 0;
	}
	return -EINVAL;
}

static int filter_show(struct seq_file *m, void *data)
{
	int i;

	for (i = 0; i < nr_filter; i++)
		seq_printf(m, "%s\n", filter[i].name);
	return 0;
}

/* One function by name replaces the filter; an empty write clears it. */
static ssize_t filter_store(void *data, const char *buf)
{
	unsigned long ip;
	long ret;

	clear_filter();
	if (!*buf)
		return 0;
	ip = kallsyms_lookup_name(buf);
	if (!ip || strlen(buf) >= sizeof(filter[0].name))
		return -EINVAL;
	if (tracer_on) {
		ret = ftrace_ops_register(ip, FTRACE_OPS_TRACER, 1);
		if (ret)
			return ret;
	}
	filter[0].ip = ip;
	strscpy(filter[0].name, buf, sizeof(filter[0].name));
	nr_filter = 1;
	return 0;
}

static int trace_show(struct seq_file *m, void *data)
{
	unsigned long i, first = trace_next > TRACE_ENTRIES ? trace_next - TRACE_ENTRIES : 0;

	seq_printf(m, "# tracer: %s\n", tracer_on ? "function" : "nop");
	/* the newest entries that fit the page */
	if (trace_next - first > 3)
		first = trace_next - 3;
	for (i = first; i < trace_next; i++) {
		unsigned long k = i % TRACE_ENTRIES;

		seq_printf(m, "%s-%d [000] %lu: %s <-%p\n", trace_buf[k].comm, trace_buf[k].tid, trace_buf[k].when,
			   filter[trace_buf[k].f].name, (void *)trace_buf[k].parent);
	}
	return 0;
}

/* /sys/kernel/tracing/{current_tracer,set_ftrace_filter,trace} */
struct file *tracefs_open(const char *path, int flags)
{
	if (!strcmp(path, "/sys/kernel/tracing/current_tracer"))
		return seq_file_open(current_tracer_show, current_tracer_store, NULL, false);
	if (!strcmp(path, "/sys/kernel/tracing/set_ftrace_filter"))
		return seq_file_open(filter_show, filter_store, NULL, false);
	if (!strcmp(path, "/sys/kernel/tracing/trace")) {
		if ((flags & O_ACCMODE) != O_RDONLY)
			return ERR_PTR(-EACCES);
		return seq_file_open(trace_show, NULL, NULL, false);
	}
	return NULL;
}
