"""explorer - one exploration from start to verdict: probes, the planned schedules, the first failure shrunk, its trace and reproducer."""
from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass, field

from .plan import schedules_after
from .schedule import record, reproducer
from .shrink import shrink

MAX_KEPT = 20


@dataclass
class Exploration:
    """The verdict of one exploration (a patch under a model) and its figures."""

    plan: object
    probes: int = 0
    systematic: int = 0
    random: int = 0
    failures: list = field(default_factory=list)   # failing Outcomes found, in plan order
    refusals: list = field(default_factory=list)   # the first MAX_KEPT schedules the patch could not be applied in
    minimal: object = None                         # the first failure, shrunk
    shrink_runs: int = 0
    reproducer: str | None = None
    refusal_reproducer: str | None = None          # a `lab run` line of the first refusal
    trace: str | None = None
    completed: int = 0
    panics: int = 0
    refused: int = 0
    instructions: int = 0
    seconds: float = 0.0
    workers: int = 1
    where: str = "in this process"

    @property
    def schedules(self):
        """Schedules run while exploring (shrinking not counted)."""
        return self.probes + self.systematic + self.random

    @property
    def clean(self):
        return not self.failures

    @property
    def first(self):
        return self.failures[0] if self.failures else None

    @property
    def violations(self):
        """The violations of the failures found, each with the schedule that showed it."""
        return [dict(v, schedule=o.schedule.to_dict()) for o in self.failures for v in o.violations]

    def figures(self):
        return {
            "schedules": self.schedules, "probes": self.probes, "systematic": self.systematic,
            "random": self.random, "failing": len(self.failures), "shrink_runs": self.shrink_runs,
            "completed": self.completed, "panics": self.panics, "refused": self.refused,
            "instructions": self.instructions, "seconds": round(self.seconds, 3),
            "schedules_per_second": round(self.schedules / self.seconds, 2) if self.seconds else None,
            "workers": self.workers,
        }

    def to_dict(self):
        p = self.plan
        return {
            "patch": p.name, "model": p.model, "workload": p.workload, "params": dict(p.params),
            "clean": self.clean,
            "schedules_run": self.schedules,
            "violations": self.violations,
            "panics": [{"schedule": o.schedule.to_dict(), "panic": o.panic} for o in self.failures if o.panic],
            "refusals": [{"schedule": o.schedule.to_dict(), "reason": o.refused} for o in self.refusals],
            "refusal_reproducer": self.refusal_reproducer,
            "minimal_schedule": self.minimal.schedule.to_dict() if self.minimal else None,
            "minimal_outcome": self.minimal.to_dict() if self.minimal else None,
            "reproducer": self.reproducer,
            "trace": self.trace,
            "figures": self.figures(),
        }

    def __repr__(self):
        verdict = "clean" if self.clean else f"FAILED: {self.reproducer}"
        return f"<Exploration of {self.plan.name} under {self.plan.model}: {self.schedules} schedules, {verdict}>"


def explore(plan, runner=None, *, trace_dir=None, progress=None):
    """Explore plan's schedules on runner (default: this process) and
    return the Exploration.  The first failure (in the plan's order) is
    shrunk to a minimal schedule, recorded into trace_dir if given, and
    given as a `lab run` line that reproduces it.  progress(outcome) is
    called after each schedule."""
    from .runner import LocalRunner
    runner = runner or LocalRunner()
    result = Exploration(plan, workers=runner.workers, where=runner.where)
    started = time.perf_counter()
    stop = None if plan.all else (lambda o: o.failed)

    def take(outcomes, counter):
        for o in outcomes:
            setattr(result, counter, getattr(result, counter) + 1)
            result.completed += o.completed
            result.panics += o.panic is not None
            result.refused += o.refused is not None
            result.instructions += o.ran
            if o.failed:
                result.failures.append(o)
            if o.refused is not None and len(result.refusals) < MAX_KEPT:
                result.refusals.append(o)
            if progress is not None:
                progress(o)

    bases = plan.bases()[:plan.schedules]
    probes = []

    def keep(outcomes):
        for o in outcomes:
            probes.append(o)
            yield o
    take(keep(runner.run(plan, bases, probe=True, stop=stop)), "probes")
    if plan.all or not result.failures:
        systematic, randomly = schedules_after(plan, probes)
        take(runner.run(plan, systematic, stop=stop), "systematic")
        if plan.all or not result.failures:
            take(runner.run(plan, randomly, stop=stop), "random")
    kwargs = {"workload": plan.workload, "params": plan.params_dict or None, "image": plan.image}
    if result.refusals:
        first = result.refusals[0]
        result.refusal_reproducer = reproducer(first.schedule, first, plan.shown_stack, plan.model, **kwargs)
    if result.failures:
        result.minimal, result.shrink_runs = shrink(plan, runner, result.failures[0])
        s = result.minimal.schedule
        result.reproducer = reproducer(s, result.minimal, plan.shown_stack, plan.model, **kwargs)
        if trace_dir is not None:
            path = pathlib.Path(trace_dir) / trace_name(plan, result.minimal)
            record(s, plan.stack, plan.model, path, limit=plan.limit, tail=plan.tail, expect=result.minimal,
                   **kwargs)
            result.trace = str(path)
    result.seconds = time.perf_counter() - started
    return result


def trace_name(plan, outcome):
    s = outcome.schedule
    return f"{pathlib.Path(plan.patch).stem}-{plan.model}-seed{s.seed}-{outcome.digest[:12]}.trace"
