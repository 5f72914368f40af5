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
void do_boot_modules(void);

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

static void setup_unannotated(void)
{
	setup_default();
	start_kunannotated();
}

static void setup_hammer(void)
{
	const char *nr = cmdline_get("nr_hammer");
	unsigned long i, n = nr ? simple_strtoul(nr, NULL) : 6;

	if (n < 1 || n > NR_TASKS - 3)
		n = 6;
	for (i = 0; i < n; i++)
		user_task_create(user_hammer_main, "hammer");
	user_task_create(user_reader_main, "pipe-reader");
	start_kfreezerd();
}

/* The workloads, chosen by workload=NAME; the lab lists them from here. */
struct workload {
	const char *name;
	const char *description;
	void (*setup)(void);
};

const struct workload workloads[] = {
	{ "default",
	  "cap-user (sethostname -> capable), cat-cmdline (reads /proc/cmdline), "
	  "pipe-reader (sleeps forever on an empty pipe), kfreezerd (freezable), "
	  "kannotated (kgr_task_safe), kworker/stats (kthread_worker)",
	  setup_default },
	{ "unannotated",
	  "default plus kunannotated, a non-freezable kthread with no kgr_task_safe()",
	  setup_unannotated },
	{ "hammer",
	  "nr_hammer=N user tasks (default 6) calling sethostname() in a tight loop, "
	  "pipe-reader and kfreezerd",
	  setup_hammer },
};
const int nr_workloads = ARRAY_SIZE(workloads);

static void idle_task_init(void)
{
	struct task_struct *idle = &tasks[0];
	extern unsigned long task_stacks[NR_TASKS][KSTACK_SIZE / 8];
	extern int nr_tasks;

	memset(idle, 0, sizeof(*idle));
	idle->tid = 0;
	idle->flags = PF_KTHREAD | PF_IDLE;
	idle->state = TASK_RUNNING;
	idle->stack_top = (unsigned long)&task_stacks[0][KSTACK_SIZE / 8];
	strscpy(idle->comm, "swapper/0", TASK_COMM_LEN);
	nr_tasks = 1;
}

void start_kernel(void)
{
	const char *name;
	int i;

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
	{ extern int nr_tasks; printk(KERN_INFO "workload %s: %d tasks\n", workloads[i].name, nr_tasks); }
	hypercall0(HC_BOOTED);
	cpu_idle();
}
