"""search - breakpoints over a recorded run, found forward and backward by replay (rr's continue / reverse-continue), and the last write to an address (rr's `watch -l` + reverse-continue, qira's memory history)."""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from ..errors import LabError
from ..trace import settle
from .index import IRQ, ViewerError

FUNCTION, ADDRESS, EVENT, UNIVERSE = "function", "address", "event", "universe"
# the events a breakpoint can name, as `lab shell`'s `run until` names them
EVENT_KINDS = ("migrated", "signal", "patch", "complete", "console", "oops", "exit", "call", "syscall", "switch")
SAMPLE = 16        # the last-write search reads the word every SAMPLE instructions, then each one
_MIGRATION_WINDOW = 4_096   # a safe point writes the universe byte this close before its Migrated event


@dataclass(frozen=True)
class Breakpoint:
    """Where a continue stops: a function's first instruction (its pad, for a
    traced one), an address, an event (of a task), or a task's change of universe."""

    kind: str
    text: str                  # as the person typed it
    address: int | None = None
    event: str | None = None
    tid: int | None = None
    arg: str | None = None     # the event's argument when it is no task (a patch name, console text)

    def __str__(self):
        return self.text


@dataclass(frozen=True)
class Write:
    """The last change of a memory word before a step."""

    step: int                  # the instruction at this step made the change (by "cpu"), or the lab did between slices
    by: str                    # "cpu" | "lab"
    before: bytes
    after: bytes


def parse_breakpoint(text, index):
    """A Breakpoint from what a person types: `capable`, `0x1001e5`, `*0x1001e5`,
    `migrated pipe-reader`, `signal`, `patch`, `complete`, `console TEXT`,
    `universe pipe-reader` (until that task changes universe); a function or an
    address may carry a condition, `capable in cap-user` (only when that task runs it)."""
    words = text.split()
    if not words:
        raise ViewerError("a breakpoint needs a function, an address, an event or `universe TASK`")
    head, rest = words[0], " ".join(words[1:])
    tid = None
    if len(words) >= 3 and words[1] == "in" and head not in EVENT_KINDS + ("universe",):
        tid = task_id(index, " ".join(words[2:]))      # a condition: only when that task runs it
        if tid == IRQ:
            raise ViewerError("a code breakpoint's condition names a task: capable in cap-user")
        rest = ""
    cond = f" in {index.task_name(tid)}" if tid is not None else ""
    if head.lstrip("*").lower().startswith("0x"):
        try:
            address = int(head.lstrip("*"), 16)
        except ValueError:
            raise ViewerError(f"{head!r} is not an address: give it in hex, 0x1001e5") from None
        return Breakpoint(ADDRESS, f"*{address:#x}{cond}", address=address, tid=tid)
    if head == "universe":
        if not rest:
            raise ViewerError("`universe` needs a task: universe pipe-reader")
        tid = task_id(index, rest)
        return Breakpoint(UNIVERSE, f"universe {index.task_name(tid)}", tid=tid)
    if head in EVENT_KINDS:
        if head == "complete":
            return Breakpoint(EVENT, "patch complete", event="patch", arg="complete")
        if head in ("console", "patch", "call"):
            return Breakpoint(EVENT, text.strip(), event=head, arg=rest or None)
        tid = task_id(index, rest) if rest else None
        return Breakpoint(EVENT, f"{head} {index.task_name(tid)}" if rest else head, event=head, tid=tid)
    if head in ("break", "b", "func", "function") and rest:
        return parse_breakpoint(rest, index)
    if rest:
        raise ViewerError(f"{text.strip()!r}: a function or an address takes only a condition, `{head} in TASK`")
    return Breakpoint(FUNCTION, f"{head}{cond}", address=index.function_address(head), tid=tid)


def task_id(index, text):
    """A task by tid or name (`interrupts` for the interrupt context)."""
    text = text.strip()
    if text in ("interrupts", "irq"):
        return IRQ
    if text.lstrip("-").isdigit() and int(text) in index.names:
        return int(text)
    for tid, name in index.names.items():
        if name == text:
            return tid
    raise ViewerError(f"no task {text!r} in this trace; the tasks are: {', '.join(index.names.values())}")


