"""snapshot - a system saved when no module is loaded and brought back exactly, many times over.

A snapshot holds the machine's (CPU context, RAM, memory protections,
code hooks: Machine.snapshot()) and the Python state of every layer above it
(kernel, module loader, ftrace, livepatch core, observer, the system
itself): each layer's __dict__, written once with pickle in one go, the
layers themselves, the image and the engine written as references, so
every reference to a layer stays a reference to that same object and
everything else (the event log with its running digest, the scheduler's
random state, the patches) is copied.  Restoring reads a fresh copy back,
so one snapshot serves any number of runs: run, restore, run another
schedule.

Restoring is far cheaper than booting: only the RAM pages that changed are
copied back and only their translations dropped (benchmarks/bench_explore.py
measures it against a schedule's run).
"""
from __future__ import annotations

import io
import pathlib
import pickle
import random
import types
import weakref
from dataclasses import dataclass, field

from .errors import UsageError

# The system's parts that keep their identity across a restore; every other
# attribute of System whose value has a __dict__ is a layer too (a part added
# later is covered without a change here).
_SHARED = ("_image",)          # read-only after boot: never copied, never replaced
_MACHINE = "_machine"          # restored by Machine.restore()


@dataclass(frozen=True, eq=False)
class Snapshot:
    """A system as it was at instruction `at`.  restore() brings it back."""

    system: object
    at: int
    key: tuple                 # (workload, seed, quantum, model): what the boot was
    machine: dict = field(repr=False)
    layers: tuple = field(repr=False)  # _write_layers(): System's attribute name ("" for itself) -> its __dict__

    def restore(self, system=None):
        """Bring the system back to this snapshot (see restore())."""
        restore(self.system if system is None else system, self)

    def __repr__(self):
        workload, seed, quantum, model = self.key
        return f"<Snapshot at {self.at:,} of {workload} seed {seed} quantum {quantum} model {model}>"


def _hubs(system):
    """{name: object} of the layers restored in place ("" is the system itself)."""
    hubs = {"": system}
    for name, value in vars(system).items():
        if name in _SHARED or name == _MACHINE:
            continue
        if hasattr(value, "__dict__") and not isinstance(value, type):
            hubs[name] = value
    return hubs


def _shared(system, hubs):
    """The objects a snapshot refers to and never copies: the layers, the
    image, the engine and the firmware's constants (each layer's references
    to the others stay references to those same objects)."""
    m = system.machine
    keep = [*hubs.values(), system.image, m, system.kernel.c]
    keep += [getattr(m, k) for k in m._SNAPSHOT_KEEP if getattr(m, k, None) is not None]
    return list({id(obj): obj for obj in keep}.values())


# What copy.deepcopy keeps as it is (functions, classes, weak references,
# properties) and pickle would write by name or refuse, and paths (immutable;
# read back, each would be parsed again): referred to.
_ATOMIC = (types.FunctionType, types.BuiltinFunctionType, weakref.ref, property, types.CodeType, type,
           pathlib.PurePath)
_FROZEN = {}            # class -> its fields' names if it is a frozen dataclass, else None
_PLAIN = (int, str, bytes, bool, float, complex, type(None), pathlib.PurePath)


def _frozen(obj, depth=0):
    """A frozen record (an event, a module's symbol, a patch's function, a
    migration...) whose fields hold only immutable values: nothing can
    change it, so a snapshot shares it.  A frozen dataclass with a list or a
    dict in a field is copied as any object is (what it holds may change)."""
    cls = type(obj)
    names = _FROZEN.get(cls, ())
    if names == ():
        params = getattr(cls, "__dataclass_params__", None)
        names = _FROZEN[cls] = tuple(f for f in cls.__dataclass_fields__) if params is not None and params.frozen \
            else None
    return names is not None and all(_immutable(getattr(obj, n), depth) for n in names)


def _immutable(value, depth=0):
    if isinstance(value, _PLAIN):
        return True
    if depth > 8:
        return False
    if type(value) in (tuple, frozenset):
        return all(_immutable(v, depth + 1) for v in value)
    return _frozen(value, depth + 1)


def _random_from(state):
    # Random() would seed itself from the OS first; setstate() sets all of it
    twin = random.Random.__new__(random.Random, 0)
    twin.setstate(state)
    return twin


