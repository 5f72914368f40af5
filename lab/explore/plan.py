"""plan - what an exploration covers and the schedules it runs: base schedules, bounded preemptions, random samples.

Every base schedule (a seed, quantum, patch instant and fake-signal
interval of the plan's lists) runs first as a probe, which also records the
run's interesting instants (Instant).  Then, as CHESS bounds preemptions,
every set of at most `preemptions` forced preemptions among the first
`instants` interesting instants of each base (taken in turn from each kind
of instant, so a hot function does not fill the list alone), fewest
preemptions first; and a quarter of the budget sampled at random with a
seeded random.Random: near an interesting instant, or anywhere in the
transition, sometimes with the load or the fake signal moved.  The order is
fixed by the plan alone, so "the first failing schedule" is the same on one
worker or on fifty.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from ..errors import UsageError
from ..kernel import DEFAULT_QUANTUM
from .schedule import DEFAULT_LIMIT, DEFAULT_PATCH_AT, DEFAULT_TAIL, SIGNALLING_MODELS, Schedule

DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_QUANTA = (DEFAULT_QUANTUM, 7_000)
DEFAULT_PATCH_ATS = (DEFAULT_PATCH_AT, 1_250_000)
DEFAULT_SIGNALS = (200_000, 700_000)   # for the models that send the fake signal
DEFAULT_PREEMPTIONS = 2
DEFAULT_INSTANTS = 8
DEFAULT_SCHEDULES = 200
RANDOM_SHARE = 4           # one schedule in RANDOM_SHARE after the probes is a random sample


@dataclass(frozen=True)
class Plan:
    """One exploration: a patch under a model, the schedules to try, the budget."""

    patch: str                          # the object, as the workers open it
    model: str = "kgraft"
    workload: str = "default"
    params: tuple = ()                  # (name, value) pairs of the workload's parameters
    image: str | None = None
    seeds: tuple = DEFAULT_SEEDS
    quanta: tuple = DEFAULT_QUANTA
    patch_ats: tuple = DEFAULT_PATCH_ATS
    signal_afters: tuple | None = None  # None: DEFAULT_SIGNALS for a signalling model
    preemptions: int = DEFAULT_PREEMPTIONS
    instants: int = DEFAULT_INSTANTS
    schedules: int = DEFAULT_SCHEDULES
    sample_seed: int = 0
    limit: int = DEFAULT_LIMIT
    tail: int = DEFAULT_TAIL
    all: bool = False                   # go on after the first failure
    shown: str | None = None            # the patch as the user named it, for reproducers and reports
    then: tuple = ()                    # patches loaded in turn after it, each once the one before completed
    then_shown: tuple = ()              # the same, as the user named them

    def __post_init__(self):
        for name in ("seeds", "quanta", "patch_ats"):
            if not getattr(self, name):
                raise UsageError(f"an exploration needs at least one value in {name}")
        if self.schedules < 1:
            raise UsageError("an exploration runs at least one schedule")
        if self.preemptions < 0 or self.instants < 1:
            raise UsageError("preemptions must be 0 or more and instants 1 or more")
        if self.signal_afters is not None and self.model not in SIGNALLING_MODELS \
                and any(s is not None for s in self.signal_afters):
            raise UsageError(f"a fake signal interval has no effect with model {self.model}, which never sends it")

    @property
    def name(self):
        return self.shown or self.patch

    @property
    def stack(self):
        """What a schedule loads: the patch, then the `then` ones in turn."""
        return (self.patch, *self.then) if self.then else self.patch

    @property
    def shown_stack(self):
        return (self.name, *(self.then_shown or self.then)) if self.then else self.name

    @property
    def params_dict(self):
        return dict(self.params)

    def signals(self):
        if self.model not in SIGNALLING_MODELS:
            return (None,)
        return tuple(self.signal_afters) if self.signal_afters else DEFAULT_SIGNALS

    def bases(self):
        """Every base schedule, the seeds varying fastest (so a small budget still sees several)."""
        return [Schedule(seed, quantum, patch_at, signal)
                for patch_at, signal, quantum, seed in itertools.product(self.patch_ats, self.signals(), self.quanta,
                                                                         self.seeds)]


def choose_instants(instants, m):
    """The first m instants, taken in turn from each kind, in time order."""
    queues = {}
    for i in instants:
        queues.setdefault(i.kind, []).append(i)
    order = sorted(queues.values(), key=lambda q: q[0].at)
    chosen = []
    while len(chosen) < m and any(order):
        for q in order:
            if q and len(chosen) < m:
                chosen.append(q.pop(0))
    return sorted(chosen, key=lambda i: i.at)


def systematic(probe, k, m):
    """A base's schedules with 1..k forced preemptions among its first m
    instants, fewest first."""
    points = [i.at for i in choose_instants(probe.instants, m)]
    for n in range(1, k + 1):
        for combo in itertools.combinations(points, n):
            yield probe.schedule.replace(preemptions=combo)


def sample(rng, probe, plan):
    """One random schedule around a base: 1..k preemptions near an
    interesting instant (a few instructions in: inside a trampoline or a
    prologue) or anywhere up to the base run's end; now and then the load
    moved within a slice or another fake signal interval."""
    base = probe.schedule
    k = rng.randint(1, plan.preemptions) if plan.preemptions else 0
    pool = [i.at for i in probe.instants]
    end = max(probe.instructions, base.patch_at + 2)
    points = set()
    for _ in range(k):
        if pool and rng.random() < 0.5:
            points.add(rng.choice(pool) + rng.randint(0, 3))
        else:
            points.add(rng.randint(base.patch_at + 1, end))
    changes = {"preemptions": tuple(points)}
    if rng.random() < 0.25:
        changes["patch_at"] = base.patch_at + rng.randint(1, base.quantum)
    if plan.model in SIGNALLING_MODELS and rng.random() < 0.25:
        changes["signal_after"] = rng.randint(50_000, 2_000_000)
    return base.replace(**changes)


def schedules_after(plan, probes):
    """(systematic, random): what runs after the probes, within the budget: the systematic
    schedules shared out among the bases (each base's run together, so a
    worker restores one snapshot after another), then the random ones,
    grouped by base too."""
    budget = plan.schedules - len(probes)
    if budget <= 0 or not probes:
        return [], []
    n_random = budget // RANDOM_SHARE if plan.preemptions else 0
    n_systematic = budget - n_random
    streams = [systematic(p, plan.preemptions, plan.instants) for p in probes]
    taken = [[] for _ in probes]
    live = list(range(len(probes)))
    used = 0
    while used < n_systematic and live:
        for b in list(live):
            if used >= n_systematic:
                break
            nxt = next(streams[b], None)
            if nxt is None:
                live.remove(b)
                continue
            taken[b].append(nxt)
            used += 1
    n_random += n_systematic - used
    seen = {p.schedule for p in probes} | {s for group in taken for s in group}
    rng = random.Random(plan.sample_seed)
    drawn = [[] for _ in probes]
    tries = 0
    while sum(map(len, drawn)) < n_random and tries < 20 * n_random + 100:
        tries += 1
        b = rng.randrange(len(probes))
        s = sample(rng, probes[b], plan)
        if s not in seen:
            seen.add(s)
            drawn[b].append(s)
    return [s for group in taken for s in group], [s for group in drawn for s in group]
