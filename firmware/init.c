/* init.c - start_kernel(): the command line, the workload's tasks, then the
 * idle loop.  The lab writes boot_command_line before the first instruction. */
#include "kernel.h"

char boot_command_line[256] = "workload=default";
char saved_command_line[256];

void start_kfreezerd(void);
void start_kannotated(void);
void start_kworker(void);
void start_kunannotated(void);
void user_cap_main(void);
void user_cat_main(void);
void user_reader_main(void);
void user_hammer_main(void);
void start_kmodloader(void);
void start_klp_worker(void);
void do_boot_modules(void);
void setup_writeback(void);
void sched_init(void);

/* The value of key=value on the command line, or NULL. */
const char *cmdline_get(const char *key)
{
	const char *p = saved_command_line;
	size_t n = strlen(key);

	while (*p) {
		while (*p == ' ')
			p++;
		if (!strncmp(p, key, n) && p[n] == '=')
			return p + n + 1;
		while (*p && *p != ' ')
			p++;
	}
	return NULL;
}

static void setup_default(void)
{
	user_task_create(user_cap_main, "cap-user");
	user_task_create(user_cat_main, "cat-cmdline");
	user_task_create(user_reader_main, "pipe-reader");
	start_kfreezerd();
	start_kannotated();
	start_kworker();
}

/* Mostly sleepers: the CPU is idle most of the time, so the idle task runs
 * its loop (and its safe point) often. */
static void setup_quiet(void)
{
	user_task_create(user_reader_main, "pipe-reader");
	start_kfreezerd();
	start_kannotated();
}

static void setup_unannotated(void)
{
	setup_default();
	start_kunannotated();
}

/* The value of a workload parameter: its default when absent; a value that
 * is not a number or out of its range stops the boot (the lab refuses it
 * before booting, so only a hand-made command line gets here). */
long workload_param(const struct workload_param *p)
{
	const char *s = cmdline_get(p->name), *end;
	long v;

	if (!s)
		return p->def;
	v = (long)simple_strtoul(s, &end);
	if (end == s || (*end && *end != ' ') || v < p->min || v > p->max) {
		printk(KERN_ERR "%s=%s: out of range %ld..%ld\n", p->name, s, p->min, p->max);
		panic("workload parameter out of range");
	}
	return v;
}

/* idle, kmodloader, pipe-reader and kfreezerd, and a slot left for the
 * insmod task of one patch load */
static const struct workload_param hammer_params[] = {
	{ "nr_hammer", 1, NR_TASKS - 5, 6, "user tasks calling sethostname() in a tight loop" },
};

static void setup_hammer(void)
{
	long i, n = workload_param(&hammer_params[0]);

	for (i = 0; i < n; i++)
		user_task_create(user_hammer_main, "hammer");
	user_task_create(user_reader_main, "pipe-reader");
	start_kfreezerd();
}

/* The workloads, chosen by workload=NAME; the lab lists them from here. */

const struct workload workloads[] = {
	{ "default",
	  "cap-user (sethostname -> capable), cat-cmdline (reads /proc/cmdline), "
	  "pipe-reader (sleeps forever on an empty pipe), kfreezerd (freezable), "
	  "kannotated (kgr_task_safe), kworker/stats (kthread_worker)",
	  setup_default },
	{ "unannotated",
	  "default plus kunannotated, a non-freezable kthread with no kgr_task_safe()",
	  setup_unannotated },
	{ "quiet",
	  "pipe-reader, kfreezerd and kannotated: the CPU is mostly idle, "
	  "so the idle task runs its loop and moves at its safe point there",
	  setup_quiet },
	{ "hammer",
	  "nr_hammer=N user tasks (default 6) calling sethostname() in a tight loop, "
	  "pipe-reader and kfreezerd",
	  setup_hammer, hammer_params, ARRAY_SIZE(hammer_params) },
	{ "writeback",
	  "kjournald dirties pages of two devices and is throttled over their dirty limit, "
	  "kflushd writes them back (both freezable), pipe-reader",
	  setup_writeback },
};
const int nr_workloads = ARRAY_SIZE(workloads);

static void idle_task_init(void)
{
	struct task_struct *idle = &tasks[0];
	extern unsigned long task_stacks[NR_TASKS][KSTACK_SLOT / 8];

	memset(idle, 0, sizeof(*idle));
	idle->tid = 0;
	idle->flags = PF_KTHREAD | PF_IDLE;
	idle->state = TASK_RUNNING;
	idle->stack_top = (unsigned long)&task_stacks[0][KSTACK_SLOT / 8];
	strscpy(idle->comm, "swapper/0", TASK_COMM_LEN);
	nr_tasks = 1;
}

void start_kernel(void)
{
	const char *name;
	int i;

	sched_init();
	idle_task_init();
	strscpy(saved_command_line, boot_command_line, sizeof(saved_command_line));
	printk(KERN_INFO "Lab kernel booting\n");
	printk(KERN_INFO "Command line: %s\n", saved_command_line);
	name = cmdline_get("workload");
	if (!name)
		name = "default";
	for (i = 0; i < nr_workloads; i++) {
		size_t n = strlen(workloads[i].name);
		if (!strncmp(name, workloads[i].name, n) && (name[n] == ' ' || !name[n]))
			break;
	}
	if (i == nr_workloads)
		panic("unknown workload on the command line");
	do_boot_modules();	/* patches applied at boot, before any task exists */
	workloads[i].setup();
	start_kmodloader();
	if (klp_mode == KLP_MODE_UPSTREAM)
		start_klp_worker();
	printk(KERN_INFO "workload %s: %d tasks\n", workloads[i].name, nr_tasks);
	system_state = SYSTEM_RUNNING;
	hypercall0(HC_BOOTED);
	cpu_idle();
}
