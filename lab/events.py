"""events - what happens in a run, as frozen records stamped with their instruction.

Every event has a sequence number and `at`, the number of instructions retired
before the instruction that caused it.  The digest of a run is the sha256 of
the events in order, each as canonical JSON: equal inputs give equal digests.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    seq: int
    at: int
    kind = "event"

    def to_dict(self):
        d = {"kind": self.kind}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d


@dataclass(frozen=True)
class Booted(Event):
    tasks: int
    kind = "booted"


@dataclass(frozen=True)
class ContextSwitch(Event):
    prev: int
    next: int
    kind = "switch"


@dataclass(frozen=True)
class Interrupt(Event):
    tid: int
    user: bool
    rip: int
    kind = "irq"


@dataclass(frozen=True)
class Console(Event):
    tid: int
    level: int
    text: str
    kind = "console"


@dataclass(frozen=True)
class Signal(Event):
    tid: int
    sig: int
    fake: bool = False
    kind = "signal"


@dataclass(frozen=True)
class TaskExit(Event):
    tid: int
    code: int
    kind = "exit"


@dataclass(frozen=True)
class Oops(Event):
    tid: int
    reason: str
    address: int | None
    rip: int
    where: str
    regs: tuple = field(default=())   # (name, value) pairs
    code: tuple = field(default=())   # disassembly lines around rip
    kind = "oops"


@dataclass(frozen=True)
class Panic(Event):
    message: str
    kind = "panic"


class EventLog:
    """The run's events in order, with a running digest."""

    def __init__(self):
        self.events = []
        self._hash = hashlib.sha256()
        self._listeners = []

    def add(self, cls, at, **fields):
        ev = cls(seq=len(self.events), at=at, **fields)
        self.events.append(ev)
        self._hash.update(json.dumps(ev.to_dict(), sort_keys=True, separators=(",", ":")).encode() + b"\n")
        for fn in self._listeners:
            fn(ev)
        return ev

    def subscribe(self, fn):
        """Call fn(event) for every event added from now on."""
        self._listeners.append(fn)

    @property
    def digest(self):
        return self._hash.hexdigest()

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]

    def __iter__(self):
        return iter(self.events)

    def __len__(self):
        return len(self.events)


@dataclass(frozen=True)
class Migrated(Event):
    """A task (tid -1: the interrupt context) moved to the target universe."""

    tid: int
    by: str
    universe: int
    kind = "migrated"


@dataclass(frozen=True)
class PatchEvent(Event):
    """A patch changed state (transition, complete, reverting, reverted, refused, failed)."""

    name: str
    state: str
    detail: str = ""
    kind = "patch"
