"""snapshot - a system saved when no module is loaded and brought back exactly, many times over.

A snapshot holds the machine's (CPU context, RAM, memory protections, code
hooks: Machine.snapshot()) and the Python state of every layer above it
(kernel, module loader, ftrace, livepatch core, observer, the system
itself): each layer's __dict__, deep-copied in one go with the layers
themselves, the image and the engine pre-seeded in the memo, so every
reference to a layer stays a reference to that same object and everything
else (the event log with its running digest, the scheduler's random state,
the patches) is copied.  Restoring assigns a fresh deep copy back, so one
snapshot serves any number of runs: run, restore, run another schedule.

Restoring is far cheaper than booting: only the RAM pages that changed are
copied back and only their translations dropped (benchmarks/bench_explore.py
measures it against a schedule's run).
"""
from __future__ import annotations

import copy
import random
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
    layers: dict = field(repr=False)   # attribute name of System ("" for the system) -> its __dict__, copied

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


def _memo(system, hubs):
    """A deepcopy memo in which the layers, the image, the engine and the
    firmware's constants stand for themselves."""
    m = system.machine
    keep = [*hubs.values(), system.image, m, system.kernel.c]
    keep += [getattr(m, k) for k in m._SNAPSHOT_KEEP if getattr(m, k, None) is not None]
    return {id(obj): obj for obj in keep}


# values a layer's attribute may hold that need no copy (a restore copies
# every layer, so the deepcopy calls saved on them add up)
_IMMUTABLE = frozenset({int, str, bool, float, bytes, type(None)})


def _copy_layers(system, hubs, dicts):
    memo = _memo(system, hubs)
    for d in dicts.values():
        for value in d.values():
            if type(value) is random.Random:
                # its state is an immutable tuple of 625 numbers: shared, not
                # walked by deepcopy; the twin is made without seeding it from
                # the OS first (Random() would), setstate() sets all of it
                twin = random.Random.__new__(random.Random, 0)
                twin.setstate(value.getstate())
                memo[id(value)] = twin
    try:
        return {name: {attr: value if type(value) in _IMMUTABLE else copy.deepcopy(value, memo)
                       for attr, value in d.items()}
                for name, d in dicts.items()}
    except (TypeError, copy.Error) as exc:
        # name the attribute that cannot be copied, so its owner can make it copyable
        for name, d in dicts.items():
            for attr, value in d.items():
                try:
                    copy.deepcopy(value, _memo(system, hubs))
                except (TypeError, copy.Error) as inner:
                    owner = type(hubs[name]).__name__
                    raise UsageError(f"cannot snapshot {owner}.{attr}: {inner}; give its class a __deepcopy__ "
                                     "(as lab.events.EventLog has) or keep it out of the layer") from None
        raise UsageError(f"cannot snapshot this system: {exc}") from None


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
    layers = _copy_layers(system, hubs, {name: dict(vars(obj)) for name, obj in hubs.items()})
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
    if set(hubs) != set(snap.layers):
        raise UsageError("the system's layers changed since the snapshot was taken "
                         f"({', '.join(sorted(set(hubs) ^ set(snap.layers)))}); take it again")
    fresh = _copy_layers(system, hubs, snap.layers)
    system.machine.restore(snap.machine)
    for name, obj in hubs.items():
        d = vars(obj)
        d.clear()
        d.update(fresh[name])
    return system
