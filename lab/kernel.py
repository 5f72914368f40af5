"""kernel - the emulated kernel as the lab drives and sees it: tasks, slices, timer ticks, signals, oopses.

The kernel schedules itself (schedule() and __switch_to_asm in the firmware);
the lab runs it in slices of instructions and delivers the timer tick between
two slices, as a timer chip would.  Task objects are views of the task structs
in emulated memory, never copies.
"""
from __future__ import annotations

import enum
import functools
import random

from . import events as ev
from .disasm import disassemble
from .errors import GuestFault, KernelError, KernelPanic, MachineFault

DEFAULT_QUANTUM = 20_000
QUANTUM_MIN, QUANTUM_MAX = 1_000, 10_000_000    # a slice beyond that starves every other task
EFAULT = 14
SIGNAL_NAMES = {2: "SIGINT", 9: "SIGKILL", 10: "SIGUSR1", 12: "SIGUSR2", 15: "SIGTERM"}
_STALL_CHUNK = 128          # instructions run at a time while the tick waits for IF
# A pending tick is tried again about every _STALL_CHUNK instructions, but
# never at a fixed interval: the CPU takes a pending interrupt the moment IF
# is set, the lab can only look at slice ends, and a loop whose period
# divides a fixed interval could hide its interrupts-on window from every
# try and pass for a hard lockup.  The offsets grow strictly.
_STALL_JITTER = (0, 61, 29, 97, 13, 113, 47, 79, 5, 101, 37, 71, 19, 89, 53, 7)


def _stall_offset(k):
    """Instructions after the tick fell due of its k-th try (k = 0: on time)."""
    return k * _STALL_CHUNK + _STALL_JITTER[k % len(_STALL_JITTER)]
# The hard-lockup watchdog (Linux's NMI watchdog): a CPU that has taken no
# timer interrupt for this many quanta with interrupts off is locked up.
# Linux checks every watchdog_thresh (10 s) and, with hardlockup_panic set
# (CONFIG_BOOTPARAM_HARDLOCKUP_PANIC, as distribution kernels that must not
# hang are configured), panics: a CPU that never takes interrupts again
# cannot be recovered.  The lab follows that rule.
_LOCKUP_QUANTA = 50
# Linux 6.2's kernel.oops_limit (default 10,000) panics a kernel that oopses
# too often.  The lab has 72 task slots (NR_TASKS), so far fewer oopses
# already mean that something kills every task it creates; its limit is lower.
OOPS_LIMIT = 100
# Kernel stack guard pages are set a group of task slots at a time, when a
# slot of the group is first used (Kernel._guard_slot).  Every workload boots
# within the first group, so a snapshot taken after boot already holds the
# guard of the slot the next fork takes (insmod's, at a patch load), and
# restoring it changes no memory region: each change costs a guard's mem_protect
# and the next slice's refilled TLB, about half a millisecond.
_GUARD_GROUP = 16
_SCHEDULER_FUNCS = {"schedule", "__switch_to_asm", "preempt_schedule_irq", "schedule_timeout"}
# the events of the hottest paths, each posted in one call (events.poster)
_POST_SWITCH = ev.poster(ev.ContextSwitch)
_POST_IRQ = ev.poster(ev.Interrupt)
_POST_SYSCALL = ev.poster(ev.SyscallEntry)


class InterruptLost(Exception):
    """Kernel.interrupt() could not deliver: the kernel panicked instead."""


class TaskState(enum.Enum):
    UNUSED = "unused"
    RUNNING = "running"
    SLEEPING = "sleeping"
    DEAD = "dead"
    CORRUPT = "corrupt"     # the state field holds no state: something wrote over the task struct


