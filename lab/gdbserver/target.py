"""target - a recorded trace as a debug target: the step it stands at, tasks as threads, registers, memory, breakpoints.

Time is the trace's step (instructions retired since power-on), one CPU for
every task: stepping moves the whole machine by one retired instruction, as
rr's replay moves its one recorded timeline; stepping a switched-out task
runs the machine until that task has run one instruction.  Breakpoints are
kept here and found by watching the replay (code hooks at their addresses),
never written into guest memory, so a replay stays the verified replay of
the recording; watchpoints look at every step.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ..disasm import disassemble
from ..errors import LabError
from ..kernel import TaskState
from ..machine import RAM_BASE, RAM_END

# How far one pass of a scan runs before it looks at its hits and at gdb's
# Ctrl-C: short enough to stop promptly, long enough that seeking costs little.
SCAN_CHUNK = 200_000
# A scan with watchpoints looks at every step; it looks for Ctrl-C this often.
WATCH_POLL = 10_000

# The frame __switch_to_asm leaves on a switched-out task's stack (firmware/
# entry.S): pushfq, rbp, rbx, r12..r15, then the return address of the call.
_SAVED = struct.Struct("<8Q")
_SAVED_ORDER = ("r15", "r14", "r13", "r12", "rbx", "rbp", "rflags", "rip")

# gdb's amd64 register numbering (its org.gnu.gdb.i386.core feature):
# (name, bits, type).  The lab models the general registers; the segment and
# x87 registers are described so gdb accepts the layout, and read as
# unavailable.
REGISTERS = (
    [(n, 64, "int64") for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi")]
    + [("rbp", 64, "data_ptr"), ("rsp", 64, "data_ptr")]
    + [(f"r{i}", 64, "int64") for i in range(8, 16)]
    + [("rip", 64, "code_ptr"), ("eflags", 32, "i386_eflags")]
    + [(n, 32, "int32") for n in ("cs", "ss", "ds", "es", "fs", "gs")]
    + [(f"st{i}", 80, "i387_ext") for i in range(8)]
    + [(n, 32, "int") for n in ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")]
)
REGISTER_NUMBER = {name: i for i, (name, _bits, _type) in enumerate(REGISTERS)}


class Stop(enum.Enum):
    """Why the target stopped after a resume."""
    STEP = "step"              # one instruction done
    BREAKPOINT = "breakpoint"  # at a breakpoint's address
    WATCH = "watch"            # a watched range changed (TraceTarget.watch_hit says which)
    END = "end"                # the recording ends here
    BEGIN = "begin"            # the recording begins here
    INTERRUPT = "interrupt"    # gdb's Ctrl-C


class TargetError(LabError):
    """What the recorded target cannot do: a thread it does not have at this step."""


@dataclass(frozen=True)
class Thread:
    """A task as gdb sees it: gdb's thread id is the tid plus one, as gdb
    reserves 0 (any thread) and -1 (all)."""
    tid: int
    name: str
    kind: str
    state: str
    universe: int

    @property
    def gdb_id(self):
        return self.tid + 1

    @property
    def extra_info(self):
        return f"{self.name}, tid {self.tid}, {self.kind}, {self.state}, universe {self.universe}"


class TraceTarget:
    """The replayed trace at one step, moved forwards and backwards."""

    def __init__(self, trace):
        self.trace = trace
        self.replayer = trace.replayer()
        self.breakpoints = set()
        self.watchpoints = {}          # address -> length: write watchpoints, by the bytes' value
        self.watch_hit = None          # the watched address of the last WATCH stop
        self._seek(trace.start)

    def close(self):
        self.replayer.close()

    @property
    def step(self):
        return self.replayer.clock

    @property
    def _machine(self):
        return self.replayer.machine

    @property
    def _kernel(self):
        return self.replayer.kernel

    def _seek(self, step):
        self.replayer.seek(step)

    def goto(self, step):
        """Stand at step (clamped to the recording)."""
        self._seek(step)

    def rip(self):
        return self._machine.reg("rip")

    # ---- threads ----
    def cpu_tid(self):
        """The task the CPU runs now: the one whose kernel stack holds rsp
        (between the switch hypercall and __switch_to_asm's stack switch the
        kernel already names the next task, the CPU still runs the previous
        one), else the kernel's current task (user mode, early boot)."""
        k = self._kernel
        rsp = self._machine.reg("rsp")
        try:
            for task in k.tasks:
                lo, hi = task.stack_range
                if lo <= rsp < hi and task.state in (TaskState.RUNNING, TaskState.SLEEPING):
                    return task.tid
        except LabError:
            pass
        return k.current

    def threads(self):
        """The live tasks, and always the one the CPU runs (before the first
        task exists that is task 0, the boot CPU)."""
        k, m = self._kernel, self._machine
        cpu = self.cpu_tid()
        out = []
        try:
            tasks = k.tasks
        except LabError:
            tasks = []
        seen = set()
        for task in tasks:
            try:
                state = task.state
                if task.tid != cpu and state not in (TaskState.RUNNING, TaskState.SLEEPING):
                    continue
                out.append(Thread(task.tid, task.name or f"task {task.tid}", task.kind,
                                  "oopsed" if task.oopsed else state.value, m.u8(task._field("kgr_universe"))))
                seen.add(task.tid)
            except LabError:
                continue
        if cpu not in seen:
            out.append(Thread(cpu, "swapper/0" if cpu == 0 else f"task {cpu}", "kthread", "running", 0))
        return sorted(out, key=lambda t: t.tid)

    def thread(self, tid):
        for t in self.threads():
            if t.tid == tid:
                return t
        raise TargetError(f"no task {tid} at step {self.step:,}")

    # ---- registers ----
    def registers(self, tid):
        """{gdb register name: value}, None for a register the lab does not
        have: the CPU's for the task it runs, the frame __switch_to_asm saved
        for a switched-out task (the callee-saved registers, the flags and
        where it resumes; the others are not kept anywhere)."""
        regs = dict.fromkeys(name for name, _bits, _type in REGISTERS)
        m = self._machine
        if tid == self.cpu_tid():
            live = m.regs()
            for name in REGISTER_NUMBER:
                if name in live:
                    regs[name] = live[name]
            regs["eflags"] = live["rflags"] & 0xFFFFFFFF
            return regs
        task = self._kernel.task(tid)
        try:
            sp = m.u64(task._field("thread_sp"))
            saved = dict(zip(_SAVED_ORDER, _SAVED.unpack(m.read(sp, _SAVED.size))))
        except LabError:
            return regs
        regs.update(saved)
        regs["eflags"] = regs.pop("rflags") & 0xFFFFFFFF
        regs["rsp"] = sp + _SAVED.size
        return regs

    # ---- memory ----
    def read_memory(self, address, length):
        """The bytes from address on, as far as the CPU could read them
        (RAM, not a guard page or free module space); b"" if it could not
        read the first."""
        m = self._machine
        end = min(address + length, RAM_END)
        if address < RAM_BASE or address >= end:
            return b""
        for lo, hi in m.guard_pages:
            if lo <= address < hi:
                return b""
            if address < lo < end:
                end = lo
        return m.read(address, end - address)

    # ---- moving in time ----
    def step_forward(self):
        if self.step >= self.trace.end:
            return Stop.END
        self._seek(self.step + 1)
        return Stop.STEP

    def step_backward(self):
        if self.step <= self.trace.start:
            return Stop.BEGIN
        self._seek(self.step - 1)
        return Stop.STEP

    def step_thread(self, tid, interrupted=lambda: False):
        """One instruction of task tid, as gdb's `vCont;s:TID;c` asks: the
        task steps, the others run on.  The task the CPU runs steps with the
        machine, unless that instruction switched it out (the load of the
        next task's stack pointer in __switch_to_asm): then it stops where
        the task comes back, about to pop what it saved.  A switched-out
        task runs its next instruction once the replay has resumed it into
        the state its saved frame shows (registers()): it stops one step
        after that.  A breakpoint or a watched change on the way stops
        first."""
        if self.step >= self.trace.end:
            return Stop.END
        switch = self._switch()
        if tid == self.cpu_tid():
            saved_sp = self._thread_sp(tid)
            self._seek(self.step + 1)
            if switch is None or saved_sp is None or self.cpu_tid() == tid or self.step >= self.trace.end:
                return Stop.STEP
            if self.rip() in self.breakpoints:
                return Stop.BREAKPOINT
            back_sp = self._machine.u64(saved_sp)
            return self._run_until(switch[1], back_sp.__eq__, 0, interrupted)
        self.thread(tid)
        regs = self.registers(tid)
        if None in (regs["rip"], regs["rsp"]):       # no saved frame to resume from: the machine steps
            return self.step_forward()
        return self._run_until(regs["rip"], regs["rsp"].__eq__, 1, interrupted)

    def step_thread_backward(self, tid):
        """One instruction of task tid back (gdb's `bs` after `Hc`): the
        step before this one if the task ran it; else, as the task came
        back to the CPU at this step or is switched out, the load in
        __switch_to_asm where it last left the CPU (found on its stack)."""
        here = self.step
        if here <= self.trace.start:
            return Stop.BEGIN
        switch = self._switch()
        if tid == self.cpu_tid():
            self._seek(here - 1)
            if switch is None or self.cpu_tid() == tid:
                return Stop.STEP
        else:
            self.thread(tid)
        try:
            lo, hi = self._kernel.task(tid).stack_range
        except LabError:
            lo = hi = None
        found = None if lo is None else self._last_before(here - 1, switch[0], lambda sp: lo <= sp < hi)
        if found is None:
            self._seek(here)
            return Stop.BEGIN
        self._seek(found)
        return Stop.STEP

    def _switch(self):
        """(the address of __switch_to_asm's load of the next task's stack
        pointer, the address after it): where a task leaves the CPU, and
        where it comes back.  None if the image has no such instruction."""
        if not hasattr(self, "_switch_at"):
            self._switch_at = None
            img = self.trace.image
            sym = img.lookup("__switch_to_asm")
            if sym is not None:
                field = f"+ {img.const('TASK_thread_sp'):#x}]"
                for insn in disassemble(img.read(sym.address, sym.size), sym.address):
                    if insn.mnemonic == "mov" and insn.operands.startswith("rsp, qword ptr [") \
                            and insn.operands.endswith(field):
                        self._switch_at = (insn.address, insn.address + insn.size)
        return self._switch_at

    def _thread_sp(self, tid):
        """The address of the task's saved stack pointer (task_struct.thread.sp), or None."""
        try:
            return self._kernel.task(tid)._field("thread_sp")
        except LabError:
            return None

    def _run_until(self, address, sp_test, after, interrupted):
        """Forward to the first step after this one where RIP is address
        and rsp passes sp_test, and `after` steps more; a breakpoint or a
        watched change on the way stops first."""
        resume = (address, sp_test)
        if self.watchpoints:
            return self._watch_forward(interrupted, resume, after)
        hits, resumed, stopped = self._scan(self.step + 1, self.trace.end, first=True, interrupted=interrupted,
                                            resume=resume)
        if not (hits or resumed):
            return Stop.INTERRUPT if stopped else Stop.END
        at = min(hits | resumed)
        if at in hits:
            self._seek(at)
            return Stop.BREAKPOINT
        return self._seek_or_end(at + after)

    def _last_before(self, hi, address, sp_test):
        """The last step at or before hi where RIP is address and rsp passes
        sp_test, keyframe interval by keyframe interval, the latest first; or None."""
        t = self.trace
        while hi >= t.start:
            lo = max(t.keyframe_for(hi).at, t.start)
            _, resumed, _ = self._scan(lo, hi, first=False, interrupted=lambda: False, resume=(address, sp_test),
                                       points=set())
            if resumed:
                return max(resumed)
            hi = lo - 1
        return None

    def _seek_or_end(self, step):
        if step > self.trace.end:
            self._seek(self.trace.end)
            return Stop.END
        self._seek(step)
        return Stop.STEP

    def continue_forward(self, interrupted=lambda: False):
        """On to the next step after this one whose RIP is a breakpoint, or
        where a watched range has just changed, or the end."""
        start = self.step
        if start >= self.trace.end:
            return Stop.END
        if self.watchpoints:
            return self._watch_forward(interrupted)
        hits, _, stopped = self._scan(start + 1, self.trace.end, first=True, interrupted=interrupted)
        if hits:
            self._seek(min(hits))
            return Stop.BREAKPOINT
        return Stop.INTERRUPT if stopped else Stop.END

    def continue_backward(self, interrupted=lambda: False):
        """Back to the last step before this one whose RIP is a breakpoint, or
        whose instruction changes a watched range, or the start: each keyframe
        interval is scanned forward from its keyframe, the latest first, so
        going back costs what the way back covers, not the whole trace."""
        t = self.trace
        hi = self.step - 1
        after = self._watched()          # the watched bytes at hi + 1
        while hi >= t.start and (self.breakpoints or self.watchpoints):
            lo = max(t.keyframe_for(hi).at, t.start)
            if self.watchpoints:
                found, after = self._watch_backward(lo, hi, after, interrupted)
                if found is not None:
                    step, stop = found
                    self._seek(step)
                    return stop
            else:
                hits, _, _ = self._scan(lo, hi, first=False, interrupted=lambda: False)
                if hits:
                    self._seek(max(hits))
                    return Stop.BREAKPOINT
            if interrupted():
                self._seek(lo)
                return Stop.INTERRUPT
            hi = lo - 1
        self._seek(t.start)
        return Stop.BEGIN

    # ---- watchpoints: every step looked at, so no change is missed ----
    def _watched(self):
        return [(a, self.read_memory(a, n)) for a, n in sorted(self.watchpoints.items())]

    def _changed(self, before, after):
        for (address, old), (_a, new) in zip(before, after):
            if old != new:
                return address
        return None

    def _watch_forward(self, interrupted, resume=None, after=1):
        """Step by step: a watched range that changed, like a watchpoint
        that fires after the writing instruction retired; a breakpoint; with
        resume (an address and a test of rsp), `after` steps after the first
        step there (_run_until)."""
        before, end = self._watched(), self.trace.end
        while self.step < end:
            self._seek(self.step + 1)
            now = self._watched()
            address = self._changed(before, now)
            if address is not None:
                self.watch_hit = address
                return Stop.WATCH
            rip = self.rip()
            if rip in self.breakpoints:
                return Stop.BREAKPOINT
            if resume is not None and rip == resume[0] and resume[1](self._machine.reg("rsp")):
                return self._seek_or_end(self.step + after)
            before = now
            if self.step % WATCH_POLL == 0 and interrupted():
                return Stop.INTERRUPT
        return Stop.END

    def _watch_backward(self, lo, hi, after, interrupted):
        """The last step in lo..hi whose RIP is a breakpoint or whose
        instruction changes a watched range (going back, gdb stops before the
        write), as ((step, Stop) or None, the watched bytes at lo); after:
        the watched bytes at hi + 1.  On Ctrl-C, (hi + 1, INTERRUPT): the
        way back is known to be clear only up to there."""
        found = None
        self._seek(lo)
        first = before = self._watched()
        for step in range(lo, hi + 1):
            rip = self.rip()
            if step < hi:
                self._seek(step + 1)
                now = self._watched()
            else:
                now = after
            address = self._changed(before, now)
            if address is not None:
                found, self.watch_hit = (step, Stop.WATCH), address
            elif rip in self.breakpoints:
                found = (step, Stop.BREAKPOINT)
            before = now
            if step % WATCH_POLL == 0 and interrupted():
                return (hi + 1, Stop.INTERRUPT), first
        return found, first

    def _scan(self, lo, hi, *, first, interrupted, resume=None, points=None):
        """The steps in lo..hi where RIP is a breakpoint (or one of points),
        and those where RIP is resume's address and rsp passes its test: a
        code hook at each address notes
        the steps the replay runs it at, and every place a pass ends is
        looked at directly.  A pass never crosses a keyframe by more than one
        step: seeking onto a keyframe restores it rather than running into
        it, so the step before is looked at directly.  (breakpoint steps,
        resume steps, interrupted); with first, it stops at the first pass
        with either."""
        m, t = self._machine, self.trace
        points = {a for a in (self.breakpoints if points is None else points) if RAM_BASE <= a < RAM_END}
        hits, resumed = set(), set()
        if hi < lo:
            return hits, resumed, False
        back_at, sp_test = resume or (None, None)

        def look(now, address, rsp):
            if address in points:
                hits.add(now)
            if address == back_at and sp_test(rsp()):
                resumed.add(now)

        def seen(address):
            now = m.clock
            if lo <= now <= hi:
                look(now, address, lambda: m.reg("rsp"))

        watched = points | ({back_at} if resume else set())
        handles = [m.add_code_hook(a, seen) for a in sorted(watched) if RAM_BASE <= a < RAM_END]
        try:
            at = lo
            self._seek(at)
            while True:
                look(at, self.rip(), lambda: m.reg("rsp"))
                if at >= hi or (first and (hits or resumed)):
                    return hits, resumed, False
                if interrupted():
                    return hits, resumed, True
                following = t.keyframe_for(at).index + 1
                target = min(at + SCAN_CHUNK, hi)
                if following < len(t.keyframes):
                    boundary = t.keyframes[following].at
                    target = min(target, boundary - 1 if at < boundary - 1 else boundary)
                self._seek(target)
                at = target
        finally:
            for handle in handles:
                m.remove_code_hook(handle)
