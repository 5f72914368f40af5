"""schedule - one schedule of a patch's run: its inputs, running it on a booted or restored system, its outcome.

A schedule is what decides how a run interleaves: the boot seed (task order
and tick jitter), the quantum, the instant the patch is loaded, the fake
signal's interval and forced preemptions (reschedule IPIs) at exact
instructions.  The run is the one `lab run` makes with the same options, so
an outcome is reproduced by the `lab run` line reproducer() prints.
"""
from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass

from ..errors import KernelPanic, UsageError
from ..kernel import DEFAULT_QUANTUM
from ..livepatch import LivepatchError, PatchState

DEFAULT_PATCH_AT = 1_000_000     # lab run's default --patch-at
DEFAULT_LIMIT = 4_000_000        # instructions after the load a transition may take before the run ends
DEFAULT_TAIL = 300_000           # run on after completion: what a mixed unit does shows by then
MAX_PREEMPTIONS = 64             # forced preemptions in one schedule (lab run --preempt-at takes as many)
SIGNALLING_MODELS = ("kgraft", "klp")   # the models that send the fake signal while patching


@dataclass(frozen=True, order=True)
class Schedule:
    """The inputs that decide a run's interleaving (the patch and model are the exploration's)."""

    seed: int = 0
    quantum: int = DEFAULT_QUANTUM
    patch_at: int = DEFAULT_PATCH_AT
    signal_after: int | None = None
    preemptions: tuple = ()        # instruction counts, ascending, each once

    def __post_init__(self):
        for name in ("seed", "quantum", "patch_at"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"a schedule's {name} must be a whole number, not {value!r}")
        if self.signal_after is not None and (isinstance(self.signal_after, bool)
                                              or not isinstance(self.signal_after, int) or self.signal_after < 1):
            raise UsageError(f"a schedule's signal_after must be a positive number of instructions or None, "
                             f"not {self.signal_after!r}")
        pre = tuple(self.preemptions)
        if any(isinstance(p, bool) or not isinstance(p, int) for p in pre):
            raise UsageError(f"a schedule's preemptions are instruction counts, not {pre!r}")
        if len(pre) > MAX_PREEMPTIONS:
            raise UsageError(f"a schedule has at most {MAX_PREEMPTIONS} forced preemptions, not {len(pre)}")
        object.__setattr__(self, "preemptions", tuple(sorted(set(pre))))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return {"seed": self.seed, "quantum": self.quantum, "patch_at": self.patch_at,
                "signal_after": self.signal_after, "preemptions": list(self.preemptions)}

    def describe(self):
        """One line for a person: the schedule in words."""
        signal = f"fake signal every {self.signal_after:,}" if self.signal_after else "no fake signal"
        pre = ("forced preemptions at " + ", ".join(f"{p:,}" for p in self.preemptions)) if self.preemptions \
            else "no forced preemption"
        return f"seed {self.seed}, quantum {self.quantum:,}, patch at {self.patch_at:,}, {signal}, {pre}"


@dataclass(frozen=True)
class Instant:
    """An instant of a run worth a forced preemption: the entry into a
    patched function's pad, a trampoline, the old or the new version, or a
    task moving at a safe point."""

    at: int
    kind: str         # "pad", "trampoline", "old", "new", "safe-point"
    where: str