def event_matches(bp, e, index):
    """Whether event e is where event breakpoint bp stops."""
    if e.kind != bp.event:
        return False
    if bp.event == "patch":
        return bp.arg is None or bp.arg in (e.name, e.state)
    if bp.event == "console":
        return bp.arg is None or bp.arg in e.text
    if bp.event == "call":
        return bp.arg is None or bp.arg == e.function
    if bp.tid is None:
        return True
    if bp.event == "switch":
        return bp.tid in (e.prev, e.next)
    return getattr(e, "tid", None) == bp.tid


def universe_changes(index, tid):
    """The steps at which task tid's universe changed (its timeline lane's colour)."""
    spans = index.lanes().get(tid, [])
    return [b.start for a, b in zip(spans, spans[1:]) if a.universe != b.universe]


class Searcher:
    """Replays a trace with code hooks to find where instructions run, and
    reads memory over time; its own replayer, so a search in a worker thread
    leaves the stepper's machine alone."""

    def __init__(self, trace, index):
        self.trace = trace
        self.index = index
        self._kf_at = [f.at for f in trace.keyframes]
        self._rp = None

    @property
    def replayer(self):
        if self._rp is None:
            self._rp = self.trace.replayer()
        return self._rp

    # ---- instructions ----
    def hits(self, addresses, first, last, stop_at_first=False):
        """The steps in [first, last] at which the instruction about to run is at one of addresses."""
        addresses = set(addresses)
        first, last = max(first, self.trace.start), min(last, self.trace.end)
        if first > last or not addresses:
            return []
        rp = self.replayer
        m = rp.machine
        found = set()
        settle(rp.seek(first))
        handles = [m.add_code_hook(a, lambda _a: found.add(m.clock)) for a in addresses]
        try:
            here = first
            while here < last:
                # a seek never crosses a keyframe, which it would restore, skipping what the hooks must see
                i = bisect.bisect_right(self._kf_at, here)
                nxt = self._kf_at[i] if i < len(self._kf_at) else None
                target = last if nxt is None else min(last, nxt - 1)
                if target <= here:
                    target = min(last, nxt)
                settle(rp.seek(target))
                here = target
                if stop_at_first and any(first <= h < here for h in found):
                    break
            if rp.regs()["rip"] in addresses:      # the last step's instruction has not run
                found.add(here)
        finally:
            for h in handles:
                m.remove_code_hook(h)
        return sorted(h for h in found if first <= h <= last)

    def next_hit(self, addresses, step, limit=None):
        """The first step after `step` whose instruction is at one of addresses, or None."""
        last = self.trace.end if limit is None else min(self.trace.end, step + limit)
        hits = self.hits(addresses, step + 1, last, stop_at_first=True)
        return hits[0] if hits else None

    def previous_hit(self, addresses, step):
        """The last step before `step` whose instruction is at one of addresses, or None:
        each keyframe's stretch replayed in turn, from the one holding step back."""
        hi = step - 1
        while hi >= self.trace.start:
            lo = self.trace.keyframe_for(hi).at
            hits = self.hits(addresses, lo, hi)
            if hits:
                return hits[-1]
            hi = lo - 1
        return None

    # ---- breakpoints ----
    def next_stop(self, breakpoints, step, backward=False):
        """The nearest step after (before) `step` where one of breakpoints stops,
        and the breakpoints that stop there; (None, []) if none does."""
        ix = self.index
        candidates = []
        code = [bp for bp in breakpoints if bp.kind in (FUNCTION, ADDRESS)]
        if code:
            at = self._code_stop(code, step, backward)
            if at is not None:
                candidates.append(at)
        for bp in breakpoints:
            if bp.kind == EVENT:
                e = (ix.previous_event if backward else ix.next_event)(step, lambda e, bp=bp: event_matches(bp, e, ix))
                if e is not None:
                    candidates.append(e.at)
            elif bp.kind == UNIVERSE:
                at = self._universe_change(bp.tid, step, backward)
                if at is not None:
                    candidates.append(at)
        if not candidates:
            return None, []
        at = max(candidates) if backward else min(candidates)
        return at, [bp for bp in breakpoints if self.stops_at(bp, at)]

    def stops_at(self, bp, step):
        """Whether bp stops at step (to say which breakpoints a continue reached)."""
        ix = self.index
        if bp.kind in (FUNCTION, ADDRESS):
            return step in self.hits({bp.address}, step, step) and self._condition_holds(bp, step)
        if bp.kind == EVENT:
            return any(e.at == step and event_matches(bp, e, ix) for _i, e in ix.near(step, 0, 0))
        return step in (self._universe_change(bp.tid, step - 1, False),)

    def _code_stop(self, bps, step, backward):
        """The nearest hit of the code breakpoints bps whose condition holds there."""
        addresses = {bp.address for bp in bps}
        here = step
        while True:
            at = self.previous_hit(addresses, here) if backward else self.next_hit(addresses, here)
            if at is None or any(self._condition_holds(bp, at) for bp in bps):
                return at
            here = at

    def _condition_holds(self, bp, step):
        """Whether the instruction at step is bp's and runs in bp's task (if it names one)."""
        rp = settle(self.replayer.seek(step))
        if rp.regs()["rip"] != bp.address:
            return False
        return bp.tid is None or (rp.current == bp.tid and not rp.in_irq)

    def _universe_change(self, tid, step, backward):
        """The nearest step after (before) `step` at which task tid's universe byte first holds
        its new value: the lane's change (from the events), moved back to just after the
        instruction that wrote it (the lab's own writes, at a transition's start, stay where they are)."""
        field = self._universe_field(tid)
        changes = universe_changes(self.index, tid)
        for c in (reversed(changes) if backward else changes):
            at = c
            if field is not None:
                w = self.last_write(field, 1, min(c, self.trace.end))
                if w is not None and c - w.step <= _MIGRATION_WINDOW:
                    at = w.step if w.by == "lab" else w.step + 1
            if (at < step) if backward else (at > step):
                return at
        return None

    def _universe_field(self, tid):
        img = self.trace.image
        try:
            if tid == IRQ:
                return None
            return img.address("tasks") + tid * img.const("TASK_SIZE") + img.const("TASK_kgr_universe")
        except LabError:
            return None

    # ---- memory ----
    def read(self, step, address, size):
        rp = self.replayer
        settle(rp.seek(step))
        return _read(rp, address, size)

    def last_write(self, address, size, step):
        """The last change of the `size` bytes at address before step: a Write, or None
        if they hold the same bytes from the start of the trace.

        Each keyframe's stretch is read every SAMPLE instructions, newest first;
        the last sample that differs is then stepped one instruction at a time.
        A change undone within SAMPLE instructions between two samples is not
        seen: what is found is the write that put the present value there."""
        rp = self.replayer
        want = self.read(step, address, size)
        hi = step
        while hi > self.trace.start:
            frame = self.trace.keyframe_for(hi - 1)
            lo = frame.at
            samples = list(range(lo, hi, SAMPLE)) + [hi]
            values = []
            for s in samples:
                settle(rp.seek(s))
                values.append(_read(rp, address, size))
            differs = [i for i, v in enumerate(values) if v != want]
            if differs:
                i = differs[-1]
                t_last = samples[i]
                for t in range(samples[i], samples[i + 1]):
                    settle(rp.seek(t))
                    if _read(rp, address, size) != want:
                        t_last = t
                settle(rp.seek(t_last))
                return Write(t_last, "cpu", _read(rp, address, size), want)
            if lo <= self.trace.start:
                return None
            # the stretch holds the value throughout: was it written just before it?
            before = self.read(lo - 1, address, size)
            if before != want:
                # a lab keyframe follows the lab's own writes (patching); any other one is the replay's state
                return Write(lo, "lab", before, want) if frame.lab else Write(lo - 1, "cpu", before, want)
            hi = lo - 1
        return None


def _read(rp, address, size):
    try:
        return rp.machine.read(address, size)
    except LabError:
        return b""


__all__ = ["Breakpoint", "Write", "Searcher", "parse_breakpoint", "task_id", "event_matches", "universe_changes",
           "FUNCTION", "ADDRESS", "EVENT", "UNIVERSE", "EVENT_KINDS"]
