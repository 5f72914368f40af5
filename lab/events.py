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


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    at: int
    kind = "event"
    observed = False   # recorded only while a trace records; not part of the digest

    def to_dict(self):
        d = {"kind": self.kind}
        for name in _names(type(self))[0]:
            v = getattr(self, name)
            d[name] = list(v) if isinstance(v, tuple) else v
        return d


@dataclass(frozen=True, slots=True)
class Booted(Event):
    tasks: int
    kind = "booted"


@dataclass(frozen=True, slots=True)
class ContextSwitch(Event):
    prev: int
    next: int
    kind = "switch"


@dataclass(frozen=True, slots=True)
class Interrupt(Event):
    tid: int
    user: bool
    rip: int
    kind = "irq"


@dataclass(frozen=True, slots=True)
class Console(Event):
    tid: int
    level: int
    text: str
    kind = "console"


@dataclass(frozen=True, slots=True)
class Signal(Event):
    tid: int
    sig: int
    fake: bool = False
    kind = "signal"


@dataclass(frozen=True, slots=True)
class TaskExit(Event):
    tid: int
    code: int
    kind = "exit"


@dataclass(frozen=True, slots=True)
class Oops(Event):
    tid: int
    reason: str
    address: int | None
    rip: int
    where: str
    regs: tuple = field(default=())   # (name, value) pairs
    code: tuple = field(default=())   # disassembly lines around rip
    kind = "oops"


@dataclass(frozen=True, slots=True)
class Preemption(Event):
    """A forced preemption: the reschedule IPI the lab sent at this instruction."""
    tid: int
    user: bool
    rip: int
    kind = "preempt"


@dataclass(frozen=True, slots=True)
class TaskNew(Event):
    tid: int
    kind = "task-new"


@dataclass(frozen=True, slots=True)
class Panic(Event):
    message: str
    kind = "panic"


def _core(d):
    """An event's digest form: without its sequence number, which observed
    events (a traced run has more) would otherwise shift."""
    d = dict(d)
    d.pop("seq", None)
    return d


# json.dumps(d, sort_keys=True, separators=(",", ":")) without a new encoder per call
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


_quote = json.encoder.encode_basestring_ascii      # how the encoder writes a str (ensure_ascii)


def _json_value(v):
    """_canonical(v), written directly for the types events hold (the
    encoder's own text for each: ints by int.__repr__, strings escaped
    as ASCII, tuples as lists); anything else goes to the encoder."""
    t = type(v)
    if t is int:
        return int.__repr__(v)
    if t is str:
        return _quote(v)
    if t is bool:
        return "true" if v else "false"
    if v is None:
        return "null"
    if t is tuple or t is list:
        return "[" + ",".join(map(_json_value, v)) + "]"
    return _canonical(v)


_DIGEST_LINES = {}    # event class -> its generated line function


def _digest_line(e):
    """The line an event adds to the digest: canonical JSON of _core(e.to_dict()),
    that is {"kind": ..., every field but seq} with sorted keys and no spaces.
    Written field by field in the encoder's own spelling by a function
    generated once per class (a test compares it with the encoder's output),
    without building the dict."""
    line = _DIGEST_LINES.get(type(e))
    if line is None:
        line = _DIGEST_LINES[type(e)] = _digest_line_function(type(e))
    return line(e)


def _digest_line_function(cls):
    pieces = []
    for n in sorted(("kind", *_names(cls)[1])):
        key = repr(("," if pieces else "{") + _quote(n) + ":")
        pieces.append(f"{key} + {repr(_quote(cls.kind))}" if n == "kind" else f"{key} + _v(_e.{n})")
    scope = {"_v": _json_value}
    exec(f"def line(_e):\n    return ({' + '.join(pieces)} + '}}\\n').encode()\n", scope)
    return scope["line"]


def _digest_line_by_encoder(e):
    """_digest_line() as the JSON encoder writes it (what it must equal)."""
    d = {"kind": e.kind}
    for name in _names(type(e))[1]:
        d[name] = getattr(e, name)
    return _canonical(d).encode() + b"\n"


def _restored_log(events, digest):
    log = EventLog.__new__(EventLog)
    log.events = list(events)
    log._hash = digest.copy()
    return log