@dataclass(frozen=True)
class Outcome:
    """What one schedule's run came to."""

    schedule: Schedule
    violations: tuple          # the checker's findings, as Violation.to_dict() with task names
    state: str                 # the patch's state at the end, "refused", or "not loaded"
    completed: bool
    panic: str | None
    refused: str | None
    digest: str
    instructions: int          # the clock at the end: --instructions of the reproducer
    instants: tuple = ()       # Instant records, from a probe run
    ran: int = 0               # instructions this run retired (from the snapshot it started at)

    @property
    def failed(self):
        """A consistency violation or a kernel panic: what the explorer looks for."""
        return bool(self.violations) or self.panic is not None

    def signature(self):
        """What a failure is, without when: each violation's unit, patch and
        functions, and a panic.  The shrinker keeps a schedule that still
        shows one of these."""
        sig = {(v.get("rule", "mixed"), v["unit"], v["patch"], tuple(v["old"]), tuple(v["new"]))
               for v in self.violations}
        if self.panic is not None:
            sig.add(("panic",))
        return frozenset(sig)

    def summary(self):
        """The failure in one line, or how the run ended."""
        if self.violations:
            v = self.violations[0]
            more = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
            if v.get("rule", "mixed") == "mixed":
                return (f"{v['task']} ({v['tid']}) ran old {', '.join(v['old'])} and new {', '.join(v['new'])} "
                        f"of '{v['patch']}' in one {v['unit']} (mixed at {v['first_mixed_at']:,}){more}")
            if v.get("rule") == "stale":
                return (f"{v['task']} ({v['tid']}) entered {', '.join(v['old'])}, which the completed transition "
                        f"of '{v['patch']}' left (stale, at {v['first_mixed_at']:,}){more}")
            if v.get("rule") == "decision":
                return (f"{v['task']} ({v['tid']}) entered {', '.join(v['old'] + v['new'])} of '{v['patch']}', "
                        f"the version of the universe it was not in (decision, at {v['first_mixed_at']:,}){more}")
            return (f"{v['task']} ({v['tid']}) switched universe with {', '.join(v['old'] + v['new'])} of "
                    f"'{v['patch']}' on its stack ({v['rule']}, at {v['first_mixed_at']:,}){more}")
        if self.panic:
            return self.panic if self.panic.startswith("kernel panic") else f"kernel panic: {self.panic}"
        if self.refused:
            return f"refused: {self.refused}"
        return f"patch {self.state}"

    def to_dict(self):
        return {"schedule": self.schedule.to_dict(), "violations": list(self.violations), "state": self.state,
                "completed": self.completed, "panic": self.panic, "refused": self.refused,
                "digest": self.digest, "instructions": self.instructions}


class _Probe:
    """Records when the patched functions' pads and the trampolines are
    entered, with a code hook on each (only on those addresses): the pads
    given (a first run named them) from the start, the others from the
    slice their transition starts in, until it ends.  Entries into the old
    and new versions and the safe points come from the run's events."""

    def __init__(self, system, pads=()):
        self.system = system
        self.hits = []
        self._hooked = {}
        self._seen_transition = False
        for address, name in pads:
            self._hook(address, "pad", name)
        system.kernel.slice_hooks.append(self._after_slice)

    def _after_slice(self):
        # between slices (a hook never adds hooks): the transition's pads
        # and trampolines exist from the slice its start was requested in
        lp, ft = self.system.livepatch, self.system.ftrace
        t = lp.transition
        if t is None:
            if self._seen_transition:
                self._unhook()
            return
        self._seen_transition = True
        for pad in t.funcs:
            self._hook(pad, "pad", ft.symbolize(pad))
        for address, (_size, targets) in ft.trampolines().items():
            names = " / ".join(ft.symbolize(a) for a in targets) or "original"
            self._hook(address, "trampoline", f"trampoline to {names}")

    def _hook(self, address, kind, where):
        if address in self._hooked:
            return
        m = self.system.machine
        self._hooked[address] = m.add_code_hook(
            address, lambda _a, kind=kind, where=where: self.hits.append(Instant(m.clock, kind, where)))

    def _unhook(self):
        for handle in self._hooked.values():
            self.system.machine.remove_code_hook(handle)
        self._hooked = {}

    def instants(self, since, until):
        """Every instant recorded in since..until, and the events' ones, by time."""
        names = {t.tid: t.name for t in self.system.tasks}
        found = list(self.hits)
        for e in self.system.events:
            if e.kind == "call" and e.version in ("old", "new"):
                found.append(Instant(e.at, e.version, e.function))
            elif e.kind == "migrated":
                who = "interrupts" if e.tid == -1 else names.get(e.tid, str(e.tid))
                found.append(Instant(e.at, "safe-point", f"{who} by {e.by}"))
        seen, out = set(), []
        for i in sorted(found, key=lambda i: (i.at, i.kind, i.where)):
            if since < i.at <= until and i.at not in seen:
                seen.add(i.at)
                out.append(i)
        return tuple(out)

    def close(self):
        self._unhook()
        hooks = self.system.kernel.slice_hooks
        if self._after_slice in hooks:
            hooks.remove(self._after_slice)


