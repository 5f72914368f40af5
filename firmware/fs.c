/* fs.c - files: the console, pipes and a proc-like file system whose files
 * are produced by show functions through a small seq_file. */
#include "kernel.h"
#include "module.h"

/* Every user task holds its two console files; pipes and proc files take
 * the rest (Linux's file table grows; this one is sized by NR_TASKS). */
#define NR_FILES (2 * NR_TASKS + 32)
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

/* /proc/meminfo (fs/proc/meminfo.c): the selftests' second patch target. */
extern unsigned long kmalloc_bytes;
int meminfo_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "MemTotal:       %8lu kB\n", 8192UL);
	seq_printf(m, "Slab:           %8lu kB\n", (kmalloc_bytes + 1023) / 1024);
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
	{ "/proc/meminfo", meminfo_proc_show },
};

/* An open proc or sysfs file: the text show() produced at the first read,
 * and where writes go (store: one value, as a sysfs attribute takes it). */
struct proc_file {
	struct seq_file seq;
	int (*show)(struct seq_file *m, void *data);
	ssize_t (*store)(void *data, const char *buf);
	void *data;
	bool owned;
	bool filled;
	bool in_use;
};
static struct proc_file proc_files[8];

static ssize_t seq_copy_out(struct proc_file *pf, struct file *f, char *buf, size_t len, bool kernel)
{
	size_t n;
	int ret;

	if (!pf->show)
		return -EACCES;
	if (!pf->filled) {
		pf->seq.count = 0;
		ret = pf->show(&pf->seq, pf->data);
		if (ret < 0)
			return ret;
		pf->filled = true;
	}
	if (f->pos >= pf->seq.count)
		return 0;
	n = pf->seq.count - f->pos;
	if (n > len)
		n = len;
	if (kernel)
		memcpy(buf, pf->seq.buf + f->pos, n);
	else if (copy_to_user(buf, pf->seq.buf + f->pos, n))
		return -EFAULT;
	f->pos += n;
	return n;
}

static ssize_t seq_store_in(struct proc_file *pf, const char *buf, size_t len, bool kernel)
{
	char text[128];
	size_t n = len < sizeof(text) - 1 ? len : sizeof(text) - 1;
	ssize_t ret;

	if (!pf->store)
		return -EACCES;
	if (kernel)
		memcpy(text, buf, n);
	else if (copy_from_user(text, buf, n))
		return -EFAULT;
	text[n] = 0;
	if (n && text[n - 1] == '\n')
		text[n - 1] = 0;
	ret = pf->store(pf->data, text);
	return ret < 0 ? ret : (ssize_t)len;
}

static ssize_t seq_read(struct file *f, char *buf, size_t len)
{
	return seq_copy_out(f->private_data, f, buf, len, false);
}

static ssize_t seq_write(struct file *f, const char *buf, size_t len)
{
	return seq_store_in(f->private_data, buf, len, false);
}

static void seq_release(struct file *f)
{
	struct proc_file *pf = f->private_data;

	if (pf->owned)
		kfree(pf->data);
	pf->in_use = false;
}

static const struct file_operations proc_fops = {
	.read = seq_read, .write = seq_write, .release = seq_release,
};

struct file *seq_file_open(int (*show)(struct seq_file *m, void *data),
			   ssize_t (*store)(void *data, const char *buf), void *data, bool owned)
{
	unsigned int j;

	for (j = 0; j < ARRAY_SIZE(proc_files); j++)
		if (!proc_files[j].in_use) {
			struct proc_file *pf = &proc_files[j];
			memset(pf, 0, sizeof(*pf));
			pf->in_use = true;
			pf->show = show;
			pf->store = store;
			pf->data = data;
			pf->owned = owned;
			return alloc_file(&proc_fops, pf);
		}
	return NULL;
}

static int proc_entry_show(struct seq_file *m, void *data)
{
	return ((const struct proc_entry *)data)->show(m, NULL);
}

/* /dev/kmsg: a line written there becomes a kernel log line, as the
 * selftests' log() writes its "% modprobe ..." lines. */
static ssize_t kmsg_store(void *data, const char *buf)
{
	printk(KERN_INFO "%s\n", buf);
	return 0;
}

/* A file by path: the proc files, /dev/kmsg, then the live patching sysfs.  NULL if
 * there is none (-ENOENT), an ERR_PTR if it may not be opened so. */
struct file *module_sysfs_open(const char *path, int flags);
struct file *kobject_sysfs_open(const char *path, int flags);
struct file *tracefs_open(const char *path, int flags);
struct file *kgraft_proc_open(const char *path, int flags);

struct file *proc_open(const char *path, int flags)
{
	struct file *f;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(proc_entries); i++) {
		if (strcmp(path, proc_entries[i].name))
			continue;
		if ((flags & O_ACCMODE) != O_RDONLY)
			return ERR_PTR(-EACCES);
		return seq_file_open(proc_entry_show, NULL, (void *)&proc_entries[i], false);
	}
	if (!strcmp(path, "/proc/sys/kernel/ftrace_enabled"))
		return ftrace_enabled_open();
	if (!strcmp(path, "/dev/kmsg"))
		return seq_file_open(NULL, kmsg_store, NULL, false);
	f = module_sysfs_open(path, flags);
	if (f)
		return f;
	f = kobject_sysfs_open(path, flags);
	if (f)
		return f;
	f = tracefs_open(path, flags);
	if (f)
		return f;
	f = kgraft_proc_open(path, flags);
	if (f)
		return f;
	return klp_sysfs_open(path, flags);
}

/* What `echo VALUE > PATH` and `cat PATH` do, from a kernel task (the
 * lab's API reaches the files through these, as a shell would through
 * open/write/read). */
ssize_t kernel_file_write(const char *path, const char *buf, size_t len)
{
	struct file *f = proc_open(path, O_WRONLY);
	ssize_t ret;

	if (IS_ERR(f))
		return PTR_ERR(f);
	if (!f)
		return -ENOENT;
	ret = seq_store_in(f->private_data, buf, len, true);
	fput(f);
	return ret;
}

ssize_t kernel_file_read(const char *path, char *buf, size_t len)
{
	struct file *f = proc_open(path, O_RDONLY);
	ssize_t ret;

	if (IS_ERR(f))
		return PTR_ERR(f);
	if (!f)
		return -ENOENT;
	ret = seq_copy_out(f->private_data, f, buf, len, true);
	fput(f);
	return ret;
}
