/* fs.c - files: the console, pipes and a proc-like file system whose files
 * are produced by show functions through a small seq_file. */
#include "kernel.h"

#define NR_FILES 64
static struct file file_table[NR_FILES];

struct file *alloc_file(const struct file_operations *fops, void *priv)
{
	int i;

	for (i = 0; i < NR_FILES; i++)
		if (!file_table[i].in_use) {
			struct file *f = &file_table[i];
			f->in_use = true;
			f->f_op = fops;
			f->private_data = priv;
			f->pos = 0;
			f->refs = 1;
			return f;
		}
	return NULL;
}

void fput(struct file *f)
{
	if (--f->refs == 0) {
		if (f->f_op->release)
			f->f_op->release(f);
		f->in_use = false;
	}
}

int fd_install(struct task_struct *p, struct file *f)
{
	int fd;

	if (!f)
		return -EMFILE;
	for (fd = 0; fd < NR_OPEN; fd++)
		if (!p->files[fd]) {
			p->files[fd] = f;
			return fd;
		}
	fput(f);
	return -EMFILE;
}

struct file *fget(int fd)
{
	if (fd < 0 || fd >= NR_OPEN)
		return NULL;
	return current->files[fd];
}

/* ---- the console: user writes become console lines ---- */

static ssize_t console_write(struct file *f, const char *buf, size_t len)
{
	char line[160];
	size_t n = len < sizeof(line) - 1 ? len : sizeof(line) - 1;

	if (copy_from_user(line, buf, n))
		return -EFAULT;
	line[n] = 0;
	if (n && line[n - 1] == '\n')
		line[n - 1] = 0;
	printk(KERN_INFO "%s[%d]: %s\n", current->comm, current->tid, line);
	return len;
}

static ssize_t console_read(struct file *f, char *buf, size_t len)
{
	return 0;
}

const struct file_operations console_fops = {
	.read = console_read,
	.write = console_write,
};

/* ---- pipes ---- */

#define PIPE_BUF_SIZE 256
struct pipe_inode_info {
	struct wait_queue_head rd_wait;
	char buf[PIPE_BUF_SIZE];
	size_t head, len;
	int readers, writers;
	bool in_use;
};
static struct pipe_inode_info pipes[4];

/* Where a reader of an empty pipe sleeps (Linux has pipe_wait() here). */
__noinline long pipe_wait_readable(struct pipe_inode_info *pipe)
{
	return wait_event_interruptible(pipe->rd_wait, READ_ONCE(pipe->len) > 0 ||
					!READ_ONCE(pipe->writers));
}

static ssize_t pipe_read(struct file *f, char *buf, size_t len)
{
	struct pipe_inode_info *pipe = f->private_data;
	size_t n = 0;
	long ret;

	ret = pipe_wait_readable(pipe);
	if (ret)
		return ret;
	while (n < len && pipe->len) {
		char c = pipe->buf[pipe->head];
		pipe->head = (pipe->head + 1) % PIPE_BUF_SIZE;
		pipe->len--;
		if (copy_to_user(buf + n, &c, 1))
			return -EFAULT;
		n++;
	}
	return n;
}

static ssize_t pipe_write(struct file *f, const char *buf, size_t len)
{
	struct pipe_inode_info *pipe = f->private_data;
	size_t n = 0;

	while (n < len && pipe->len < PIPE_BUF_SIZE) {
		char c;
		if (copy_from_user(&c, buf + n, 1))
			return -EFAULT;
		pipe->buf[(pipe->head + pipe->len) % PIPE_BUF_SIZE] = c;
		pipe->len++;
		n++;
	}
	wake_up(&pipe->rd_wait);
	return n ? (ssize_t)n : -EAGAIN;
}

static void pipe_read_release(struct file *f)
{
	struct pipe_inode_info *pipe = f->private_data;
	if (--pipe->readers == 0 && !pipe->writers)
		pipe->in_use = false;
}

