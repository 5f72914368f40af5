"""checker - proves a run consistent, or shows where it was not.

Two rules, each a violation whatever the consistency model promised:

- mixed: a unit of work runs between two safe points: a system call (from
  one entry of a task to its next), an interrupt (from its delivery to the
  next one: they do not nest), or one iteration of a kernel thread's loop.  A
  unit that entered both the old and the new version of functions of one
  patch mixed the two universes.
- on-stack: the invariant upstream's consistency model rests on
  (klp_check_stack()): when a task (or the interrupt context) switches
  universe, no function the transition switches, old or new, is on its
  stack.  A task that moves with one on its stack returns into code of the
  universe it left.
- stale: once a transition has completed, nothing enters the version it
  left (the original body after patching, the replacement after
  unpatching): such an entry was decided by a trampoline with the meaning an
  earlier transition gave the universe flag.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import events as ev


@dataclass(frozen=True)
class Violation:
    tid: int            # -1: interrupt context
    unit: str           # "syscall", "irq" or "kthread"
    start: int          # instruction the unit began at
    end: int | None     # instruction the next unit began at (None: still open at the end)
    patch: str
    old: tuple          # (function, at) entries of old versions; on-stack: the functions found
    new: tuple          # (function, at) entries of new versions
    first_mixed_at: int
    rule: str = "mixed"     # "mixed", "on-stack" or "stale"

    def to_dict(self, names=None):
        return {
            "tid": self.tid,
            "task": (names or {}).get(self.tid, "interrupts" if self.tid == -1 else str(self.tid)),
            "unit": self.unit, "start": self.start, "end": self.end, "patch": self.patch,
            "old": sorted({f for f, _ in self.old}), "new": sorted({f for f, _ in self.new}),
            "first_mixed_at": self.first_mixed_at, "rule": self.rule,
        }


class _Unit:
    __slots__ = ("kind", "start", "calls")

    def __init__(self, kind, start):
        self.kind = kind
        self.start = start
        self.calls = []


def check(events):
    """Every unit of work in events (a run's or a trace's) that mixed old and new code of one patch."""
    open_units = {}       # tid (-1: irq) -> _Unit
    violations = []

    def close(key, end):
        unit = open_units.pop(key, None)
        if unit is None or not unit.calls:
            return
        by_patch = {}
        for call in unit.calls:
            by_patch.setdefault(call.patch, []).append(call)
        for patch, calls in by_patch.items():
            old = tuple((c.function, c.at) for c in calls if c.version == "old")
            new = tuple((c.function, c.at) for c in calls if c.version == "new")
            if old and new:
                first = max(min(a for _, a in old), min(a for _, a in new))
                violations.append(Violation(key, unit.kind, unit.start, end, patch, old, new, first))

    kinds = {}
    switching = {}        # the transition in progress: patch -> names of the functions it switches
    left = {}             # a completed transition's patch -> the version nobody may enter any more
    for e in events:
        if isinstance(e, ev.TransitionStart):
            switching = {e.patch: set(e.functions)}
            left.pop(e.patch, None)
            continue
        if isinstance(e, ev.PatchEvent) and e.state in ("complete", "reverted", "failed"):
            switching.pop(e.name, None)
            if e.state != "failed":
                left[e.name] = "old" if e.state == "complete" else "new"
            continue
        if isinstance(e, ev.FuncEntry) and left.get(e.patch) == e.version:
            key = -1 if e.in_irq else e.tid
            violations.append(Violation(key, "entry", e.at, e.at, e.patch, ((e.function, e.at),), (), e.at,
                                        rule="stale"))
        if isinstance(e, ev.Migrated) and e.stack:
            for patch, names in switching.items():
                found = tuple((n, e.at) for n in e.stack if n in names)
                if found:
                    violations.append(Violation(e.tid, "switch", e.at, e.at, patch, found, (), e.at,
                                                rule="on-stack"))
            continue
        if isinstance(e, ev.SyscallEntry):
            close(e.tid, e.at)
            open_units[e.tid] = _Unit("syscall", e.at)
            kinds[e.tid] = "syscall"
        elif isinstance(e, ev.KthreadLoop):
            close(e.tid, e.at)
            open_units[e.tid] = _Unit("kthread", e.at)
        elif isinstance(e, ev.Interrupt):
            close(-1, e.at)
            open_units[-1] = _Unit("irq", e.at)
        elif isinstance(e, ev.FuncEntry):
            key = -1 if e.in_irq else e.tid
            unit = open_units.get(key)
            if unit is None:
                unit = open_units[key] = _Unit("irq" if key == -1 else kinds.get(key, "kthread"), e.at)
            unit.calls.append(e)
        elif isinstance(e, (ev.TaskExit, ev.Oops)):
            close(e.tid, e.at)
    for key in list(open_units):
        close(key, None)
    return sorted(violations, key=lambda v: (v.first_mixed_at, v.tid))
