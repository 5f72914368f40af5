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
    rule: str = "mixed"     # "mixed", "on-stack", "stale" or "decision"

    def to_dict(self, names=None):
        return {
            "tid": self.tid,
            "task": (names or {}).get(self.tid, "interrupts" if self.tid == -1 else str(self.tid)),
            "unit": self.unit, "start": self.start, "end": self.end, "patch": self.patch,
            "old": sorted({f for f, _ in self.old}), "new": sorted({f for f, _ in self.new}),
            "first_mixed_at": self.first_mixed_at, "rule": self.rule,
        }


# what each kind of event means to the rules (an event of another kind means nothing to them)
_SYSCALL, _CALL, _IRQ, _KLOOP, _MIGRATED, _START, _PATCH, _END, _JOIN, _NEW = range(10)
_RULES = {ev.SyscallEntry: _SYSCALL, ev.FuncEntry: _CALL, ev.Interrupt: _IRQ, ev.KthreadLoop: _KLOOP,
          ev.Migrated: _MIGRATED, ev.TransitionStart: _START, ev.PatchEvent: _PATCH, ev.TaskExit: _END,
          ev.Oops: _END, ev.TransitionJoin: _JOIN, ev.TaskNew: _NEW}


class _Unit:
    __slots__ = ("kind", "start", "calls")

    def __init__(self, kind, start, calls=None):
        self.kind = kind
        self.start = start
        self.calls = [] if calls is None else calls


