"""transition - per-task switching between universes: start, safe points, fake signals, try_complete, reverse, force."""
from __future__ import annotations

from dataclasses import dataclass

from ..kernel import TaskState

# Why a task moved, as the guest records it in the task struct
# (kgr_migrated_by) where it moves: the KGR_SAFE_* kinds of kgraft.h.
SAFE_POINT_NAMES = {
    "KGR_SAFE_SYSCALL_EXIT_KIND": "syscall-exit",
    "KGR_SAFE_FREEZER_KIND": "freezer",
    "KGR_SAFE_TASK_KIND": "kgr-task-safe",
    "KGR_SAFE_WORKER_KIND": "kthread-worker",
    "KGR_SAFE_IRQ_KIND": "irq-exit",
    "KGR_SAFE_IRQ_USER_KIND": "irq-exit-to-user",
    "KGR_SAFE_FAKE_SIGNAL_KIND": "fake-signal",
    "KGR_SAFE_FORCE_KIND": "force",
    "KGR_SAFE_STACK_CHECK_KIND": "stack-check",
    "KGR_SAFE_BOOT_KIND": "boot",
    "KGR_SAFE_FORK_KIND": "fork",
}
IRQ = -1   # the interrupt context, which keeps its own universe flag

# The same reasons and states in words, for every story the lab tells (the
# demo, the shell): "<task> moved to the new universe <how>".
MOVED_HOW = {
    "syscall-exit": "at its system call exit",
    "irq-exit-to-user": "returning from an interrupt to user mode",
    "freezer": "in try_to_freeze()",
    "kgr-task-safe": "at its kgr_task_safe() annotation",
    "kthread-worker": "in its kthread_worker loop",
    "irq-exit": "at interrupt exit",
    "fake-signal": "after the fake signal woke it (kernel exit)",
    "force": "by force",
    "stack-check": "by the stack check (none of the patched functions on its stack)",
    "boot": "at boot",
    "fork": "at fork (born in the target universe)",
}
# "patch '<name>' <said>"
PATCH_STATE_WORDS = {
    "transition": "starts its patching transition", "complete": "is applied: its transition is complete",
    "reverting": "starts its unpatching transition", "reverted": "is reverted",
    "refused": "was refused", "failed": "failed",
    "loaded": "is loaded (a module, no patch)", "removed": "is removed (rmmod)",
}


@dataclass(frozen=True)
class Migration:
    tid: int
    at: int
    by: str
    universe: int

    def __deepcopy__(self, memo):
        return self         # frozen, and every field immutable: a snapshot shares it


