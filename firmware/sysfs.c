/* sysfs.c - kobjects under /sys/kernel and their attribute files: a module
 * creates a directory and a file whose reads call its show() (Linux's
 * kobject_create_and_add() and sysfs_create_file()); removing the kobject
 * removes its files. */
#include "kernel.h"
#include "module.h"
#include "sysfs.h"

#define MAX_KOBJECTS 8
#define MAX_ATTRS 16

static struct kobject kernel_kobject = { .name = "kernel", .in_use = true };
struct kobject *kernel_kobj = &kernel_kobject;
static struct kobject kobjects[MAX_KOBJECTS];
static struct { struct kobject *kobj; const struct kobj_attribute *attr; } attrs[MAX_ATTRS];

struct kobject *kobject_create_and_add(const char *name, struct kobject *parent)
{
	int i;

	if (parent != kernel_kobj)
		return NULL;		/* only /sys/kernel/<name> here */
	for (i = 0; i < MAX_KOBJECTS; i++)
		if (!kobjects[i].in_use) {
			kobjects[i].name = name;
			kobjects[i].parent = parent;
			kobjects[i].in_use = true;
			return &kobjects[i];
		}
	return NULL;
}

void kobject_put(struct kobject *kobj)
{
	int i;

	if (!kobj)
		return;
	for (i = 0; i < MAX_ATTRS; i++)
		if (attrs[i].kobj == kobj)
			attrs[i].kobj = NULL;
	kobj->in_use = false;
}

int sysfs_create_file(struct kobject *kobj, const struct attribute *attr)
{
	int i;

	for (i = 0; i < MAX_ATTRS; i++)
		if (!attrs[i].kobj) {
			attrs[i].kobj = kobj;
			attrs[i].attr = (const struct kobj_attribute *)attr;
			return 0;
		}
	return -ENOMEM;
}

static int kobj_attr_show(struct seq_file *m, void *data)
{
	int i = (int)(long)data - 1;
	char buf[128];
	ssize_t n;

	if (i < 0 || i >= MAX_ATTRS || !attrs[i].kobj || !attrs[i].attr->show)
		return -EIO;
	n = attrs[i].attr->show(attrs[i].kobj, (struct kobj_attribute *)attrs[i].attr, buf);
	if (n < 0)
		return n;
	buf[n < (ssize_t)sizeof(buf) ? n : (ssize_t)sizeof(buf) - 1] = 0;
	return seq_printf(m, "%s", buf);
}

/* /sys/kernel/<kobject>/<attribute> */
struct file *kobject_sysfs_open(const char *path, int flags)
{
	static const char dir[] = "/sys/kernel/";
	const char *rest;
	size_t n;
	int i;

	if (strncmp(path, dir, sizeof(dir) - 1))
		return NULL;
	rest = path + sizeof(dir) - 1;
	for (i = 0; i < MAX_ATTRS; i++) {
		if (!attrs[i].kobj)
			continue;
		n = strlen(attrs[i].kobj->name);
		if (strncmp(rest, attrs[i].kobj->name, n) || rest[n] != '/' || strcmp(rest + n + 1, attrs[i].attr->attr.name))
			continue;
		if ((flags & O_ACCMODE) != O_RDONLY)
			return ERR_PTR(-EACCES);
		return seq_file_open(kobj_attr_show, NULL, (void *)(long)(i + 1), false);
	}
	return NULL;
}