def check_system(system, schedule, model, preloaded=False):
    """Refuse a system that cannot run schedule under model as it is.
    preloaded: the system was snapshotted right after the schedule's patch
    was loaded at its instant (the worker's shared run up to there)."""
    k = system.kernel
    if system.observer is None and system.recorder is None:
        raise UsageError("a schedule's verdict needs the checker: boot with observe=True")
    if (k.seed, k.quantum, system.livepatch.model) != (schedule.seed, schedule.quantum, model):
        raise UsageError(f"the system was booted with seed {k.seed}, quantum {k.quantum:,}, model "
                         f"{system.livepatch.model}; the schedule needs seed {schedule.seed}, quantum "
                         f"{schedule.quantum:,}, model {model}")
    if schedule.signal_after is not None and model not in SIGNALLING_MODELS:
        raise UsageError(f"a fake signal interval has no effect with model {model}, which never sends it")
    if system.clock > schedule.patch_at and not preloaded:
        raise UsageError(f"the patch instant {schedule.patch_at:,} comes before the system's clock "
                         f"({system.clock:,}); boot ends later than that, so give a later instant")
    early = [p for p in schedule.preemptions if p <= system.clock]
    if early:
        raise UsageError(f"a forced preemption at {early[0]:,} is not after the system's clock ({system.clock:,})")


def run_schedule(target, schedule, patch, model="kgraft", limit=DEFAULT_LIMIT, *, tail=DEFAULT_TAIL,
                 probe=False, workload="default", params=None, image=None, preloaded=False):
    """Run one schedule and return its Outcome.

    target: a Snapshot (restored first), a booted System that has not run
    past the schedule's patch instant (it is used up), or None (a system is
    booted for the run and closed after it).  The run: forced preemptions
    set, the kernel run to patch_at, the patch applied, the kernel run until
    the transition is over (at most limit instructions after patch_at), then
    tail instructions more.  preloaded: target is a Snapshot taken right
    after this schedule's (single) patch was applied at its instant, with
    the schedule's fake signal interval and no forced preemption before it
    (the run from there is the one the whole schedule makes).  probe=True also records the interesting
    instants of the run (Outcome.instants): on a snapshot (or None) the run
    is made twice, the second time watching the patched functions' pads
    from the start; on a System they are watched from the transition on."""
    from ..snapshot import Snapshot
    from ..system import System, boot
    if isinstance(target, Snapshot):
        target.restore()
        system = target.system
        if probe:
            check_system(system, schedule, model)
            return _probe(target, schedule, patch, limit, tail)
    elif isinstance(target, System):
        system = target
    elif target is None:
        from ..snapshot import snapshot
        with boot(image, workload=workload, seed=schedule.seed, quantum=schedule.quantum, model=model,
                  observe=True, params=params) as system:
            return run_schedule(snapshot(system) if probe else system, schedule, patch, model, limit, tail=tail,
                                probe=probe)
    else:
        raise UsageError(f"run_schedule runs on a Snapshot, a System or None, not {type(target).__name__}")
    if preloaded and (probe or len(patches_of(patch)) != 1 or not isinstance(target, Snapshot)):
        raise UsageError("a preloaded run starts from a snapshot taken after its one patch's load, without a probe")
    check_system(system, schedule, model, preloaded)
    return _run(system, schedule, patch, limit, tail, () if probe else None, preloaded)


def _probe(snap, schedule, patch, limit, tail):
    """A probe: the schedule's run, then the same run again from the same
    snapshot with a code hook on each pad the first run's patch switched,
    from the start (an instant before the switch, when a task may be
    stopped inside an old function, is known only once the patch said
    which).  The hooks only record, so both runs must end alike."""
    from ..errors import LabError
    first = _run(snap.system, schedule, patch, limit, tail, ())
    lp = snap.system.livepatch
    loaded = [p for p in lp.patches if p.description is not None and p.started_at is not None
              and p.started_at >= schedule.patch_at]
    pads = tuple(dict.fromkeys((f.old_addr, f.old_name) for p in loaded for f in p.description.functions))
    snap.restore()
    again = _run(snap.system, schedule, patch, limit, tail, pads)
    if again.digest != first.digest:
        raise LabError(f"probing {schedule.describe()} changed its run (digest {again.digest[:16]} against "
                       f"{first.digest[:16]}): a probe hook did more than record")
    return again


