"""index - what the events of a trace tell without replaying: who ran when, universes over time, where things happened.

Step N is the machine after N instructions retired and the work due between
two slices at N (a timer tick: lab.trace.settle); the instruction shown at
step N is the one about to run.  An event stamped `at` was caused by the
instruction about to run at step `at` (a hypercall), or happened between two
slices at that clock (a tick, a lab action), so step `at` is where a person
wants to land for it.  A ContextSwitch stamped `at` is the hypercall in
schedule(): the kernel's `current` is still `prev` at step `at` and is `next`
from step `at + 1`.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from ..errors import LabError

IRQ = -1                 # the interrupt context's lane (Migrated.tid == -1)
IDLE = 0                 # the idle task: not tracked by a transition, set to the target at its start
_PREEMPT_WINDOW = 2_000  # an interrupt this close before a switch is what caused it (preempt_schedule_irq)


class ViewerError(LabError):
    """A step, task or function the viewer was asked for does not exist in the trace."""


@dataclass(frozen=True)
class Span:
    """A stretch of a lane: steps [start, end) spent in one universe and one CPU state."""

    start: int
    end: int
    universe: str      # "old" | "new" | "none" (the task did not exist, or exited)
    cpu: str           # "running" (on the CPU) | "runnable" (preempted) | "sleeping" | "dead" | "none"


@dataclass(frozen=True)
class Mark:
    """Something to point at on the timeline."""

    at: int
    tid: int | None    # None: the whole machine (a patch changing state)
    kind: str          # "migrated" | "signal" | "fake-signal" | "wake-up" | "patch" | "oops" | "exit"
    label: str         # by (migrated), state (patch), reason (oops)
    text: str          # the tooltip: a sentence


class TraceIndex:
    """Lookups over a trace's events: the running task at a step, a task's
    previous and next step on the CPU, the next event of a kind, function
    calls, the console, and each task's lane (universe and CPU state) over time."""

    def __init__(self, trace):
        self.trace = trace
        self.events = trace.events
        self.start, self.end = trace.start, trace.end
        self._ats = [e.at for e in self.events]
        self.names = {t["tid"]: t["name"] for t in trace.header.get("tasks", ())}
        self.kinds = {t["tid"]: t["kind"] for t in trace.header.get("tasks", ())}
        self.switches = [e for e in self.events if e.kind == "switch"]
        self._switch_ats = [e.at for e in self.switches]
        self._console = [e for e in self.events if e.kind == "console"]
        self._console_ats = [e.at for e in self._console]
        self._console_lines = []     # lines printed up to and including each console event
        for e in self._console:
            self._console_lines.append((self._console_lines[-1] if self._console_lines else 0) + len(_lines(e.text)))
        self._transitions = [e for e in self.events if e.kind == "patch" and e.state in ("transition", "reverting")]
        self._oncpu = self._on_cpu_intervals()
        # the recorder hooks a patched function's old and new bodies when its first transition starts
        functions = {p["name"]: [f[0] for f in p.get("functions", ())] for p in trace.header.get("patches", ())}
        self._watched_from = {}
        for e in self._transitions:
            for old_name in functions.get(e.name, ()):
                self._watched_from.setdefault(old_name, e.at)
        self._lanes = None

    # ---- steps ----
    def check_step(self, step):
        if not isinstance(step, int) or not self.start <= step <= self.end:
            raise ViewerError(f"{self.trace.path}: step {step} is outside the trace, which holds steps "
                              f"{self.start:,}..{self.end:,}")
        return step

    def parse_step(self, text, here=None):
        """A step from what a person types: 1234567, 1_234_567, 1,234,567, 5e6, 50% (of the run),
        +1000 / -1000 (relative to `here`)."""
        s = str(text).strip().replace("_", "").replace(",", "")
        try:
            if s.endswith("%"):
                frac = float(s[:-1]) / 100
                if not 0 <= frac <= 1:
                    raise ValueError
                step = self.start + round((self.end - self.start) * frac)
            elif s[:1] in "+-" and here is not None and len(s) > 1:
                step = here + (1 if s[0] == "+" else -1) * int(float(s[1:]))
            else:
                step = int(float(s)) if ("e" in s.lower() or "." in s) else int(s)
        except (ValueError, OverflowError):
            raise ViewerError(f"{text!r} is not a step: give an instruction count (1234567, 5e6), "
                              "a percentage of the run (50%) or +N / -N") from None
        return self.check_step(step)

    # ---- who is on the CPU ----
    def current_at(self, step):
        """The kernel's current task at step (before any switch: the idle task)."""
        i = bisect.bisect_left(self._switch_ats, step) - 1
        return self.switches[i].next if i >= 0 else IDLE

    def _on_cpu_intervals(self):
        """tid -> sorted list of [first, last] steps (inclusive) at which it is current."""
        out = {}
        tid, first = IDLE, self.start
        for sw in self.switches:
            if sw.at >= first:
                out.setdefault(tid, []).append((first, sw.at))
            tid, first = sw.next, sw.at + 1
        if first <= self.end:
            out.setdefault(tid, []).append((first, self.end))
        return out

    def on_cpu(self, tid):
        return self._oncpu.get(tid, [])

    def previous_step_of(self, tid, step):
        """The last step before `step` at which tid was current, or None."""
        spans = self._oncpu.get(tid, [])
        i = bisect.bisect_left(spans, (step,)) - 1      # spans starting before step
        if i < 0:
            return None
        first, last = spans[i]
        return min(last, step - 1)

    def next_step_of(self, tid, step):
        """The first step after `step` at which tid is current, or None."""
        spans = self._oncpu.get(tid, [])
        i = bisect.bisect_right(spans, (step, float("inf"))) - 1
        if i >= 0 and spans[i][1] > step:
            return step + 1
        i += 1
        return spans[i][0] if i < len(spans) else None

    # ---- events ----
    def event_index(self, step):
        """How many events happened before step (those stamped `step` come after)."""
        return bisect.bisect_left(self._ats, step)

    def near(self, step, before=6, after=6):
        """(index, event) pairs around step: `before` earlier ones, then those at step and `after` later ones."""
        i = self.event_index(step)
        j = bisect.bisect_right(self._ats, step)
        lo, hi = max(0, i - before), min(len(self.events), j + after)
        return [(k, self.events[k]) for k in range(lo, hi)]

    def next_event(self, step, match=None):
        """The first event after step (at > step) that match(event) accepts, or None."""
        for k in range(bisect.bisect_right(self._ats, step), len(self.events)):
            e = self.events[k]
            if match is None or match(e):
                return e
        return None

    def previous_event(self, step, match=None):
        """The last event before step (at < step) that match(event) accepts, or None."""
        for k in range(bisect.bisect_left(self._ats, step) - 1, -1, -1):
            e = self.events[k]
            if match is None or match(e):
                return e
        return None

    @staticmethod
    def is_safe_point_or_signal(e):
        return e.kind in ("migrated", "signal")

    @staticmethod
    def concerns(e, tid):
        """Whether event e is about task tid (a follow mode's filter)."""
        if e.kind == "switch":
            return tid in (e.prev, e.next)
        if e.kind == "patch":
            return True
        return getattr(e, "tid", None) == tid

    def console_until(self, step, last=None):
        """The console lines printed before the instruction at step runs (the `last` of them
        if given), and how many there are in all."""
        n = bisect.bisect_left(self._console_ats, step)
        total = self._console_lines[n - 1] if n else 0
        first = 0 if last is None else max(0, bisect.bisect_left(self._console_lines, total - last) - 1)
        lines = []
        for e in self._console[first:n]:
            lines.extend(_lines(e.text))
        return (lines if last is None else lines[-last:] if last else []), total

    def transition_started(self, step):
        """Whether a patching or unpatching transition had begun by step (before: every task is 'old')."""
        return bool(self._transitions) and self._transitions[0].at <= step

    def task_name(self, tid):
        if tid == IRQ:
            return "interrupts"
        return self.names.get(tid, f"task {tid}")

    # ---- function calls ----
    def function_address(self, name):
        """Where function `name` starts: the kernel's symbols, then the recorded modules'."""
        img = self.trace.image
        sym = img.lookup(name)
        if sym is not None and sym.kind == "func":
            return sym.address
        for mod in self.trace.header.get("modules", ()):
            for fname, start, _size in mod["functions"]:
                if fname == name:
                    return start
        close = sorted(f.name for f in img.functions if name.lower() in f.name.lower())[:5]
        hint = f"; did you mean {', '.join(close)}?" if close else "; `lab symbols` lists the kernel's"
        raise ViewerError(f"no function {name!r} in {img.path.name} or the modules of {self.trace.path.name}{hint}")

    def call_events_for(self, name):
        """How the trace's FuncEntry events name calls of `name`: ((function, version or None),
        the step from which the recorder watched it), or (None, None) if it never did."""
        for p in self.trace.header.get("patches", ()):
            for old_name, _old, new_name, _new in p.get("functions", ()):
                if name in (old_name, new_name):
                    return (old_name, None if name == old_name else "new"), self._watched_from.get(old_name)
        return None, None

    def next_call_event(self, name, step):
        """The next recorded FuncEntry of `name` after step, and from when such events are complete."""
        key, watched_from = self.call_events_for(name)
        if key is None:
            return None, None
        function, version = key
        # a task already inside an old function when a transition starts gets a FuncEntry stamped
        # then; it is no call, so only entries by the task on the CPU (or in an interrupt) count
        e = self.next_event(step, lambda e: e.kind == "call" and e.function == function
                            and (version is None or e.version == version)
                            and (e.in_irq or self.current_at(e.at) == e.tid))
        return e, watched_from

    # ---- lanes (the timeline) ----
    def lanes(self):
        """tid -> list of Span covering [start, end], for every task and the interrupt context (IRQ)."""
        if self._lanes is None:
            self._lanes = self._build_lanes()
        return self._lanes

    def _build_lanes(self):
        tids = sorted(self.names) or sorted(self._oncpu)
        universe = {tid: "old" for tid in tids}
        universe[IRQ] = "old"
        cpu = {tid: ("running" if tid == IDLE else "none") for tid in tids}
        cpu[IRQ] = "none"
        exited = set()
        last_irq = {}
        changes = []   # (at, tid, universe, cpu) in event order

        def put(at, tid, u=None, c=None):
            if u is not None:
                universe[tid] = u
            if c is not None:
                cpu[tid] = c
            changes.append((at, tid, universe[tid], cpu[tid]))

        for tid in tids:
            put(self.start, tid)
        put(self.start, IRQ)
        for e in self.events:
            k = e.kind
            if k == "booted":
                for tid in tids:
                    if cpu[tid] == "none" and tid not in exited:
                        put(e.at, tid, c="runnable")
            elif k == "irq":
                last_irq[e.tid] = e.at
            elif k == "switch":
                preempted = e.at - last_irq.get(e.prev, -_PREEMPT_WINDOW - 1) <= _PREEMPT_WINDOW
                if e.prev not in exited:
                    put(e.at + 1, e.prev, c="runnable" if preempted else "sleeping")
                put(e.at + 1, e.next, c="running")
            elif k == "syscall":
                last_irq.pop(e.tid, None)   # a system call after the tick: the switch is the task's own
            elif k == "exit":
                exited.add(e.tid)
                put(e.at, e.tid, u="none", c="dead")
            elif k == "patch" and e.state in ("transition", "reverting"):
                if e.detail == "reversed":
                    # the target flipped: who had moved must move back, the others are there already
                    for tid in list(tids) + [IRQ]:
                        if universe[tid] in ("old", "new"):
                            put(e.at, tid, u="new" if universe[tid] == "old" else "old")
                else:
                    for tid in tids:
                        if tid not in exited:
                            put(e.at, tid, u="new" if tid == IDLE else "old")
                    put(e.at, IRQ, u="old")
            elif k == "patch" and e.state in ("complete", "reverted"):
                for tid in list(tids) + [IRQ]:
                    if tid not in exited:
                        put(e.at, tid, u="new")
            elif k == "migrated":
                if e.tid not in exited:
                    put(e.at, e.tid, u="new")
        return {tid: _spans(self.start, self.end, [c for c in changes if c[1] == tid]) for tid in tids + [IRQ]}

    def marks(self):
        """The points of interest: safe-point migrations, signals, patch state changes, oopses, exits."""
        out = []
        name = self.task_name
        for e in self.events:
            k = e.kind
            if k == "migrated":
                out.append(Mark(e.at, e.tid, "migrated", e.by,
                                f"{name(e.tid)} moved to universe {e.universe} ({e.by}) at step {e.at:,}"))
            elif k == "signal":
                if e.fake:
                    kind, text = "fake-signal", f"fake signal to {name(e.tid)}"
                elif e.sig:
                    kind, text = "signal", f"signal {e.sig} to {name(e.tid)}"
                else:
                    kind, text = "wake-up", f"wake-up of {name(e.tid)}"
                out.append(Mark(e.at, e.tid, kind, kind, f"{text} at step {e.at:,}"))
            elif k == "patch":
                detail = f" ({e.detail})" if e.detail else ""
                out.append(Mark(e.at, None, "patch", e.state,
                                f"patch '{e.name}': {e.state}{detail} at step {e.at:,}"))
            elif k == "oops":
                out.append(Mark(e.at, e.tid, "oops", e.reason, f"oops in {name(e.tid)}: {e.reason} at {e.where}"))
            elif k == "exit":
                out.append(Mark(e.at, e.tid, "exit", str(e.code), f"{name(e.tid)} exited ({e.code}) at step {e.at:,}"))
        return out


def _spans(start, end, changes):
    """Turn one lane's (at, tid, universe, cpu) changes into Spans over [start, end)."""
    out = []
    cur_at, cur = start, ("none", "none")
    for at, _tid, u, c in changes:
        at = min(max(at, start), end)
        if (u, c) == cur:
            continue
        if at > cur_at:
            out.append(Span(cur_at, at, *cur))
            cur_at = at
        cur = (u, c)
    if end > cur_at or not out:
        out.append(Span(cur_at, max(end, cur_at), *cur))
    merged = []
    for s in out:
        if merged and (merged[-1].universe, merged[-1].cpu) == (s.universe, s.cpu) and merged[-1].end == s.start:
            merged[-1] = Span(merged[-1].start, s.end, s.universe, s.cpu)
        else:
            merged.append(s)
    return merged


def _lines(text):
    return text.rstrip("\n").split("\n")
