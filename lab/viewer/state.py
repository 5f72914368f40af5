"""state - one step of a trace, replayed and frozen: StepState, and the Inspector that makes and caches them."""
from __future__ import annotations

import pathlib
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

from ..disasm import disassemble
from ..errors import LabError
from ..image import PAD_SIZE
from ..machine import GPRS
from ..trace import settle
from .frames import AddressNames, backtrace
from .index import TraceIndex, ViewerError
from .search import Searcher
from .source import SourceMap

LISTING_BEFORE = 6
LISTING_AFTER = 6
CONSOLE_TAIL = 10
EVENTS_AROUND = 6
_MAX_INSN = 15
_CACHE = 256
_PAD_KIND = {0x0F: "nop", 0xE8: "call", 0xE9: "jmp"}


@dataclass(frozen=True)
class Line:
    """One disassembled instruction of the listing around a step."""

    address: int
    raw: str           # hex bytes
    text: str
    symbol: str        # where the instruction is (function+offset)
    comment: str       # what a target or rip-relative operand names
    current: bool
    pad: str = ""      # "nop" | "call" | "jmp" for a patched function's pad


@dataclass(frozen=True)
class PadState:
    """A patched function's pad at a step: what the CPU would run there."""

    address: int
    function: str
    state: str         # "nop" | "call" | "jmp"
    text: str
    target: int | None
    target_symbol: str


@dataclass(frozen=True)
class TaskRow:
    tid: int
    name: str
    kind: str
    state: str
    universe: str      # "old" | "new" (w.r.t. the latest transition's target)
    universe_byte: int
    current: bool


@dataclass(frozen=True)
class EventRow:
    index: int
    at: int
    kind: str
    text: str
    when: str          # "past" | "now" | "future"
    event: dict = field(compare=False)


@dataclass(frozen=True)
class StepState:
    """Everything the viewer shows at one step, read from the replayed machine
    and the trace's events; plain data, so views render it and tools dump it."""

    trace: str
    step: int
    start: int
    end: int
    current: int
    current_name: str
    in_irq: bool
    rip: int
    symbol: str
    listing: tuple
    regs: dict
    previous_step: int | None      # the current task's previous step (registers compare with it)
    changed: tuple
    tasks: tuple
    target_universe: int
    transition_started: bool
    pads: tuple
    events: tuple
    console: tuple
    console_lines: int
    backtrace: tuple = ()          # Frames of the task on the CPU, innermost first
    source: object = None          # the SourceLine of rip, or None
    notes: dict = field(default_factory=dict)   # register -> what its value points at

    @property
    def instruction(self):
        return next((x for x in self.listing if x.current), None)

    @property
    def fraction(self):
        return (self.step - self.start) / max(self.end - self.start, 1)

    def to_dict(self):
        """The JSON form (`lab trace show --json`): plain ints and strings, stable key order."""
        insn = self.instruction
        return {
            "trace": self.trace,
            "step": self.step,
            "start": self.start,
            "end": self.end,
            "current": self.current,
            "current_name": self.current_name,
            "in_irq": self.in_irq,
            "rip": self.rip,
            "symbol": self.symbol,
            "instruction": ({"address": insn.address, "bytes": insn.raw, "text": insn.text, "comment": insn.comment,
                             "pad": insn.pad} if insn else None),
            "regs": dict(self.regs),
            "previous_step": self.previous_step,
            "changed": list(self.changed),
            "tasks": [asdict(t) for t in self.tasks],
            "target_universe": self.target_universe,
            "transition_started": self.transition_started,
            "pads": [asdict(p) for p in self.pads],
            "listing": [asdict(x) for x in self.listing],
            "events": [{"index": r.index, "at": r.at, "kind": r.kind, "text": r.text, "when": r.when,
                        "event": r.event} for r in self.events],
            "console": list(self.console),
            "console_lines": self.console_lines,
            "source": str(self.source) if self.source else None,
            "backtrace": [asdict(f) for f in self.backtrace],
            "notes": dict(self.notes),
        }


