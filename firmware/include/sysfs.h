/* sysfs.h - kobjects and their attribute files, as much of Linux's
 * <linux/kobject.h> and <linux/sysfs.h> as a module needs to publish a value
 * under /sys/kernel/<name>/<attribute>. */
#ifndef _LAB_SYSFS_H
#define _LAB_SYSFS_H

#include "kernel.h"

struct kobject {
	const char *name;
	struct kobject *parent;
	bool in_use;
};

struct attribute {
	const char *name;
	unsigned short mode;
};

struct kobj_attribute {
	struct attribute attr;
	ssize_t (*show)(struct kobject *kobj, struct kobj_attribute *attr, char *buf);
	ssize_t (*store)(struct kobject *kobj, struct kobj_attribute *attr, const char *buf, size_t count);
};

#define __ATTR_RO(_name) { .attr = { .name = #_name, .mode = 0444 }, .show = _name##_show }

extern struct kobject *kernel_kobj;	/* /sys/kernel */

struct kobject *kobject_create_and_add(const char *name, struct kobject *parent);
void kobject_put(struct kobject *kobj);
int sysfs_create_file(struct kobject *kobj, const struct attribute *attr);
struct file *kobject_sysfs_open(const char *path, int flags);
int sprintf(char *buf, const char *fmt, ...);

#endif