class EventLog:
    """The run's events in order, with a running digest."""

    def __init__(self):
        self.events = []
        self._hash = hashlib.sha256()
        self._hashed = 0
        self._listeners = {}        # event class -> [fn]: each is called only with the kinds it asked for

    def add(self, cls, at, **fields):
        ev = cls(seq=len(self.events), at=at, **fields)
        self.events.append(ev)
        for fn in self._listeners.get(cls, ()):
            fn(ev)
        return ev

    def post(self, cls, at, *values):
        """add() with every field given, positionally, in declaration order
        (poster(cls) is the same in one call, for the hottest paths)."""
        return poster(cls)(self, at, *values)

    def subscribe(self, fn, *classes):
        """Call fn(event) for every event of these classes (default: of
        every class) added from now on.  A listener of a few kinds costs the
        hot paths (ticks, switches, system calls) nothing."""
        for cls in classes or tuple(EVENT_TYPES.values()):
            self._listeners.setdefault(cls, []).append(fn)

    @property
    def digest(self):
        """sha256 over the events so far (observed ones left out), each as
        canonical JSON; hashed when read, not on the run's path."""
        update = self._hash.update
        for e in self.events[self._hashed:]:
            if not e.observed:
                update(_digest_line(e))
        self._hashed = len(self.events)
        return self._hash.hexdigest()

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]

    def __iter__(self):
        return iter(self.events)

    def __len__(self):
        return len(self.events)

    def __snapshot__(self):
        """lab.snapshot's (rebuild, shared, state): a restored log goes on from
        the same point; the events are frozen and the digest so far is
        copied from (hashlib objects cannot be pickled), so both are shared."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("events", "_hash")}
        return _restored_log, (tuple(self.events), self._hash.copy()), state

    def __deepcopy__(self, memo):
        """A log that goes on from the same point (a snapshot's): the events
        are frozen and shared, the list is copied; the running digest is a
        hashlib object, which copy.deepcopy cannot copy, so it is .copy()'d."""
        import copy
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            if k == "events":
                v = list(v)
            elif k == "_hash":
                v = v.copy()
            else:
                v = copy.deepcopy(v, memo)
            new.__dict__[k] = v
        return new


@dataclass(frozen=True, slots=True)
class Migrated(Event):
    """A task (tid -1: the interrupt context) moved to the target universe."""

    tid: int
    by: str
    universe: int
    stack: tuple = ()       # the functions on its stack as it moved, innermost first (the checker's klp_check_stack())
    kind = "migrated"


@dataclass(frozen=True, slots=True)
class TransitionStart(Event):
    """A transition really started (after its grace period): every function it switches, old and new."""

    patch: str
    target: int
    functions: tuple        # names: the patched functions, their current and their next versions
    kind = "transition-start"


@dataclass(frozen=True, slots=True)
class TransitionJoin(Event):
    """A module came while its patch's transition ran: the functions the
    patch replaces in it join the transition, and each task runs the version
    of its own universe until it moves (upstream's func->transition, set for
    every object of the patch in transition; kGraft's slow stub for a
    loading module)."""

    patch: str
    module: str
    functions: tuple        # names: the module's patched functions and their versions, as TransitionStart's
    kind = "transition-join"


@dataclass(frozen=True, slots=True)
class PatchEvent(Event):
    """A patch changed state (transition, complete, reverting, reverted, refused, failed)."""

    name: str
    state: str
    detail: str = ""
    kind = "patch"


@dataclass(frozen=True, slots=True)
class FuncEntry(Event):
    """A traced or patched function was entered: version old, new or traced."""

    tid: int
    in_irq: bool
    function: str
    version: str
    patch: str = ""
    kind = "call"
    observed = True


@dataclass(frozen=True, slots=True)
class SyscallEntry(Event):
    tid: int
    nr: int
    kind = "syscall"
    observed = True


@dataclass(frozen=True, slots=True)
class KthreadLoop(Event):
    """A kernel thread passed the top of its loop (a unit boundary for the checker)."""

    tid: int
    where: str
    kind = "kloop"
    observed = True


_NAMES = {}     # event class -> (its field names, the same without seq)
_POSTERS = {}   # event class -> poster(class)


def _names(cls):
    names = _NAMES.get(cls)
    if names is None:
        fields = tuple(f.name for f in dataclasses.fields(cls))
        names = _NAMES[cls] = (fields, tuple(n for n in fields if n != "seq"))
    return names


def poster(cls):
    """post(log, at, *fields): log.add(cls, at, **fields) for the hot paths
    (ticks, switches, system call entries, recorded calls), every field
    given, positionally, in declaration order.  One generated function: the
    event is built without the frozen dataclass's __init__, which sets
    every field through object.__setattr__ (a third of a tick's event
    cost); its slots are set through their own descriptors, which `frozen`
    leaves alone.  The event is the one add() would make, and the log's
    listeners see it the same way."""
    post = _POSTERS.get(cls)
    if post is None:
        names = [f.name for f in dataclasses.fields(cls)]
        scope = {"_new": object.__new__, "_cls": cls}
        scope.update({f"_set_{n}": getattr(cls, n).__set__ for n in names})
        params = ", ".join(n for n in names if n != "seq")
        body = "".join(f"    _set_{n}(_e, {'len(_events)' if n == 'seq' else n})\n" for n in names)
        exec(f"def post(_log, {params}):\n"
             f"    _events = _log.events\n"
             f"    _e = _new(_cls)\n{body}"
             f"    _events.append(_e)\n"
             f"    for _fn in _log._listeners.get(_cls, ()):\n"
             f"        _fn(_e)\n"
             f"    return _e\n", scope)
        post = _POSTERS[cls] = scope["post"]
    return post


EVENT_TYPES = {cls.kind: cls for cls in (Booted, ContextSwitch, Interrupt, Console, Signal, TaskExit, TaskNew, Preemption, Oops, Panic, TransitionStart,
                                         TransitionJoin,
                                         Migrated, PatchEvent, FuncEntry, SyscallEntry, KthreadLoop)}


def from_dict(d):
    """The Event a to_dict() came from."""
    d = dict(d)
    cls = EVENT_TYPES[d.pop("kind")]
    for k, v in d.items():
        if isinstance(v, list):
            d[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
    return cls(**d)
