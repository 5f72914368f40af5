"""worker - what runs schedules in a worker process: booted systems kept per boot, a snapshot restored per schedule.

A worker boots a system once for each (image, workload, parameters, seed,
quantum, model) it is given schedules of, snapshots it right after boot,
and keeps it (at most MAX_SYSTEMS, the least recently used closed first).
Schedules that make the same run for a while share it, from the second
schedule that wants it on (a random sample's instants are seldom met
twice, and a snapshot nobody restores only costs):

- those with no forced preemption up to the patch instant share the run to
  it: a snapshot there, before the load (at most MAX_PREFIXES a system);
- those with none up to the end of the load share the load too: a snapshot
  right after apply_patch() (one per patch and instant), so they run only
  their transition.

The cache is this module's: one per process, whoever calls run_batch() (a
Dask worker, or the process that explores with --workers 0).
"""
from __future__ import annotations

from collections import Counter, OrderedDict

from ..snapshot import snapshot
from .schedule import run_schedule

MAX_SYSTEMS = 6
MAX_PREFIXES = 4
_ASKED_MAX = 10_000

_SYSTEMS = OrderedDict()       # boot key -> _Booted
stats = {"boots": 0, "prefixes": 0, "loads": 0, "schedules": 0}   # what this process did, for tests and benchmarks


class _Booted:
    def __init__(self, system):
        self.system = system
        self.boot = snapshot(system)
        self.prefixes = OrderedDict()    # patch instant -> Snapshot taken there
        self.loads = OrderedDict()       # (patch, instant) -> (Snapshot after the load or None, gap)
        self.asked = Counter()           # how many schedules wanted each prefix so far


def _wanted(entry, key):
    """Whether a prefix snapshot is worth taking: from the second schedule
    that wants it on (a random sample's instant is rarely met twice, and a
    snapshot nobody restores again only costs)."""
    entry.asked[key] += 1
    if len(entry.asked) > _ASKED_MAX:
        entry.asked = Counter({key: entry.asked[key]})
    return entry.asked[key] >= 2


def _booted(plan, schedule):
    from ..system import boot
    key = (plan.image, plan.workload, plan.params, schedule.seed, schedule.quantum, plan.model)
    entry = _SYSTEMS.get(key)
    if entry is not None:
        _SYSTEMS.move_to_end(key)
        return entry
    system = boot(plan.image, workload=plan.workload, seed=schedule.seed, quantum=schedule.quantum,
                  model=plan.model, observe=True, params=plan.params_dict or None)
    entry = _SYSTEMS[key] = _Booted(system)
    stats["boots"] += 1
    while len(_SYSTEMS) > MAX_SYSTEMS:
        _key, old = _SYSTEMS.popitem(last=False)
        old.system.close()
    return entry


def _start(entry, schedule):
    """The snapshot a schedule starts from: the one at its patch instant
    when nothing is forced before it, else the one at boot."""
    at = schedule.patch_at
    if at <= entry.boot.at or any(p <= at for p in schedule.preemptions):
        return entry.boot
    snap = entry.prefixes.get(at)
    if snap is not None:
        entry.prefixes.move_to_end(at)
        return snap
    if not _wanted(entry, at):
        return entry.boot
    entry.boot.restore()
    entry.system.run(at - entry.system.clock)      # no preemption, no patch: the run every such schedule makes
    snap = entry.prefixes[at] = snapshot(entry.system)
    stats["prefixes"] += 1
    while len(entry.prefixes) > MAX_PREFIXES:
        entry.prefixes.popitem(last=False)
    return snap


def _loaded(entry, snap, schedule, patch):
    """The snapshot right after patch was applied at the schedule's instant,
    if the schedule may start there, else None.  It may when no forced
    preemption comes up to it and its fake signal interval could not have
    sent a signal during the load: the interval is read only at a slice's
    end while a transition runs (Livepatch._after_slice), and the load
    ended `gap` instructions after its transition started.  A load that is
    refused or panics is remembered as None: such schedules run whole."""
    from ..errors import LabError
    key = (patch, schedule.patch_at)
    if key in entry.loads:
        entry.loads.move_to_end(key)
        post, gap = entry.loads[key]
    elif not _wanted(entry, key):
        return None
    else:
        snap.restore()
        system = entry.system
        lp = system.livepatch
        lp.signal_after = None
        post, gap = None, 0
        try:
            system.apply_patch(patch)
            post = snapshot(system, loaded=True)
            t = lp.transition
            gap = post.at - t.started_at if t is not None else 0
        except LabError:
            pass
        entry.loads[key] = (post, gap)
        stats["loads"] += 1
        while len(entry.loads) > MAX_PREFIXES:
            entry.loads.popitem(last=False)
    if post is None or any(p <= post.at for p in schedule.preemptions):
        return None
    if schedule.signal_after is not None and schedule.signal_after <= gap:
        return None
    return post


def run_one(plan, schedule, probe=False):
    """Run one schedule of plan on this process's cached system; its Outcome."""
    entry = _booted(plan, schedule)
    stats["schedules"] += 1
    snap = _start(entry, schedule)
    if not probe and isinstance(plan.stack, str) and snap is not entry.boot:
        post = _loaded(entry, snap, schedule, plan.stack)
        if post is not None:
            return run_schedule(post, schedule, plan.stack, plan.model, plan.limit, tail=plan.tail, preloaded=True)
    return run_schedule(snap, schedule, plan.stack, plan.model, plan.limit, tail=plan.tail, probe=probe)


def run_batch(plan, schedules, probe=False):
    """run_one() for each schedule, in order: a list of Outcomes."""
    return [run_one(plan, s, probe) for s in schedules]


def forget():
    """Close every cached system (their engines and RAM go now)."""
    while _SYSTEMS:
        _key, entry = _SYSTEMS.popitem()
        entry.system.close()