class Checker:
    """The checker fed a run's events as they come: feed() reads only the
    events it has not seen, verdict() is check() of all of them.  A System
    keeps one, so a run restored from a snapshot checks only its own
    events (copy.deepcopy gives a checker that goes on from the same point;
    the events themselves are frozen and shared)."""

    __slots__ = ("seen", "open_units", "violations", "kinds", "switching", "left", "universes")

    def __init__(self):
        self.seen = 0             # events fed so far
        self.open_units = {}      # tid (-1: irq) -> _Unit
        self.violations = []      # found in closed units, and the instant rules'
        self.kinds = {}           # tid -> "syscall" once the task made one
        self.switching = {}       # the transition in progress: patch -> names of the functions it switches
        self.left = {}            # a completed transition's patch -> the version nobody may enter any more
        # the transition in progress: [patch, the universe tasks left at its start, its target now,
        # {tid: the universe a task moved to or was born in}]; a task not in it is where it was
        self.universes = None

    def __deepcopy__(self, memo):
        new = Checker.__new__(Checker)
        new.seen = self.seen
        new.open_units = {k: _Unit(u.kind, u.start, list(u.calls)) for k, u in self.open_units.items()}
        new.violations = list(self.violations)
        new.kinds = dict(self.kinds)
        new.switching = {k: set(v) for k, v in self.switching.items()}
        new.left = dict(self.left)
        u = self.universes
        new.universes = None if u is None else [u[0], u[1], u[2], dict(u[3])]
        return new

    @staticmethod
    def _mixed(key, unit, end):
        """The violations of one unit of work that ended at end (None: still open)."""
        found = []
        by_patch = {}
        for call in unit.calls:
            by_patch.setdefault(call.patch, []).append(call)
        for patch, calls in by_patch.items():
            old = tuple((c.function, c.at) for c in calls if c.version == "old")
            new = tuple((c.function, c.at) for c in calls if c.version == "new")
            if old and new:
                first = max(min(a for _, a in old), min(a for _, a in new))
                found.append(Violation(key, unit.kind, unit.start, end, patch, old, new, first))
        return found

    def _close(self, key, end):
        unit = self.open_units.pop(key, None)
        if unit is not None and unit.calls:
            self.violations += self._mixed(key, unit, end)

    def feed(self, events):
        """Read events[self.seen:] (events: the run's whole list so far)."""
        if len(events) < self.seen:
            raise ValueError(f"the checker has read {self.seen} events, the run has only {len(events)}")
        open_units, violations, kinds, left = self.open_units, self.violations, self.kinds, self.left
        close, rule = self._close, _RULES.get
        for e in events[self.seen:]:
            what = rule(type(e))       # one dict look-up: most events concern no rule
            if what is None:
                continue
            if what == _SYSCALL:
                close(e.tid, e.at)
                open_units[e.tid] = _Unit("syscall", e.at)
                kinds[e.tid] = "syscall"
            elif what == _CALL:
                key = -1 if e.in_irq else e.tid
                if left and left.get(e.patch) == e.version:
                    violations.append(Violation(key, "entry", e.at, e.at, e.patch, ((e.function, e.at),), (), e.at,
                                                rule="stale"))
                unit = open_units.get(key)
                if unit is None:
                    unit = open_units[key] = _Unit("irq" if key == -1 else kinds.get(key, "kthread"), e.at)
                unit.calls.append(e)
                u = self.universes
                if u is not None and u[0] == e.patch and (key != -1 or -1 in u[3]):
                    # the trampoline decides by the task's universe: a task
                    # that has not moved runs the old version, one that has
                    # the new.  The interrupt context is judged once it has
                    # moved: kGraft gives it a universe of its own, which
                    # moves at an interrupt's exit; upstream's handler
                    # follows the task, and its interrupt context never moves
                    if e.version != ("new" if u[3].get(key, u[1]) == 1 else "old"):
                        violations.append(Violation(key, "entry", e.at, e.at, e.patch,
                                                    ((e.function, e.at),) if e.version == "old" else (),
                                                    ((e.function, e.at),) if e.version == "new" else (), e.at,
                                                    rule="decision"))
            elif what == _IRQ:
                close(-1, e.at)
                open_units[-1] = _Unit("irq", e.at)
            elif what == _KLOOP:
                close(e.tid, e.at)
                open_units[e.tid] = _Unit("kthread", e.at)
            elif what == _MIGRATED:
                if self.universes is not None:
                    self.universes[3][e.tid] = e.universe
                for patch, names in self.switching.items() if e.stack else ():
                    found = tuple((n, e.at) for n in e.stack if n in names)
                    if found:
                        violations.append(Violation(e.tid, "switch", e.at, e.at, patch, found, (), e.at,
                                                    rule="on-stack"))
            elif what == _START:
                u = self.universes
                if u is None or u[0] != e.patch:
                    # a new transition: every task leaves the universe the
                    # target is not (a reversal keeps where each task is)
                    self.universes = [e.patch, 1 - e.target, e.target, {}]
                else:
                    u[2] = e.target
                self.switching = {e.patch: set(e.functions)}
                left.pop(e.patch, None)
            elif what == _JOIN:
                if e.patch in self.switching:
                    self.switching[e.patch] |= set(e.functions)
            elif what == _NEW:
                # a task born during a transition starts where it leads
                # (the kernel gives it kgr_target_universe)
                if self.universes is not None:
                    self.universes[3][e.tid] = self.universes[2]
            elif what == _PATCH:
                if e.state in ("complete", "reverted", "failed"):
                    self.switching.pop(e.name, None)
                    if self.universes is not None and self.universes[0] == e.name:
                        self.universes = None
                    if e.state != "failed":
                        left[e.name] = "old" if e.state == "complete" else "new"
            else:                      # a task's end closes its unit
                close(e.tid, e.at)
        self.seen = len(events)
        return self

    def verdict(self):
        """Every violation in the events fed so far, the units still open
        included (as ending at the end), by the instant they mixed."""
        found = list(self.violations)
        for key, unit in self.open_units.items():
            if unit.calls:
                found += self._mixed(key, unit, None)
        return sorted(found, key=lambda v: (v.first_mixed_at, v.tid))


def check(events):
    """Every unit of work in events (a run's or a trace's) that mixed old and new code of one patch."""
    return Checker().feed(list(events)).verdict()
