/* asm-offsets.c - the layout of kernel structures and the kernel's constants,
 * exported as absolute symbols of the image (Linux's asm-offsets technique).
 * The entry code uses them, and the lab reads them from the symbol table, so
 * the C headers stay their only definition.  Never called. */
#include "kernel.h"
#include "kgraft.h"
#include "livepatch.h"
#include "kprobes.h"


#define DEFINE(sym, val) asm volatile("\n.globl " #sym "\n.set " #sym ", %c0" :: "i"(val))
#define OFFSET(sym, str, mem) DEFINE(sym, offsetof(struct str, mem))

notrace void __used asm_offsets(void)
{
	OFFSET(TASK_tid, task_struct, tid);
	OFFSET(TASK_state, task_struct, state);
	OFFSET(TASK_flags, task_struct, flags);
	OFFSET(TASK_thread_flags, task_struct, thread_flags);
	OFFSET(TASK_kgr_universe, task_struct, kgr_universe);
	OFFSET(TASK_kgr_migrated_by, task_struct, kgr_migrated_by);
	OFFSET(TASK_kgr_fake_wakeup, task_struct, kgr_fake_wakeup);
	OFFSET(TASK_make_it_fail, task_struct, make_it_fail);
	OFFSET(TASK_in_syscall, task_struct, in_syscall);
	OFFSET(TASK_exit_code, task_struct, exit_code);
	OFFSET(TASK_sig_pending, task_struct, sig_pending);
	OFFSET(TASK_stack_top, task_struct, stack_top);
	OFFSET(TASK_thread_sp, task_struct, thread.sp);
	OFFSET(TASK_wakeup_at, task_struct, wakeup_at);
	OFFSET(TASK_nr_syscalls, task_struct, nr_syscalls);
	OFFSET(TASK_nr_switches, task_struct, nr_switches);
	OFFSET(TASK_nr_iterations, task_struct, nr_iterations);
	OFFSET(TASK_nr_signals, task_struct, nr_signals);
	OFFSET(TASK_comm, task_struct, comm);
	DEFINE(TASK_SIZE, sizeof(struct task_struct));
	DEFINE(TASK_COMM_SIZE, TASK_COMM_LEN);
	DEFINE(PT_REGS_SIZE, sizeof(struct pt_regs));
	OFFSET(PT_REGS_ip, pt_regs, ip);
	OFFSET(PT_REGS_ax, pt_regs, ax);
	OFFSET(PT_REGS_orig_ax, pt_regs, orig_ax);
	DEFINE(NR_TASKS_MAX, NR_TASKS);
	DEFINE(KSTACK_SIZE_BYTES, KSTACK_SIZE);
	DEFINE(KSTACK_GUARD_BYTES, KSTACK_GUARD);
	DEFINE(KSTACK_SLOT_BYTES, KSTACK_SLOT);
	/* the lowest user stack's bottom, which kernel.ld checks against __user_end */
	DEFINE(USER_STACKS_BOTTOM, USER_STACKS_TOP - NR_TASKS * USER_STACK_SIZE);

	DEFINE(TASK_STATE_UNUSED, TASK_UNUSED);
	DEFINE(TASK_STATE_RUNNING, TASK_RUNNING);
	DEFINE(TASK_STATE_INTERRUPTIBLE, TASK_INTERRUPTIBLE);
	DEFINE(TASK_STATE_DEAD, TASK_DEAD);
	DEFINE(PF_KTHREAD_FLAG, PF_KTHREAD);
	DEFINE(PF_FREEZABLE_FLAG, PF_FREEZABLE);
	DEFINE(PF_IDLE_FLAG, PF_IDLE);
	DEFINE(PF_WQ_WORKER_FLAG, PF_WQ_WORKER);
	DEFINE(PF_OOPSED_FLAG, PF_OOPSED);
	DEFINE(TIF_SIGPENDING_FLAG, TIF_SIGPENDING);

	OFFSET(WORKLOAD_name, workload, name);
	OFFSET(WORKLOAD_description, workload, description);
	DEFINE(WORKLOAD_SIZE, sizeof(struct workload));
	OFFSET(WORKLOAD_params, workload, params);
	OFFSET(WORKLOAD_nr_params, workload, nr_params);
	OFFSET(WORKLOAD_PARAM_name, workload_param, name);
	OFFSET(WORKLOAD_PARAM_min, workload_param, min);
	OFFSET(WORKLOAD_PARAM_max, workload_param, max);
	OFFSET(WORKLOAD_PARAM_def, workload_param, def);
	OFFSET(WORKLOAD_PARAM_description, workload_param, description);
	DEFINE(WORKLOAD_PARAM_SIZE, sizeof(struct workload_param));

	OFFSET(KGR_PATCH_name, kgr_patch, name);
	OFFSET(KGR_PATCH_replace_all, kgr_patch, replace_all);
	OFFSET(KGR_PATCH_patches, kgr_patch, patches);
	DEFINE(KGR_PATCH_MAX, KGR_PATCH_MAX_FUNS);
	OFFSET(KGR_FUN_name, kgr_patch_fun, name);
	OFFSET(KGR_FUN_new_fun, kgr_patch_fun, new_fun);
	OFFSET(KGR_FUN_abort_if_missing, kgr_patch_fun, abort_if_missing);
	DEFINE(KGR_FUN_SIZE, sizeof(struct kgr_patch_fun));

	OFFSET(KLP_PATCH_mod, klp_patch, mod);
	OFFSET(KLP_PATCH_objs, klp_patch, objs);
	OFFSET(KLP_PATCH_states, klp_patch, states);
	OFFSET(KLP_PATCH_replace, klp_patch, replace);
	OFFSET(KLP_PATCH_enabled, klp_patch, enabled);
	OFFSET(KLP_PATCH_forced, klp_patch, forced);
	OFFSET(KLP_OBJ_name, klp_object, name);
	OFFSET(KLP_OBJ_funcs, klp_object, funcs);
	OFFSET(KLP_OBJ_mod, klp_object, mod);
	OFFSET(KLP_OBJ_patched, klp_object, patched);
	DEFINE(KLP_OBJ_SIZE, sizeof(struct klp_object));
	OFFSET(KLP_FUNC_old_name, klp_func, old_name);
	OFFSET(KLP_FUNC_new_func, klp_func, new_func);
	OFFSET(KLP_FUNC_old_sympos, klp_func, old_sympos);
	OFFSET(KLP_FUNC_old_func, klp_func, old_func);
	OFFSET(KLP_FUNC_nop, klp_func, nop);
	DEFINE(KLP_FUNC_SIZE, sizeof(struct klp_func));
	OFFSET(KLP_STATE_id, klp_state, id);
	OFFSET(KLP_STATE_version, klp_state, version);
	DEFINE(KLP_STATE_SIZE, sizeof(struct klp_state));
	OFFSET(MODULE_state, module, state);
	OFFSET(MODULE_name, module, name);
	OFFSET(MODULE_refcnt, module, refcnt);
	OFFSET(MODULE_klp, module, klp);
	OFFSET(MODULE_klp_alive, module, klp_alive);
	OFFSET(MODULE_init, module, init);
	OFFSET(MODULE_exit, module, exit);
	OFFSET(MODULE_kp, module, kp);
	OFFSET(MODULE_num_kp, module, num_kp);
	DEFINE(MAX_MODULES_NR, MAX_MODULES);
	DEFINE(MODULE_SIZE, sizeof(struct module));
	DEFINE(MODULE_NAME_SIZE, MODULE_NAME_LEN);
	OFFSET(KPARAM_name, kernel_param, name);
	OFFSET(KPARAM_arg, kernel_param, arg);
	OFFSET(KPARAM_size, kernel_param, size);
	OFFSET(KPARAM_is_signed, kernel_param, is_signed);
	OFFSET(KPARAM_num, kernel_param, num);
	OFFSET(KPARAM_max, kernel_param, max);
	DEFINE(KPARAM_SIZE, sizeof(struct kernel_param));

	DEFINE(HC_CONSOLE_NR, HC_CONSOLE);
	DEFINE(HC_SWITCH_NR, HC_SWITCH);
	DEFINE(HC_BOOTED_NR, HC_BOOTED);
	DEFINE(HC_TASK_EXIT_NR, HC_TASK_EXIT);
	DEFINE(HC_PANIC_NR, HC_PANIC);
	DEFINE(HC_KGR_SAFE_NR, HC_KGR_SAFE);
	DEFINE(HC_KALLSYMS_LOOKUP_NR, HC_KALLSYMS_LOOKUP);
	DEFINE(HC_KGR_PATCH_NR, HC_KGR_PATCH);
	DEFINE(HC_KGR_UNPATCH_NR, HC_KGR_UNPATCH);
	DEFINE(HC_MODULE_DONE_NR, HC_MODULE_DONE);
	DEFINE(HC_TASK_NEW_NR, HC_TASK_NEW);
	DEFINE(HC_MODULE_START_NR, HC_MODULE_START);
	DEFINE(HC_KLP_INIT_NR, HC_KLP_INIT);
	DEFINE(HC_KLP_START_NR, HC_KLP_START);
	DEFINE(HC_KLP_REVERSE_NR, HC_KLP_REVERSE);
	DEFINE(HC_KLP_FORCE_NR, HC_KLP_FORCE);
	DEFINE(HC_KLP_DONE_NR, HC_KLP_DONE);
	DEFINE(HC_KLP_FREE_NR, HC_KLP_FREE);
	DEFINE(HC_REQUEST_DONE_NR, HC_REQUEST_DONE);
	DEFINE(HC_KLP_OBJECT_NR, HC_KLP_OBJECT);
	DEFINE(HC_FTRACE_OPS_NR, HC_FTRACE_OPS);
	DEFINE(HC_LOAD_MODULE_NR, HC_LOAD_MODULE);
	DEFINE(HC_MODULE_GONE_NR, HC_MODULE_GONE);
	DEFINE(FTRACE_OPS_TRACER_FLAG, FTRACE_OPS_TRACER);
	DEFINE(FTRACE_OPS_KPROBE_FLAG, FTRACE_OPS_KPROBE);
	DEFINE(FTRACE_OPS_IPMODIFY_FLAG, FTRACE_OPS_IPMODIFY);
	DEFINE(FTRACE_OPS_LIVEPATCH_FLAG, FTRACE_OPS_LIVEPATCH);
	DEFINE(HYPERCALL_PORT_NR, HYPERCALL_PORT);

	DEFINE(KGR_SAFE_SYSCALL_EXIT_KIND, KGR_SAFE_SYSCALL_EXIT);
	DEFINE(KGR_SAFE_FREEZER_KIND, KGR_SAFE_FREEZER);
	DEFINE(KGR_SAFE_TASK_KIND, KGR_SAFE_TASK);
	DEFINE(KGR_SAFE_WORKER_KIND, KGR_SAFE_WORKER);
	DEFINE(KGR_SAFE_IRQ_KIND, KGR_SAFE_IRQ);
	DEFINE(KGR_SAFE_IRQ_USER_KIND, KGR_SAFE_IRQ_USER);
	DEFINE(KGR_SAFE_FAKE_SIGNAL_KIND, KGR_SAFE_FAKE_SIGNAL);
	DEFINE(KGR_SAFE_FORCE_KIND, KGR_SAFE_FORCE);
	DEFINE(KGR_SAFE_STACK_CHECK_KIND, KGR_SAFE_STACK_CHECK);
	DEFINE(KLP_MODE_UPSTREAM_NR, KLP_MODE_UPSTREAM);
	DEFINE(KGR_SAFE_BOOT_KIND, KGR_SAFE_BOOT);
	DEFINE(KGR_SAFE_FORK_KIND, KGR_SAFE_FORK);
	DEFINE(USER_CS_SEL, USER_CS);
	DEFINE(KERNEL_CS_SEL, KERNEL_CS);
}