static void pipe_write_release(struct file *f)
{
	struct pipe_inode_info *pipe = f->private_data;
	pipe->writers--;
	wake_up(&pipe->rd_wait);
	if (!pipe->readers && !pipe->writers)
		pipe->in_use = false;
}

static const struct file_operations pipe_read_fops = {
	.read = pipe_read, .release = pipe_read_release,
};
static const struct file_operations pipe_write_fops = {
	.write = pipe_write, .release = pipe_write_release,
};

int do_pipe(int fds[2])
{
	struct pipe_inode_info *pipe = NULL;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(pipes); i++)
		if (!pipes[i].in_use) {
			pipe = &pipes[i];
			break;
		}
	if (!pipe)
		return -EMFILE;
	memset(pipe, 0, sizeof(*pipe));
	pipe->in_use = true;
	pipe->readers = pipe->writers = 1;
	fds[0] = fd_install(current, alloc_file(&pipe_read_fops, pipe));
	fds[1] = fd_install(current, alloc_file(&pipe_write_fops, pipe));
	return 0;
}

/* ---- seq_file and the proc files ---- */

struct seq_file {
	char buf[256];
	size_t count;
};

int seq_printf(struct seq_file *m, const char *fmt, ...)
{
	__builtin_va_list ap;
	int n;

	__builtin_va_start(ap, fmt);
	n = vsnprintf(m->buf + m->count, sizeof(m->buf) - m->count, fmt, ap);
	__builtin_va_end(ap);
	m->count += n;
	if (m->count > sizeof(m->buf) - 1)
		m->count = sizeof(m->buf) - 1;
	return 0;
}

/* /proc/cmdline, as in Linux (fs/proc/cmdline.c); upstream's livepatch
 * sample replaces exactly this function. */
int cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s\n", saved_command_line);
	return 0;
}

static int version_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "Lab kernel 0.1 (gcc -pg -mfentry -mnop-mcount)\n");
	return 0;
}

static int uptime_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%lu\n", jiffies);
	return 0;
}

struct proc_entry {
	const char *name;
	int (*show)(struct seq_file *m, void *v);
};

static const struct proc_entry proc_entries[] = {
	{ "/proc/cmdline", cmdline_proc_show },
	{ "/proc/version", version_proc_show },
	{ "/proc/uptime", uptime_proc_show },
};

struct proc_file {
	struct seq_file seq;
	const struct proc_entry *entry;
	bool filled;
	bool in_use;
};
static struct proc_file proc_files[8];

static ssize_t seq_read(struct file *f, char *buf, size_t len)
{
	struct proc_file *pf = f->private_data;
	size_t n;

	if (!pf->filled) {
		pf->seq.count = 0;
		pf->entry->show(&pf->seq, NULL);
		pf->filled = true;
	}
	if (f->pos >= pf->seq.count)
		return 0;
	n = pf->seq.count - f->pos;
	if (n > len)
		n = len;
	if (copy_to_user(buf, pf->seq.buf + f->pos, n))
		return -EFAULT;
	f->pos += n;
	return n;
}

static void seq_release(struct file *f)
{
	((struct proc_file *)f->private_data)->in_use = false;
}

static const struct file_operations proc_fops = {
	.read = seq_read, .release = seq_release,
};

struct file *proc_open(const char *path)
{
	unsigned int i, j;

	for (i = 0; i < ARRAY_SIZE(proc_entries); i++) {
		if (strcmp(path, proc_entries[i].name))
			continue;
		for (j = 0; j < ARRAY_SIZE(proc_files); j++)
			if (!proc_files[j].in_use) {
				struct proc_file *pf = &proc_files[j];
				memset(pf, 0, sizeof(*pf));
				pf->in_use = true;
				pf->entry = &proc_entries[i];
				return alloc_file(&proc_fops, pf);
			}
		return NULL;
	}
	return NULL;
}