def describe(e, name, syscalls=None):
    """One line for an event; name(tid) gives a task's name, syscalls (or
    name.syscalls) a system call's name by number (Image.syscall_names())."""
    k = e.kind
    if k == "switch":
        return f"switch {name(e.prev)} -> {name(e.next)}"
    if k == "irq":
        return f"timer interrupt in {name(e.tid)} ({'user' if e.user else 'kernel'} {e.rip:#x})"
    if k == "console":
        return f"console: {e.text.rstrip()}"
    if k == "signal":
        if e.fake:
            return f"fake signal to {name(e.tid)}"
        return f"signal {e.sig} to {name(e.tid)}" if e.sig else f"wake-up of {name(e.tid)}"
    if k == "migrated":
        return f"{name(e.tid)} moved to universe {e.universe} ({e.by})"
    if k == "patch":
        return f"patch '{e.name}': {e.state}" + (f" ({e.detail})" if e.detail else "")
    if k == "call":
        where = " in irq" if e.in_irq else ""
        return f"call {e.function} ({e.version}) by {name(e.tid)}{where}"
    if k == "syscall":
        names = syscalls if syscalls is not None else getattr(name, "syscalls", None) or {}
        return f"syscall {names.get(e.nr, e.nr)} by {name(e.tid)}"
    if k == "kloop":
        return f"{name(e.tid)} loops ({e.where})"
    if k == "exit":
        return f"{name(e.tid)} exited ({e.code})"
    if k == "oops":
        return f"oops in {name(e.tid)}: {e.reason} at {e.where}"
    if k == "panic":
        return f"panic: {e.message}"
    if k == "booted":
        return f"booted ({e.tasks} tasks)"
    if k == "transition-start":
        return f"transition of '{e.patch}' starts: target universe {e.target}"
    if k == "transition-join":
        return f"module {e.module} joins the transition of '{e.patch}'"
    if k == "task-new":
        return f"new task {name(e.tid)}"
    if k == "preempt":
        return f"{name(e.tid)} preempted ({'user' if e.user else 'kernel'} {e.rip:#x})"
    return k


