/* module.h - struct module, as much of Linux's as the lab's modules need:
 * a name, a state the loader keeps, and whether it is a live patch
 * (MODULE_INFO(livepatch, "Y"), which the loader checks as Linux's
 * check_modinfo_livepatch() does). */
#ifndef _LAB_MODULE_H
#define _LAB_MODULE_H

#include "kernel.h"

#define MODULE_NAME_LEN 56

enum module_state {
	MODULE_STATE_LIVE,	/* normal state */
	MODULE_STATE_COMING,	/* fully formed, running module_init */
	MODULE_STATE_GOING,	/* going away */
	MODULE_STATE_UNFORMED,	/* still setting it up */
};

struct kernel_param;

/* Filled in by the loader (the lab) before the init runs, as Linux's
 * load_module() fills a module's struct module. */
struct module {
	enum module_state state;
	char name[MODULE_NAME_LEN];
	int refcnt;          /* references from other modules and the live patch core */
	bool klp;            /* MODULE_INFO(livepatch, "Y") was found by the loader */
	bool klp_alive;      /* its patch is registered (/sys/kernel/livepatch/<name> exists) */
	int (*init)(void);
	void (*exit)(void);
	const struct kernel_param *kp;	/* its parameters (.modparams) */
	unsigned int num_kp;
};

/* Every loaded module with a struct module (Linux's modules list); the
 * loader adds and removes them. */
#define MAX_MODULES 32
extern struct module *lab_modules[MAX_MODULES];
struct module *find_module(const char *name);
int klp_module_coming(struct module *mod);
void klp_module_going(struct module *mod);

/* A module's entry points, as Linux spells them: the loader calls
 * init_module() inside the emulated kernel and cleanup_module() on removal. */
#ifndef __exit
#define __exit
#define module_init(fn) int init_module(void) __attribute__((alias(#fn)));
#define module_exit(fn) void cleanup_module(void) __attribute__((alias(#fn)));
#endif

#define __MODULE_INFO(tag, name, info) \
	static const char __modinfo_##name[] __attribute__((section(".modinfo"), used, aligned(1))) = \
		#tag "=" info
#define MODULE_INFO(tag, info) __MODULE_INFO(tag, tag, info)
#define MODULE_LICENSE(l) MODULE_INFO(license, l)
#define MODULE_AUTHOR(a) MODULE_INFO(author, a)
#define MODULE_DESCRIPTION(d) MODULE_INFO(description, d)

/* module_param(): the value given on insmod's command line (NAME=VALUE) is
 * written by the loader before the init runs; parameters are listed in
 * .modparams so the loader knows their names and types. */
struct kernel_param {
	const char *name;
	void *arg;
	int size;        /* bytes of one value: 1 (bool), 4 (int), 8 */
	int is_signed;
	unsigned int *num;   /* module_param_array(): where the count of values goes, else NULL */
	unsigned int max;    /* module_param_array(): room for this many values */
};
#define module_param(var, type, perm) \
	static const struct kernel_param __param_##var __attribute__((section(".modparams"), used)) = \
		{ #var, &var, sizeof(var), (type)-1 < (type)0, NULL, 1 }
/* NAME=v1,v2,...: an array of values and their count */
#define module_param_array(var, type, nump, perm) \
	static const struct kernel_param __param_##var __attribute__((section(".modparams"), used)) = \
		{ #var, var, sizeof(var[0]), (type)-1 < (type)0, nump, sizeof(var) / sizeof(var[0]) }
#define MODULE_PARM_DESC(var, desc)

#ifdef KBUILD_MODNAME
/* What modpost generates for every module: its struct module, named. */
struct module __this_module __attribute__((section(".gnu.linkonce.this_module"))) = {
	.name = KBUILD_MODNAME,
	.state = MODULE_STATE_UNFORMED,
};
#define THIS_MODULE (&__this_module)
#endif

typedef unsigned int gfp_t;
#define GFP_KERNEL 0
#define GFP_ATOMIC 1
#define GFP_NOWAIT 2
void *kmalloc(size_t size, gfp_t flags);
void *kzalloc(size_t size, gfp_t flags);
void kfree(const void *p);

#endif