class Task:
    """A view of one task struct in emulated memory."""

    def __init__(self, kernel, tid):
        self._k = kernel
        self._m = kernel.machine
        self.tid = tid
        self.base = kernel.tasks_base + tid * kernel.c["TASK_SIZE"]

    def _field(self, name):
        return self.base + self._k.c["TASK_" + name]

    @property
    def name(self):
        return self._m.cstring(self._field("comm"), self._k.c["TASK_COMM_SIZE"])

    @property
    def flags(self):
        return self._m.u32(self._field("flags"))

    @property
    def kind(self):
        return "kthread" if self.flags & self._k.c["PF_KTHREAD_FLAG"] else "user"

    @property
    def is_idle(self):
        return bool(self.flags & self._k.c["PF_IDLE_FLAG"])

    @property
    def oopsed(self):
        return bool(self.flags & self._k.c["PF_OOPSED_FLAG"]) or self.tid in self._k.oopsed

    @property
    def stack_range(self):
        """(lowest, highest) address of the kernel stack; the guard page lies below."""
        return self.stack_top - self._k.c["KSTACK_SIZE_BYTES"], self.stack_top

    @property
    def state(self):
        raw = self._m.i32(self._field("state"))
        return self._k._task_states.get(raw, TaskState.CORRUPT)

    @property
    def kgr_in_progress(self):
        return bool(self._m.u8(self._field("kgr_in_progress")))

    @kgr_in_progress.setter
    def kgr_in_progress(self, value):
        self._m.set_u8(self._field("kgr_in_progress"), 1 if value else 0)

    @property
    def kgr_universe(self):
        return self._m.u8(self._field("kgr_universe"))

    @kgr_universe.setter
    def kgr_universe(self, value):
        self._m.set_u8(self._field("kgr_universe"), value)

    @property
    def make_it_fail(self):
        return bool(self._m.u8(self._field("make_it_fail")))

    @property
    def in_syscall(self):
        return bool(self._m.u8(self._field("in_syscall")))

    @property
    def exit_code(self):
        return self._m.i32(self._field("exit_code"))

    @property
    def stack_top(self):
        return self._m.u64(self._field("stack_top"))

    def _counter(self, name):
        return self._m.u64(self._field(name))

    @property
    def syscalls(self):
        return self._counter("nr_syscalls")

    @property
    def switches(self):
        return self._counter("nr_switches")

    @property
    def iterations(self):
        return self._counter("nr_iterations")

    @property
    def signals(self):
        return self._counter("nr_signals")

    @property
    def is_current(self):
        return self._k.current == self.tid

    def stack(self, limit=16):
        """The kernel call chain of a task that is switched out, innermost
        first, unwound through its frame pointers (the firmware keeps them)
        and through interrupt frames (a preempted task shows the function it
        was interrupted in)."""
        if self.is_current or self.state in (TaskState.UNUSED, TaskState.DEAD):
            return []
        return self.unwind(limit)[0]

    def unwind(self, limit=32, interrupt_only=False):
        """(kernel frames innermost first, reliable) for this task, running
        or not.  An interrupt frame on the way makes the stack unreliable, as
        upstream's reliable unwinder says: the interrupted function may not
        have pushed its frame yet; when it has not (its prologue has not
        run), the lab adds its caller, found at the top of the interrupted
        stack."""
        k, m, img = self._k, self._m, self._k.image
        lo, hi = self.stack_top - k.c["KSTACK_SIZE_BYTES"], self.stack_top
        if self.is_current:
            regs = m.regs()
            if img.in_user(regs["rip"]):
                return [], True
            frames, rbp = [regs["rip"]], regs["rbp"]
            caller = self._frameless_caller(regs)
            if caller is not None:
                frames.append(caller)
        elif self.state in (TaskState.UNUSED, TaskState.DEAD):
            return [], True
        else:
            sp = m.u64(self._field("thread_sp"))
            frames, rbp = [m.u64(sp + 7 * 8)], m.u64(sp + 5 * 8)
        reliable = True
        returns = k.interrupt_return_sites
        while len(frames) < limit and lo <= rbp < hi - 16:
            ret = m.u64(rbp + 8)
            if ret in returns:
                if interrupt_only:
                    break        # the interrupt context's own frames end at its entry
                regs_at = rbp + 16
                cs = m.u64(regs_at + k.c["PT_REGS_ip"] + 8)
                if cs & 3:
                    break        # interrupted user mode: the kernel stack ends here
                reliable = False
                ip, sp_int = m.u64(regs_at + k.c["PT_REGS_ip"]), m.u64(regs_at + k.c["PT_REGS_ip"] + 24)
                frames.append(ip)
                # interrupted before its prologue, a function has no frame
                # yet: its caller is at [rsp].  Only then: a word at [rsp] of
                # a function that has its frame may be a stale return address
                # of an earlier call, and would name a function not running.
                caller = self._frameless_caller({"rip": ip, "rsp": sp_int})
                if caller is not None:
                    frames.append(caller)
                rbp = m.u64(regs_at + 4 * 8)    # pt_regs.bp
                continue
            if k.function_name(ret) is None:
                break
            frames.append(ret)
            rbp = m.u64(rbp)
        return frames, reliable

    def _frameless_caller(self, regs):
        """gcc gives leaf functions no frame, even with frame pointers on:
        when RIP is in one that has pushed nothing so far, the return
        address into its caller is at [rsp], and the frame chain would skip
        that caller.  None when the function keeps a frame or pushed."""
        k, m = self._k, self._m
        rip, rsp = regs["rip"], regs["rsp"]
        func = k.image.function_at(rip)
        if func is None or not (self.stack_top - k.c["KSTACK_SIZE_BYTES"] <= rsp < self.stack_top):
            return None
        if _pushes(m.read(func.address, rip - func.address), func.address):
            return None
        ret = m.u64(rsp)
        return ret if k.function_name(ret) is not None else None

    def sleeps_in(self):
        """The function a sleeping task waits in: the first frame that is not the scheduler's."""
        for addr in self.stack():
            name = self._k.function_name(addr)
            if name and name not in _SCHEDULER_FUNCS:
                return name
        return None

    def __repr__(self):
        return f"<Task {self.tid} {self.name} {self.kind} {self.state.value}>"


