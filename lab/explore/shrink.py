"""shrink - a failing schedule made minimal: fewer forced preemptions, the other inputs at their defaults, the failure kept.

Each round proposes the schedules one step simpler than the current one,
simplest first: every forced preemption dropped at once, then each one
alone, the patch instant at `lab run`'s default, no fake signal, seed 0,
the default quantum.  The first of them (in that order) that still shows one
of the original failures (Outcome.signature: the unit, the patch and the
functions of a violation, or a panic) becomes the current one; when none
does, the current schedule is minimal.  Every step makes the schedule
strictly simpler, so shrinking ends.
"""
from __future__ import annotations

from ..kernel import DEFAULT_QUANTUM
from .schedule import DEFAULT_PATCH_AT

MAX_RUNS = 200


def simpler(schedule):
    """The candidates one step simpler than schedule, simplest first."""
    pre = schedule.preemptions
    out = []
    if len(pre) > 1:
        out.append(schedule.replace(preemptions=()))
    for i in range(len(pre)):
        out.append(schedule.replace(preemptions=pre[:i] + pre[i + 1:]))
    if schedule.patch_at != DEFAULT_PATCH_AT:
        out.append(schedule.replace(patch_at=DEFAULT_PATCH_AT))
    if schedule.signal_after is not None:
        out.append(schedule.replace(signal_after=None))
    if schedule.seed != 0:
        out.append(schedule.replace(seed=0))
    if schedule.quantum != DEFAULT_QUANTUM:
        out.append(schedule.replace(quantum=DEFAULT_QUANTUM))
    return out


def shrink(plan, runner, outcome, max_runs=MAX_RUNS):
    """(the minimal failing Outcome, schedules run).  outcome must have failed."""
    target = outcome.signature()
    if not target:
        raise ValueError("only a failing outcome can be shrunk")

    def keeps(o):
        return bool(o.signature() & target)

    best, runs = outcome, 0
    while runs < max_runs:
        candidates = simpler(best.schedule)[:max_runs - runs]
        if not candidates:
            break
        found = None
        for o in runner.run(plan, candidates, stop=keeps):
            runs += 1
            if keeps(o):
                found = o
        if found is None:
            break
        best = found
    return best, runs