class Transition:
    """One patching or unpatching transition.

    funcs maps each pad address to (old target, new target), a target None
    meaning the original body.  Universe 0 runs the old targets, universe 1 the
    new ones; `target` is the universe every task is moving to (1 when
    patching, 0 when unpatching).  Reversing flips the target and nothing else.
    """

    def __init__(self, kernel, patch, funcs, target, at, upstream=False):
        self.kernel = kernel
        self.patch = patch
        self.funcs = funcs
        self.target = target
        self.started_at = at
        self.migrated = {}       # tid -> Migration (IRQ for the interrupt context)
        self.signalled = set()   # tids sent a fake signal since the last reversal
        self.last_signal_at = at
        self.upstream = upstream  # upstream's model: the idle task is waited for, no interrupt universe
        self._c = kernel.c
        self._target_addr = kernel.image.address("kgr_target_universe")
        self._irq_addr = kernel.image.address("kgr_irq_universe")
        self._irq_by_addr = kernel.image.address("kgr_irq_migrated_by")
        self._kinds = {kernel.c[k]: v for k, v in SAFE_POINT_NAMES.items()}
        self._kind_of = {v: kernel.c[k] for k, v in SAFE_POINT_NAMES.items()}
        # what _pending_tids() reads of each task struct, looked up once
        c = kernel.c
        self._nr_tasks_addr = kernel.image.address("nr_tasks")
        self._layout = (kernel.tasks_base, c["TASK_SIZE"], c["TASK_state"], c["TASK_flags"],
                        c["TASK_kgr_universe"], c["PF_IDLE_FLAG"],
                        (c["TASK_STATE_UNUSED"], c["TASK_STATE_DEAD"]))

    @property
    def patching(self):
        return self.target == 1

    def tracked(self):
        """The tasks the transition waits for.  The idle task is left out, as
        kGraft's for_each_process_thread() leaves it out: the idle loop calls no
        patchable function (kgr_task_safe() and schedule() are notrace), and
        what interrupts run is covered by the interrupt's own flag."""
        return [t for t in self.kernel.tasks
                if (self.upstream or not t.is_idle) and t.state not in (TaskState.DEAD, TaskState.UNUSED)]

    def universe_of(self, task):
        return task.kgr_universe

    def migrated_by(self, tid):
        """Why the task (or the interrupt context) last moved, read from guest memory."""
        m = self.kernel.machine
        raw = m.u8(self._irq_by_addr) if tid == IRQ else m.u8(self.kernel.task(tid)._field("kgr_migrated_by"))
        return self._kinds.get(raw)

    def _set_by(self, tid, name):
        m = self.kernel.machine
        if tid == IRQ:
            m.set_u8(self._irq_by_addr, self._kind_of[name])
        else:
            m.set_u8(self.kernel.task(tid)._field("kgr_migrated_by"), self._kind_of[name])

    def switch(self, task, name, at):
        """Move a task from outside it (the klp model's stack check): the
        universe and the reason are written where the guest keeps them."""
        m = self.kernel.machine
        m.set_u8(task._field("kgr_universe"), self.target)
        self._set_by(task.tid, name)
        return self.record_safe_point(task.tid, at)

    def irq_universe(self):
        return self.kernel.machine.u8(self._irq_addr)

    def start(self):
        """Put every task in the universe it leaves, then set the target:
        from here on each task moves at its own safe point.  The idle task
        too: it moves in its idle loop, as upstream's do_idle() calls
        klp_update_patch_state(); kGraft does not wait for it."""
        m = self.kernel.machine
        leave = 1 - self.target
        for t in self.kernel.tasks:
            if t.state not in (TaskState.DEAD, TaskState.UNUSED):
                m.set_u8(t._field("kgr_universe"), leave)
        m.set_u8(self._irq_addr, leave)
        m.set_u8(self._target_addr, self.target)

    def record_safe_point(self, tid, at):
        """A task (or the interrupt context) moved; why is what the guest
        wrote where it moved."""
        tid = IRQ if tid in (-1, 0xFFFFFFFFFFFFFFFF) else tid
        mig = Migration(tid, at, self.migrated_by(tid) or "unknown", self.target)
        self.migrated[tid] = mig
        return mig

    def pending(self):
        """Tasks still in the universe they leave."""
        return [self.kernel.task(tid) for tid in self._pending_tids()]

    def complete(self):
        return (self.upstream or self.irq_universe() == self.target) and not self._pending_tids(first=True)

    def _pending_tids(self, first=False):
        """The tids of pending(), read from the task structs directly: the
        core asks after every slice of a transition, and a Task view per
        task and field would cost more than the slice's own bookkeeping.
        The same test as tracked() and universe_of(): a task whose state
        is neither unused nor dead (a corrupt one counts), the idle task
        only in upstream's model.  first: stop at the first one."""
        m = self.kernel.machine
        base, size, state_at, flags_at, universe_at, idle_flag, gone = self._layout
        target, upstream = self.target, self.upstream
        out = []
        for tid in range(m.i32(self._nr_tasks_addr)):
            task = base + tid * size
            if m.i32(task + state_at) in gone or (not upstream and m.u32(task + flags_at) & idle_flag):
                continue
            if m.u8(task + universe_at) != target:
                out.append(tid)
                if first:
                    break
        return out

    def send_fake_signals(self, at):
        """Upstream's klp_send_signals(): a fake signal to every user task
        still in progress, a plain wake-up to kernel threads."""
        sent = []
        for t in self.pending():
            self.kernel.kick(t.tid, fake_signal=(t.kind == "user"))
            self.signalled.add(t.tid)
            sent.append(t.tid)
        self.last_signal_at = at
        return sent

    def reverse(self):
        """Turn the transition around: tasks that already moved now have to
        move back, the others are already where the new target is."""
        self.target = 1 - self.target
        self.kernel.machine.set_u8(self._target_addr, self.target)
        self.migrated = {}
        self.signalled = set()

    def force(self, at, by="force"):
        """Move every pending task (and the interrupt context) at once.
        by=None: a model that switches everything at once (immediate,
        stop-machine, boot) and records no per-task move."""
        m = self.kernel.machine
        moved = []
        for t in self.pending():
            m.set_u8(t._field("kgr_universe"), self.target)
            if by:
                self._set_by(t.tid, by)
                self.migrated[t.tid] = Migration(t.tid, at, by, self.target)
            moved.append(t.tid)
        if self.irq_universe() != self.target:
            m.set_u8(self._irq_addr, self.target)
            if by:
                self._set_by(IRQ, by)
                self.migrated[IRQ] = Migration(IRQ, at, by, self.target)
        return moved