class _Writer(pickle.Pickler):
    """Writes the layers' state once, at the snapshot; a restore reads a
    fresh copy from it (pickle's loads is C, a restore's deepcopy walked
    every object in Python: three times the time).  Referred to, not
    written: the shared objects, the atomic ones, frozen records, and what
    an object's __snapshot__() names: (rebuild, shared arguments, state)
    for a class with parts no pickle can copy (lab.events.EventLog's
    running digest).  What pickle
    writes it reads back as deepcopy would copy it: by each class's
    __reduce_ex__, references to one object staying references to one.  A
    random.Random is rebuilt from its state, which is an immutable tuple."""

    def __init__(self, file, shared):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.shared = shared
        self._index = {id(obj): i for i, obj in enumerate(shared)}

    def _share(self, obj):
        i = self._index.get(id(obj))
        if i is None:
            i = self._index[id(obj)] = len(self.shared)
            self.shared.append(obj)
        return i

    def persistent_id(self, obj):
        i = self._index.get(id(obj))
        if i is None and (isinstance(obj, _ATOMIC) or _frozen(obj)):
            i = self._share(obj)
        return i

    def reducer_override(self, obj):
        if type(obj) is random.Random:
            state = obj.getstate()
            self._share(state)
            return _random_from, (state,)
        parts = getattr(type(obj), "__snapshot__", None)
        if parts is not None and not isinstance(obj, type):
            rebuild, shared, state = parts(obj)
            for value in shared:
                self._share(value)
            return rebuild, tuple(shared), state
        return NotImplemented


class _Reader(pickle.Unpickler):
    def __init__(self, file, shared):
        super().__init__(file)
        self._shared = shared

    def persistent_load(self, i):
        return self._shared[i]


def _write_layers(system, hubs, dicts):
    """(bytes, shared objects) that _read_layers() makes copies of dicts from."""
    shared = _shared(system, hubs)
    out = io.BytesIO()
    try:
        _Writer(out, shared).dump(dicts)
    except (TypeError, AttributeError, pickle.PicklingError) as exc:
        # name the attribute that cannot be copied, so its owner can make it copyable
        for name, d in dicts.items():
            for attr, value in d.items():
                try:
                    _Writer(io.BytesIO(), _shared(system, hubs)).dump(value)
                except (TypeError, AttributeError, pickle.PicklingError) as inner:
                    owner = type(hubs[name]).__name__
                    raise UsageError(f"cannot snapshot {owner}.{attr}: {inner}; give its class a __snapshot__() "
                                     "(as lab.events.EventLog has) or keep it out of the layer") from None
        raise UsageError(f"cannot snapshot this system: {exc}") from None
    return out.getvalue(), shared


def _read_layers(written):
    data, shared = written
    return _Reader(io.BytesIO(data), shared).load()


def _refusal(system, loaded=False):
    """Why the system cannot be snapshotted now, or None.  loaded: a module
    may be loaded and a transition running (the explorer's snapshot right
    after a patch's load), as long as no request waits for the next slice."""
    if system.machine.closed:
        return "the system was closed; boot a new one"
    if system.recorder is not None:
        return "the system records a trace; snapshot one booted without record=True"
    if system.kernel.panicked:
        return f"the kernel panicked ({system.kernel.panicked}); boot a new system"
    lp = system.livepatch
    if loaded:
        if getattr(lp, "_requests", None) or getattr(lp, "_waiting", None) is not None:
            return "the live patching core has work queued for the next slice; run on to a slice's end"
        return None
    names = [m.name for m in system.modules.modules if m.loaded]
    if names:
        return (f"module {', '.join(names)} is loaded; take the snapshot when no module is loaded "
                "(right after boot, or before the first patch is applied)")
    if lp.busy is not None or lp.reclaim_pending or getattr(lp, "_requests", None):
        return "the live patching core is still busy; take the snapshot when no module is loaded"
    return None


def snapshot(system, *, loaded=False):
    """A snapshot of system, which must be between runs with no module
    loaded (right after boot, or later before the first patch).  Raises
    UsageError otherwise.  loaded=True also takes one with modules loaded
    and a transition running, right after System.apply_patch() returned:
    the explorer's, shared by the schedules that differ only after it."""
    why = _refusal(system, loaded)
    if why is not None:
        raise UsageError(f"cannot snapshot the system now: {why}")
    hubs = _hubs(system)
    system.digest      # the running digest brought up to date: a restored run then hashes only its own events
    if system.observer is not None:
        system.violations()    # the checker likewise: a restored run checks only its own events
    machine = system.machine.snapshot()
    layers = _write_layers(system, hubs, {name: dict(vars(obj)) for name, obj in hubs.items()})
    k = system.kernel
    return Snapshot(system, system.clock, (k.workload, k.seed, k.quantum, system.livepatch.model), machine, layers)


def restore(system, snap):
    """Bring system back to snap exactly: registers, RAM, memory protections,
    code hooks (those added since are removed), and every layer's state,
    the event log and its digest included."""
    if not isinstance(snap, Snapshot):
        raise UsageError(f"{snap!r} is not a snapshot; take one with lab.snapshot.snapshot(system)")
    if snap.system is not system:
        raise UsageError("a snapshot restores the system it was taken of; this is another one")
    if system.machine.closed:
        raise UsageError("the system was closed; a closed system cannot be restored")
    hubs = _hubs(system)
    fresh = _read_layers(snap.layers)
    if set(hubs) != set(fresh):
        raise UsageError("the system's layers changed since the snapshot was taken "
                         f"({', '.join(sorted(set(hubs) ^ set(fresh)))}); take it again")
    system.machine.restore(snap.machine)
    for name, obj in hubs.items():
        d = vars(obj)
        d.clear()
        d.update(fresh[name])
    return system