class Inspector:
    """A trace opened for viewing: StepStates on demand (replayed from the
    nearest keyframe, never from the start), cached, plus searches."""

    def __init__(self, trace, cache=_CACHE):
        self.trace = trace
        self.index = TraceIndex(trace)
        self._rp = trace.replayer()
        self.searcher = Searcher(trace, self.index)
        self.sources = SourceMap.of(trace.image)
        self.names = AddressNames(trace)
        self._cache = OrderedDict()
        self._cache_size = cache
        self._pads = [(a, trace.image.function_at(a).name if trace.image.function_at(a) else trace.symbolize(a))
                      for a in trace.header.get("pads", ())]

    @classmethod
    def open(cls, trace_or_path, image=None):
        from ..trace import Trace
        if isinstance(trace_or_path, cls):
            return trace_or_path
        if isinstance(trace_or_path, (str, pathlib.Path)):
            trace_or_path = Trace.load(trace_or_path, image=image)
        return cls(trace_or_path)

    @property
    def start(self):
        return self.index.start

    @property
    def end(self):
        return self.index.end

    # ---- states ----
    def state(self, step):
        """The StepState at step (instructions retired); ViewerError outside the trace."""
        step = self.index.check_step(step)
        hit = self._cache.get(step)
        if hit is not None:
            self._cache.move_to_end(step)
            return hit
        st = self._build(step)
        self._cache[step] = st
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return st

    def _regs_at(self, step):
        hit = self._cache.get(step)
        if hit is not None:
            return hit.regs
        return settle(self._rp.seek(step)).regs()

    def _build(self, step):
        ix, rp = self.index, self._rp
        tid = ix.current_at(step)
        prev = ix.previous_step_of(tid, step)
        # seek the earlier step first, so the later one is reached forward from it
        prev_regs = self._regs_at(prev) if prev is not None else None
        settle(rp.seek(step))
        regs = rp.regs()
        changed = tuple(n for n in GPRS if prev_regs is not None and regs[n] != prev_regs[n])
        started = ix.transition_started(step)
        target = rp.target_universe
        tasks = tuple(TaskRow(t["tid"], t["name"], t["kind"], t["state"],
                              "-" if t["state"] in ("dead", "unused") else
                              "new" if started and t["universe"] == target else "old", t["universe"], t["current"])
                      for t in rp.tasks())
        pads = tuple(self._pad(a, name) for a, name in self._pads)
        listing = self._listing(regs["rip"], {p.address: p.state for p in pads})
        events = []
        for i, e in ix.near(step, EVENTS_AROUND, EVENTS_AROUND):
            when = "past" if e.at < step else ("now" if e.at == step else "future")
            events.append(EventRow(i, e.at, e.kind, describe(e, ix.task_name, ix.trace.image.syscall_names()),
                                   when, e.to_dict()))
        console, console_lines = ix.console_until(step, CONSOLE_TAIL)
        notes = {}
        for name in GPRS:
            if name not in ("rip", "rflags"):
                what = self.names.describe(regs[name], rp, ix.task_name)
                if what:
                    notes[name] = what
        return StepState(
            trace=str(self.trace.path), step=step, start=ix.start, end=ix.end,
            current=rp.current, current_name=ix.task_name(rp.current), in_irq=bool(rp.in_irq),
            rip=regs["rip"], symbol=self.trace.symbolize(regs["rip"]), listing=tuple(listing),
            regs=regs, previous_step=prev, changed=changed, tasks=tasks, target_universe=target,
            transition_started=started, pads=pads, events=tuple(events),
            console=tuple(console), console_lines=console_lines,
            backtrace=backtrace(rp, self.sources), source=self.sources.line_of(regs["rip"]), notes=notes)

    def _read(self, address, size):
        try:
            return self._rp.machine.read(address, size)
        except LabError:
            return b""

    def _pad(self, address, function):
        raw = self._read(address, PAD_SIZE)
        insn = disassemble(raw, address, 1)
        state = _PAD_KIND.get(raw[0], "?") if raw else "?"
        target = None
        if state in ("call", "jmp"):
            target = address + PAD_SIZE + int.from_bytes(raw[1:5], "little", signed=True)
        return PadState(address, function, state, insn[0].text if insn else raw.hex(" "), target,
                        self.trace.symbolize(target) if target is not None else "")

    def _listing(self, rip, pads):
        """LISTING_BEFORE instructions before rip and LISTING_AFTER after, decoded from
        the function's start (x86 cannot be decoded backwards) out of the replayed RAM,
        so a pad reads as what it is at this step."""
        start = self._function_start(rip)
        code = self._read(start, rip - start + (LISTING_AFTER + 1) * _MAX_INSN)
        insns = disassemble(code, start, symbolize=self.trace.symbolize) if code else []
        idx = next((i for i, x in enumerate(insns) if x.address == rip), None)
        if idx is None and start != rip:   # rip is not where decoding from the function start lands
            code = self._read(rip, (LISTING_AFTER + 1) * _MAX_INSN)
            insns = disassemble(code, rip, symbolize=self.trace.symbolize) if code else []
            idx = 0 if insns else None
        if idx is None:
            return []
        out = []
        for x in insns[max(0, idx - LISTING_BEFORE): idx + LISTING_AFTER + 1]:
            pad = pads.get(x.address, "")
            comment = x.comment
            if pad in ("call", "jmp"):
                comment = f"pad: {pad.upper()} -> {x.comment}"
            elif pad == "nop":
                comment = "pad: NOP (unpatched)"
            out.append(Line(x.address, x.raw.hex(" "), x.text, self.trace.symbolize(x.address), comment,
                            x.address == rip, pad))
        return out

    def _function_start(self, rip):
        func = self.trace.image.function_at(rip)
        if func is not None:
            return func.address
        for mod in self.trace.header.get("modules", ()):
            for _name, start, size in mod["functions"]:
                if start <= rip < start + max(size, 1):
                    return start
        return rip

    # ---- memory ----
    def memory(self, step, address, size):
        """The bytes at address at step (b"" outside RAM), read from the stepper's replayer."""
        self.state(step)
        if self._rp.clock != step:
            settle(self._rp.seek(step))
        return self._read(address, size)

    # ---- searches (the Searcher's own replayer: they may run in a worker thread) ----
    def next_call(self, name, step, limit=None):
        """The first step after `step` at which function `name` is entered, or None:
        its first instruction, which for a traced function is the pad, so a patched
        function's call stops at the pad's CALL before the trampoline decides
        (the recorded FuncEntry events are stamped later, in the body it chose)."""
        return self.searcher.next_hit({self.index.function_address(name)}, step, limit)

    def previous_call(self, name, step):
        """The last step before `step` at which function `name` is entered, or None."""
        return self.searcher.previous_hit({self.index.function_address(name)}, step)

    def _replay_for_entry(self, address, first, stop):
        """The first step in [first, stop] whose instruction is at address, by replay."""
        hits = self.searcher.hits({address}, first, stop, stop_at_first=True)
        return hits[0] if hits else None


__all__ = ["Inspector", "StepState", "Line", "PadState", "TaskRow", "EventRow", "ViewerError", "describe"]