def _run(system, schedule, patch, limit, tail, probe, preloaded=False):
    """probe: None, or the pads to watch from the start ((address, name) pairs).
    preloaded: the patch was applied before the snapshot the run starts at."""
    k, lp = system.kernel, system.livepatch
    lp.signal_after = schedule.signal_after       # read only while a transition runs: as if given at boot
    start = system.clock
    if schedule.preemptions:
        k.preempt_at(list(schedule.preemptions))
    watch = _Probe(system, probe) if probe is not None else None
    before = len(lp.patches) - (1 if preloaded else 0)
    refused = panic = None
    try:
        steps(system, schedule, patch, limit, tail, preloaded)
    except _Refused as exc:
        refused = str(exc)
    except KernelPanic as exc:
        panic = str(exc)
    finally:
        if watch is not None:
            watch.close()
    applied = lp.patches[-1] if len(lp.patches) > before else None     # the last of a stack
    found = system.violations()
    names = {t.tid: t.name for t in system.tasks} if found else {}
    violations = tuple(v.to_dict(names) for v in found)
    state = "refused" if refused else (applied.state.value if applied else "not loaded")
    instants = ()
    if watch is not None:
        # up to the switch's completion, and a little after: a task stopped
        # right after an instantaneous switch may still return into old code
        done = applied.completed_at if applied is not None and applied.completed_at is not None else system.clock
        instants = watch.instants(schedule.patch_at, min(done + 2 * schedule.quantum, system.clock))
    return Outcome(schedule, violations, state, bool(applied and applied.state == PatchState.COMPLETE and not panic),
                   panic, refused, system.digest, system.clock, instants, system.clock - start)


class _Refused(Exception):
    pass


def patches_of(patch):
    """The patch objects a schedule loads in turn: one path, or a stack."""
    return (patch,) if isinstance(patch, (str, bytes)) or not hasattr(patch, "__iter__") else tuple(patch)


def steps(system, schedule, patch, limit, tail, preloaded=False):
    """The run itself, split exactly as `lab run` splits it (a run() that
    ends mid-slice lets the slice hooks act there, so where the pieces end
    matters): to patch_at, the load, then on; the stop at completion falls
    between two slices, where stopping changes nothing.  A stack of patches
    is loaded in turn, each as soon as the one before has completed, as
    `lab run --patch A --patch B` loads them.  preloaded: the first patch was
    applied already (at patch_at: the system is where apply_patch() left it)."""
    if system.clock < schedule.patch_at:
        system.run(schedule.patch_at - system.clock)
    end = schedule.patch_at + limit
    for i, path in enumerate(patches_of(patch)):
        if i:
            system.run_until_patched(max(end - system.clock, 0))
            if system.clock >= end or system.transition is not None:
                raise _Refused(f"{path} was not loaded: the patch before it had not completed at "
                               f"{system.clock:,}")
        if preloaded and not i:
            continue
        try:
            system.apply_patch(path)
        except LivepatchError as exc:
            raise _Refused(str(exc)) from None
    if system.clock < end:
        system.run(end - system.clock, until=lambda s: s.livepatch.busy is None)
    if tail and system.clock < end:
        system.run(min(tail, end - system.clock))


def reproducer(schedule, outcome, patch, model, *, workload="default", params=None, image=None):
    """The `lab run` line that makes the same run: the same failure, exit status 1."""
    argv = ["lab", "run"]
    for path in patches_of(patch):
        argv += ["--patch", str(path)]
    argv += ["--model", model]
    if workload != "default":
        argv += ["--workload", workload]
    for name, value in sorted((params or {}).items()):
        argv += ["--param", f"{name}={value}"]
    if image is not None:
        argv += ["--image", str(image)]
    argv += ["--seed", str(schedule.seed), "--quantum", str(schedule.quantum), "--patch-at", str(schedule.patch_at)]
    end = outcome.instructions
    # an interval whose first signal would come after the end sent none: lab run refuses it, and it changed nothing
    if schedule.signal_after is not None and schedule.patch_at + schedule.signal_after < end:
        argv += ["--signal-after", str(schedule.signal_after)]
    pre = [p for p in schedule.preemptions if p < end]     # one at the end or later was never delivered
    if pre:
        argv += ["--preempt-at", ",".join(str(p) for p in pre)]
    argv += ["--instructions", str(end)]
    return shlex.join(argv)


def record(schedule, patch, model, path, *, limit=DEFAULT_LIMIT, tail=DEFAULT_TAIL, workload="default",
           params=None, image=None, expect=None):
    """Run schedule again on a fresh system that records a trace, and save
    it to path.  expect: the Outcome it must reproduce (same digest), or
    the trace would show another run."""
    from ..errors import LabError
    from ..system import boot
    with boot(image, workload=workload, seed=schedule.seed, quantum=schedule.quantum, model=model,
              record=True, params=params) as system:
        check_system(system, schedule, model)
        outcome = _run(system, schedule, patch, limit, tail, None)
        if expect is not None and outcome.digest != expect.digest:
            raise LabError(f"the recorded run of {schedule.describe()} differs from the explored one "
                           f"(digest {outcome.digest[:16]} against {expect.digest[:16]}): the run is not "
                           "deterministic, and its verdict cannot be trusted")
        system.save_trace(path)
    return outcome