class Kernel:
    """Boots an image on a machine and runs it slice by slice."""

    def __init__(self, image, machine, *, workload="default", seed=0, quantum=DEFAULT_QUANTUM, cmdline="",
                 replay_state=None):
        if not isinstance(quantum, int) or not QUANTUM_MIN <= quantum <= QUANTUM_MAX:
            raise KernelError(f"quantum {quantum!r} is out of range; use {QUANTUM_MIN:,} to {QUANTUM_MAX:,} "
                              "instructions per slice")
        image.workload(workload)  # refuses an unknown workload with the list of known ones
        self.image = image
        self.machine = machine
        self.workload = workload
        self.seed = seed
        self.quantum = quantum
        self.cmdline = f"workload={workload}" + (f" {cmdline}" if cmdline else "")
        self.log = ev.EventLog()
        self.c = c = _Consts(image)
        self.tasks_base = image.address("tasks")
        # what every tick, switch and system call reads, as plain attributes
        self._task_size = c["TASK_SIZE"]
        self._stack_top_field = c["TASK_stack_top"]
        self._nr_tasks_max = c["NR_TASKS_MAX"]
        self._user_cs, self._kernel_cs = c["USER_CS_SEL"], c["KERNEL_CS_SEL"]
        self._user_lo, self._user_hi = image.user_range
        self._task_states = {       # the state field's values (Task.state)
            c["TASK_STATE_UNUSED"]: TaskState.UNUSED,
            c["TASK_STATE_RUNNING"]: TaskState.RUNNING,
            c["TASK_STATE_INTERRUPTIBLE"]: TaskState.SLEEPING,
            c["TASK_STATE_DEAD"]: TaskState.DEAD,
        }
        self._current_task_ptr = image.address("current_task")
        self._irq_depth = image.address("irq_depth")
        self._irq_entry = image.address("common_interrupt")
        self._rng = random.Random(seed)
        self.current = 0
        self.booted = False
        self.panicked = None
        self.oopsed = set()
        self.oops_count = 0
        self._next_tick = None
        self._pending_signals = []
        self._forced = []           # instruction counts of forced preemptions still to come
        self._stall = 0
        self.slice_hooks = []      # fn() called after every slice, outside the emulator
        self.text_resolvers = []   # fn(address) -> function name or None, for text outside the image (modules)
        self.symbolizer = None     # fn(address) -> "name+off [module]", set by a higher layer that knows modules
        self.action_log = None     # list of (clock, seq, action, args) while a trace records
        self.syscall_watch = None  # fn(tid, nr) on every system call entry, while a trace records
        self._register()
        self._guard_stacks()
        start, end = self.image.address("_stext"), self.image.address("__end_rodata")
        self.machine.read_only(start, end - start)
        self.machine.hypercall_text = (start, self.image.address("_etext"))
        if replay_state is None:
            self._boot()
        else:
            self.restore_state(replay_state)

    # ---- boot ----
    def _boot(self):
        img, m = self.image, self.machine
        cmd = self.cmdline.encode()
        if len(cmd) >= 255:
            raise KernelError("the kernel command line is longer than 255 bytes; shorten it")
        with m.replayable():
            m.load(img.segments)
            m.write(img.address("boot_command_line"), cmd + b"\0")
            m.set_regs(rip=img.entry, rsp=0, rflags=0x2)
        self._next_tick = self.quantum

    def _guard_stacks(self):
        """A guard page below the kernel stack of every slot in use
        (KSTACK_GUARD in kernel.h): the CPU faults on it, the lab reports the
        overflow.  The first group's now (the idle task's among them), every
        other group's when a task is first created in it, before that task
        runs (_hc_task_new), as Linux sets up a vmap stack and its guard at
        fork: each guard is a Unicorn region of its own, and one for each of
        the NR_TASKS slots would make every boot about three times slower, for
        slots that most workloads never use."""
        self._guard_slot(0)

    def _guard_slot(self, tid):
        """Guard the kernel stacks of tid's group of slots (_GUARD_GROUP)."""
        c = self.c
        base, step = self.image.address("task_stacks"), c["KSTACK_SLOT_BYTES"]
        # asked of the machine, not remembered here: restoring a snapshot lifts
        # the guards set since it was taken
        if self.machine.in_guard_page(base + tid * step):
            return
        first = tid - tid % _GUARD_GROUP
        for slot in range(first, min(first + _GUARD_GROUP, self._nr_tasks_max)):
            if not self.machine.in_guard_page(base + slot * step):
                self.machine.guard(base + slot * step, c["KSTACK_GUARD_BYTES"])

    def _register(self):
        img, m = self.image, self.machine
        m.syscall_entry = img.address("entry_SYSCALL_64")
        c = self.c
        for name, fn in (
            ("HC_CONSOLE_NR", self._hc_console),
            ("HC_SWITCH_NR", self._hc_switch),
            ("HC_BOOTED_NR", self._hc_booted),
            ("HC_TASK_EXIT_NR", self._hc_task_exit),
            ("HC_PANIC_NR", self._hc_panic),
            ("HC_KALLSYMS_LOOKUP_NR", self._hc_kallsyms),
            ("HC_TASK_NEW_NR", self._hc_task_new),
        ):
            m.hypercalls[c[name]] = fn

    def watch_syscalls(self, fn):
        """Call fn(tid, number) on every system call entry (a trace or the checker)."""
        self.syscall_watch = fn
        self.machine.syscall_watch = self._on_syscall

    def _on_syscall(self, nr):
        self.syscall_watch(self.current, nr)

    def log_syscalls(self):
        """Add a SyscallEntry event to the log at every system call entry
        (what a trace and the checker watch): watch_syscalls() with the
        event made here, a Python call fewer on the hottest hook there is."""
        self.syscall_watch = None
        self.machine.syscall_watch = self._log_syscall

    def _log_syscall(self, nr):
        _POST_SYSCALL(self.log, self.machine.clock, self.current, nr)

    # ---- the scheduling state a trace keyframe needs besides CPU and RAM ----
    def snapshot_state(self):
        return {
            "current": self.current, "booted": self.booted, "panicked": self.panicked,
            "oopsed": sorted(self.oopsed), "next_tick": self._next_tick, "stall": self._stall,
            "oops_count": self.oops_count, "forced": list(self._forced),
            "pending_signals": [list(p) for p in self._pending_signals],
            "rng": _rng_to_json(self._rng.getstate()),
        }

    def restore_state(self, state):
        self.current = state["current"]
        self.booted = state["booted"]
        self.panicked = state["panicked"]
        self.oopsed = set(state["oopsed"])
        self._next_tick = state["next_tick"]
        self._stall = state["stall"]
        self.oops_count = state.get("oops_count", len(self.oopsed))
        self._forced = list(state.get("forced", ()))
        self._pending_signals = [tuple(p) for p in state["pending_signals"]]
        self._rng.setstate(_rng_from_json(state["rng"]))

    def _action(self, name, *args):
        if self.action_log is not None:
            self.action_log.append((self.machine.clock, name, list(args)))

    def replay_action(self, name, args):
        """Redo an action recorded in a trace (kick, signal, fault)."""
        if name == "signal":
            self._pending_signals.append((args[0], args[1], False))
        elif name == "kick":
            self._pending_signals.append((args[0], 0, bool(args[1])))
        elif name == "fault":
            self._inject(Task(self, args[0]))
        elif name == "preempt":
            self._forced = sorted(set(self._forced) | set(args))

    def on_hypercall(self, name, handler):
        """Answer hypercall HC_<name> with handler(a, b, c); a higher layer's hook."""
        self.machine.hypercalls[self.c[f"HC_{name}_NR"]] = handler

    def _schedule_order(self, nr_tasks):
        """The order schedule() walks tasks in: identity for seed 0, else a
        seeded permutation (idle stays first)."""
        order = list(range(1, nr_tasks))
        if self.seed:
            self._rng.shuffle(order)
        return [0] + order

    # ---- hypercalls (called from inside the emulator: record, answer, no decisions) ----
    def _hc_console(self, buf, length, level):
        length = min(length, 512)
        if not self.machine.guest_range_ok(buf, length):
            return -EFAULT
        text = self.machine.read(buf, length).decode("utf-8", "replace")
        self.log.add(ev.Console, self.machine.clock, tid=self.current, level=level, text=text)

    def _valid_tid(self, tid, what):
        if not 0 <= tid < self._nr_tasks_max:
            raise GuestFault(f"{what} {tid:#x} is no task")
        return tid

    def _hc_switch(self, prev, nxt, _):
        if prev != self.current:
            raise GuestFault(f"a switch away from task {prev:#x}, which is not running")
        if not 0 <= nxt < self._nr_tasks_max:
            self._valid_tid(nxt, "a switch to")
        _POST_SWITCH(self.log, self.machine.clock, prev, nxt)
        self.current = nxt

    def _hc_booted(self, *_):
        if self.booted:
            raise GuestFault("start_kernel() reported the end of boot twice")
        nr = self.machine.i32(self.image.address("nr_tasks"))
        order = self._schedule_order(nr)
        base = self.image.address("sched_order")
        for i, tid in enumerate(order):
            self.machine.set_u32(base + 4 * i, tid)
        self.booted = True
        self.log.add(ev.Booted, self.machine.clock, tasks=nr)

    def _hc_task_exit(self, tid, code, _):
        if tid != self.current:
            raise GuestFault(f"task {tid:#x} exiting is not the running task")
        self.log.add(ev.TaskExit, self.machine.clock, tid=tid, code=_signed32(code))

    def _hc_task_new(self, tid, *_):
        self._valid_tid(tid, "a new task")
        # the guard is in place before the task first runs: set inside the
        # hypercall, not after the slice (the new task may run in this one);
        # Unicorn applies a protection changed in a hook to the next access
        self._guard_slot(tid)
        # a slot is (re)used: what the lab remembered of its dead task is gone
        self.oopsed.discard(tid)
        self.log.add(ev.TaskNew, self.machine.clock, tid=tid)

    def _hc_panic(self, msg, *_):
        self.panicked = self.machine.guest_cstring(msg) or f"panic with a bad message pointer {msg:#x}"
        self.log.add(ev.Panic, self.machine.clock, message=self.panicked)
        self.machine.stop()

    def _hc_kallsyms(self, name_ptr, *_):
        name = self.machine.guest_cstring(name_ptr, 128)
        sym = self.image.lookup(name) if name else None
        return sym.address if sym else 0

    # ---- tasks ----
    @property
    def nr_tasks(self):
        return self.machine.i32(self.image.address("nr_tasks"))

    @property
    def tasks(self):
        return [Task(self, tid) for tid in range(self.nr_tasks)]

    def task(self, tid):
        if not isinstance(tid, int) or not 0 <= tid < self.nr_tasks:
            raise KernelError(f"no task {tid}; the tasks are 0..{self.nr_tasks - 1} (`lab run` lists them)")
        return Task(self, tid)

    def find(self, name):
        """The first task called name."""
        for t in self.tasks:
            if t.name == name:
                return t
        raise KernelError(f"no task named {name!r}; the tasks are: {', '.join(t.name for t in self.tasks)}")

    @property
    def interrupt_return_sites(self):
        sites = getattr(self, "_irq_sites", None)
        if sites is None:
            sites = self._irq_sites = {self.image.address("irq_return_site"),
                                       self.image.address("stop_return_site"),
                                       self.image.address("reschedule_return_site")}
        return sites

    @property
    def in_interrupt(self):
        return self.machine.i32(self._irq_depth) > 0

    @property
    def console(self):
        return [e.text for e in self.log.of(ev.Console)]

    @property
    def clock(self):
        return self.machine.clock

    # ---- things the lab does to the kernel from outside ----
    def send_signal(self, tid, sig):
        """Queue signal sig for task tid, as kill(2) would; it is posted at the
        next slice boundary where interrupts are on, then delivered by the
        task's own exit path."""
        task = self.task(tid)
        if not 0 < sig < 32:
            raise KernelError(f"signal {sig} is not a signal number (1..31)")
        if task.kind == "kthread":
            raise KernelError(f"task {tid} ({task.name}) is a kernel thread; kernel threads ignore signals")
        if task.state == TaskState.DEAD:
            raise KernelError(f"task {tid} ({task.name}) has exited")
        self._action("signal", tid, sig)
        self._pending_signals.append((tid, sig, False))

    def kick(self, tid, *, fake_signal):
        """Wake task tid: with fake_signal, TIF_SIGPENDING without a queued
        signal (kGraft's fake signal), else a plain wake-up (kernel threads)."""
        self.task(tid)
        self._action("kick", tid, fake_signal)
        self._pending_signals.append((tid, 0, fake_signal))

    def inject_fault(self, tid):
        """Fault injection.  A user task takes a real page fault at its next
        system call (make_it_fail).  A kernel thread, which makes none, takes
        one when schedule() next switches to it: the oops kills it
        and the others run on; for the idle task that is a panic, "Attempted
        to kill the idle task!", as in Linux."""
        task = self.task(tid)
        if task.state in (TaskState.DEAD, TaskState.UNUSED):
            raise KernelError(f"task {tid} ({task.name}) has exited; there is nothing to inject a fault into")
        self._action("fault", tid)
        self._inject(task)

    def _inject(self, task):
        # the firmware checks make_it_fail at system call entry, and for a
        # kernel thread when schedule() switches back to it
        with self.machine.replayable():
            self.machine.set_u8(task._field("make_it_fail"), 1)

    def _post_signals(self):
        with self.machine.replayable():
            self._post_signals_locked()

    def _post_signals_locked(self):
        m, c = self.machine, self.c
        for tid, sig, fake in self._pending_signals:
            task = Task(self, tid)
            if task.state == TaskState.DEAD:
                continue
            if sig:
                pend = task._field("sig_pending")
                m.set_u64(pend, m.u64(pend) | (1 << sig))
            if sig or fake:
                tf = task._field("thread_flags")
                m.set_u32(tf, m.u32(tf) | c["TIF_SIGPENDING_FLAG"])
            if task.state == TaskState.SLEEPING:   # wake_up_process()
                m.set_u32(task._field("state"), c["TASK_STATE_RUNNING"])
                m.set_u64(task._field("wakeup_at"), 0)
            self.log.add(ev.Signal, m.clock, tid=tid, sig=sig, fake=fake)
        self._pending_signals.clear()

    # ---- running ----
    def run(self, instructions=None, until=None):
        """Run for a number of instructions, or until until(kernel) is true
        (checked between slices), whichever comes first.  Returns the clock."""
        if instructions is None and until is None:
            raise KernelError("run() needs instructions=N or until=condition")
        end = self.clock + instructions if instructions is not None else None
        m = self.machine
        while True:
            if self.panicked:
                raise KernelPanic(f"kernel panic: {self.panicked}")
            if until is not None and until(self):
                break
            now = m.clock
            if end is not None and now >= end:
                break
            # A pending tick is retried every _STALL_CHUNK instructions counted
            # from when it fell due, so where run() is split changes nothing.
            # It is delivered before the next slice, not right after the last
            # one: slice hooks see the CPU as the task left it (interrupts on or
            # off), and a replay starting at a keyframe taken there does the same.
            due = self.tick_due_at() if self._stall else self._next_tick   # the 0th try is on time
            if self._forced and self._forced[0] <= due:
                if now >= self._forced[0]:
                    self._preempt()
                    continue
                due = self._forced[0]
            if now >= due:
                self._tick()
                continue
            stop = due if end is None or due < end else end
            try:
                m.run(stop - now)
            except MachineFault as fault:
                self._oops(fault)
            else:
                if m.halted and not self.panicked and not m.interrupts_enabled():
                    # nothing but an NMI wakes this CPU again: the watchdog's verdict now
                    self._hard_lockup(now, halted=True)
            for hook in self.slice_hooks:
                hook()
        return self.clock

    def tick_due_at(self):
        """When the pending tick is tried next (a replay asks it too)."""
        return self._next_tick + _stall_offset(self._stall)

    def _tick(self):
        """The timer fires: deliver it now if interrupts are on, else keep it
        pending and try again about _STALL_CHUNK instructions later.  The next try
        always lies ahead of the clock, so run() retires instructions between
        two tries whatever happened in between (an oops, a panic report)."""
        m = self.machine
        state = m.cpu_state()
        if not state[2] & 0x200:         # IF
            late = m.clock - self._next_tick
            k = late // _STALL_CHUNK
            self._stall = k if _stall_offset(k) > late else k + 1
            if late >= _LOCKUP_QUANTA * self.quantum:
                self._hard_lockup(self._next_tick)
            return
        self._stall = 0
        if self._pending_signals:
            self._post_signals()
        try:
            rip, user = self._interrupt(self._irq_entry, state, replayable=True)
        except InterruptLost:
            return
        now = m.clock
        _POST_IRQ(self.log, now, self.current, user, rip)
        jitter = self._rng.randint(-self.quantum // 8, self.quantum // 8) if self.seed else 0
        self._next_tick = now + self.quantum + jitter


    def preempt_at(self, clocks):
        """Force a preemption (a reschedule IPI) at each of these instruction
        counts: the running task is interrupted there and, if it may be
        preempted, switched out.  A schedule input, like the seed."""
        now = self.clock
        for at in clocks:
            if isinstance(at, bool) or not isinstance(at, int) or at <= now:
                raise KernelError(f"a preemption at {at!r} must be an instruction count after now ({now:,})")
        self._action("preempt", *clocks)
        self._forced = sorted(set(self._forced) | set(clocks))

    def _preempt(self):
        """Deliver the reschedule IPI due now; with interrupts off it stays
        pending and is retried about _STALL_CHUNK instructions later, at an
        irregular offset as the tick is (a fixed one could keep missing a
        loop's interrupts-on window)."""
        m = self.machine
        state = m.cpu_state()
        if not state[2] & 0x200:
            tries = m.clock // _STALL_CHUNK
            self._forced[0] = m.clock + _STALL_CHUNK + _STALL_JITTER[tries % len(_STALL_JITTER)]
            self._forced.sort()
            return
        self._forced.pop(0)
        try:
            rip, user = self._interrupt(self.image.address("reschedule_entry"), state, replayable=True)
        except InterruptLost:
            return
        self.log.post(ev.Preemption, m.clock, self.current, user, rip)

    def interrupt(self, entry, state=None):
        """Interrupt the running context into entry, as the CPU does: on the
        current task's kernel stack with a user CS when user mode was running
        (TSS.RSP0), on the current stack otherwise.  Returns (rip, user)."""
        return self._interrupt(entry, state or self.machine.cpu_state())

    def _interrupt(self, entry, state, replayable=False):
        """interrupt(); replayable: the kernel model redoes it on replay (a
        tick, a forced preemption), so its frame is no lab write."""
        m = self.machine
        rip = state[0]
        if self._user_lo <= rip < self._user_hi:
            # TSS.RSP0: the current task's stack_top (Task.stack_top)
            top = m.u64(self.tasks_base + self.current * self._task_size + self._stack_top_field)
            m.interrupt(entry, cs=self._user_cs, ss=self._user_cs - 8, stack=top, state=state,
                        replayable=replayable)
            return rip, True
        frame = (state[1] & ~0xF) - 40
        if not m.guest_can_write(frame, 40):
            # the CPU cannot push the interrupt frame: the page fault that
            # follows cannot be delivered either; Linux's double fault
            # handler dies, and the kernel panics
            where = self.symbolize(rip)
            self._panic(f"double fault: the stack pointer {state[1]:#x} at {where} is not writable memory",
                        [f"PANIC: double fault, error_code: 0x0 (rsp {state[1]:#x})", f"RIP: {where}"])
            raise InterruptLost()
        m.interrupt(entry, cs=self._kernel_cs, ss=self._kernel_cs + 8, state=state, replayable=replayable)
        return rip, False

    # ---- oops ----
    def function_name(self, address):
        """The function at address, in the image or in a loaded module, or None."""
        func = self.image.function_at(address)
        if func is not None:
            return func.name
        for resolve in self.text_resolvers:
            name = resolve(address)
            if name:
                return name
        return None

    def symbolize(self, address):
        """name+off, with [module] for module text, as an oops prints RIP."""
        if self.symbolizer is not None:
            return self.symbolizer(address)
        return self.image.symbolize(address)

    def _panic(self, message, lines=()):
        """The kernel cannot go on: print lines and the panic line, stop."""
        m = self.machine
        for line in (*lines, f"Kernel panic - not syncing: {message}"):
            self.log.add(ev.Console, m.clock, tid=self.current, level=0, text=line)
        self.panicked = message
        self.log.add(ev.Panic, m.clock, message=message)

    def _hard_lockup(self, since, halted=False):
        """The NMI watchdog's rule: no timer interrupt for too long with
        interrupts off is a hard lockup, and the lab panics on it."""
        m = self.machine
        task = Task(self, self.current)
        rip = m.reg("rip")
        where = self.symbolize(rip)
        how = "halted with interrupts off" if halted else \
            f"interrupts off for {m.clock - since:,} instructions"
        self._panic(f"Hard LOCKUP: {task.name}/{task.tid} {how} at {where}",
                    ["watchdog: Watchdog detected hard LOCKUP on cpu 0",
                     f"CPU: 0 PID: {task.tid} Comm: {task.name}",
                     f"RIP: {where}"])

    def _oops(self, fault):
        """A fault kills the task it happened in, as an oops does; the others
        run on.  Linux's rules for when it cannot: an oops in interrupt
        context or in the idle task panics, an oops of a task that is
        already dying is a recursive fault, too many oopses exceed
        kernel.oops_limit."""
        m, img = self.machine, self.image
        regs = m.regs()
        tid = self.current
        task = Task(self, tid)
        where = self.symbolize(fault.rip)
        lo, hi = task.stack_range
        if m.in_guard_page(fault.address) and lo - 2 * 4096 <= fault.address < hi:
            fault = MachineFault("kernel stack overflow", fault.rip, fault.address)
        self.oops_count += 1
        lines = self._oops_text(fault, task, regs, where)
        for line in lines:
            self.log.add(ev.Console, m.clock, tid=tid, level=0, text=line)
        code = tuple(self._code_around(fault.rip))
        self.log.add(ev.Oops, m.clock, tid=tid, reason=fault.kind, address=fault.address, rip=fault.rip,
                     where=where, regs=tuple((k, v) for k, v in regs.items()), code=code)
        if tid == 0 or task.is_idle or not self.booted:
            self._panic(f"Attempted to kill the idle task! ({fault.kind} at {where})" if self.booted
                        else f"Fatal exception in boot: {fault.kind} at {where}")
            return
        if self.in_interrupt:
            self._panic(f"Fatal exception in interrupt: {fault.kind} at {where}")
            return
        if task.oopsed:
            self._panic(f"Recursive fault: {task.name}/{tid} oopsed again while dying ({fault.kind} at {where})",
                        ["Fixing recursive fault but reboot is needed!"])
            return
        if self.oops_count >= OOPS_LIMIT:
            self._panic(f"Oopsed too often (kernel.oops_limit is {OOPS_LIMIT})")
            return
        self.oopsed.add(tid)
        # rewind_stack_and_make_dead: a fresh stack, interrupts off, then do_exit()
        with m.replayable():
            m.set_regs(rip=img.address("rewind_stack_and_make_dead"), rflags=0x2)

    def _oops_text(self, fault, task, regs, where):
        if fault.kind == "kernel stack overflow":
            lo, hi = task.stack_range
            head = (f"BUG: stack guard page was hit at {fault.address:#x} (stack is {lo:#x}..{hi:#x}): "
                    f"kernel stack overflow in {task.name}/{task.tid}")
        elif fault.address is not None:
            head = f"BUG: unable to handle page fault for address: {fault.address:016x}"
        else:
            head = f"BUG: {fault.kind}"
        lines = [head, f"Oops: {fault.kind} [#{self.oops_count}]",
                 f"CPU: 0 PID: {task.tid} Comm: {task.name}",
                 f"RIP: {where}"]
        names = list(regs)
        for i in range(0, 16, 3):
            lines.append(" ".join(f"{n.upper()}: {regs[n]:016x}" for n in names[i:i + 3]))
        lines.append("Code: " + "; ".join(self._code_around(fault.rip)))
        return lines

    def _code_around(self, rip, before=3, after=2):
        img, m = self.image, self.machine
        func = img.function_at(rip)
        start = func.address if func else rip
        try:
            code = m.read(start, max(rip - start, 0) + 32)
        except Exception:
            return [f"{rip:#x}: <unreadable>"]
        insns = disassemble(code, start, symbolize=img.symbolize)
        idx = next((i for i, x in enumerate(insns) if x.address >= rip), len(insns))
        out = []
        for x in insns[max(0, idx - before): idx + after + 1]:
            mark = "<" if x.address == rip else " "
            out.append(f"{mark}{self.symbolize(x.address)}: {x.text}")
        return out


class _Consts(dict):
    """The firmware's exported constants (asm-offsets.c), read once: a
    dict that fills itself, so a lookup of one already read is a plain
    dict lookup."""

    def __init__(self, image):
        super().__init__()
        self._img = image

    def __missing__(self, name):
        v = self[name] = self._img.const(name)
        return v


@functools.lru_cache(maxsize=4096)
def _pushes(code, address):
    """Whether code, the first bytes of a function at address, pushes,
    calls, enters or moves rsp down (Task._frameless_caller).  A function
    of the bytes alone, so kept: a stack is unwound at every move of a
    task, and the same few prologues come up again and again."""
    for insn in disassemble(code, address):
        if insn.mnemonic in ("push", "call", "enter") or (insn.mnemonic == "sub" and
                                                          insn.operands.startswith("rsp")):
            return True
    return False


def _rng_to_json(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_from_json(state):
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def _signed32(v):
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v
