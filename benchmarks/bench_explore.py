"""bench_explore - how fast `lab explore` runs schedules, as ratios taken in one run.

explore-rate:     schedules per second in one worker over the bound: bare
                  Unicorn's instructions per second on the same image
                  (benchmarks/bare.py) divided by the instructions one
                  schedule runs (from the snapshot it is restored to).  The
                  two sides take turns: a batch of schedules, then bare
                  Unicorn for as many instructions as the batch ran.
explore-scaling:  schedules per second of a local Dask cluster of two
                  worker processes over one of one worker, taking turns on
                  the same list of schedules (both clusters warmed first).
explore-restore:  the time a worker spends restoring a schedule's snapshot
                  over the time of the whole schedule, both timed in the
                  worker's own path: lower is better.  Booting a system
                  over restoring one is reported beside it.

    python benchmarks/run.py explore-rate explore-scaling explore-restore
    python benchmarks/bench_explore.py          (the same three)
"""
from __future__ import annotations

import gc
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import bare as bare_mod  # noqa: E402
from run import BenchmarkFailed, benchmark  # noqa: E402

import lab  # noqa: E402
from lab.explore import Plan  # noqa: E402
from lab.explore import worker  # noqa: E402
from lab.explore.plan import schedules_after  # noqa: E402
from lab.explore.runner import DaskRunner, LocalRunner  # noqa: E402
from lab import _native  # noqa: E402
from lab.snapshot import Snapshot  # noqa: E402

PATCHES = pathlib.Path(__file__).resolve().parent.parent / "patches"
CAPABLE = PATCHES / "kgr_capable.o"
BATCH = 24                  # schedules per turn of explore-rate
SCALING_SCHEDULES = 96      # schedules per turn of explore-scaling
RESTORE_SCHEDULES = 48      # schedules per round of explore-restore


def _plan(image, quantum, schedules):
    """One base schedule (so a worker keeps one booted system and one
    snapshot at the patch instant), its bounded preemptions and samples."""
    return Plan(str(CAPABLE), model="kgraft", image=str(image.path), seeds=(0,), quanta=(quantum,),
                patch_ats=(1_000_000,), signal_afters=(200_000,), schedules=schedules + 1, preemptions=2,
                instants=10)


def _schedules(plan):
    """The plan's schedules after its probe, probed here (the probe is not timed)."""
    probe = worker.run_one(plan, plan.bases()[0], probe=True)
    systematic, randomly = schedules_after(plan, [probe])
    return systematic + randomly


def _digests(outcomes):
    return [(o.schedule, o.digest) for o in outcomes]


@benchmark("explore-rate", goal=0.7, description=(
    "schedules per second in one worker over the bound: bare Unicorn's instructions per second on the same "
    "image (benchmarks/bare.py) divided by the instructions one schedule runs"))
def explore_rate(opts):
    image = lab.Image.load(opts.image)
    quantum = opts.quantum
    plan = _plan(image, quantum, BATCH * opts.rounds)
    schedules = _schedules(plan)
    runner = LocalRunner()
    list(runner.run(plan, schedules[:2]))              # warm: the boot and the snapshot at the patch instant
    bare = bare_mod.Bare(image, quantum=quantum)
    bare.run(2_000_000)
    rounds, rate, bound, per_round = [], [], [], []
    for r in range(opts.rounds):
        batch = schedules[r * BATCH:(r + 1) * BATCH]
        gc.collect()
        t0 = time.perf_counter()
        outcomes = list(runner.run(plan, batch))
        t_lab = time.perf_counter() - t0
        ran = sum(o.ran for o in outcomes)
        if len(outcomes) != len(batch) or any(o.refused or o.panic for o in outcomes):
            raise BenchmarkFailed("a schedule of the batch did not run to its end (refused or panicked)")
        t0 = time.perf_counter()
        bare.run(ran)
        t_bare = time.perf_counter() - t0
        per_schedule = ran / len(batch)
        rate.append(len(batch) / t_lab)
        bound.append((ran / t_bare) / per_schedule)
        per_round.append(t_bare / t_lab)
        rounds.append(per_schedule)
    # the in-process worker's booted system and snapshots go: the benchmarks
    # after this one (a Dask cluster's scheduler runs in this process) must
    # not pay for them in every collection
    worker.forget()
    del bare
    ratio = statistics.median(per_round)
    insns = statistics.median(rounds)
    summary = (f"schedules per second per worker / bound: {ratio:.2f} ({statistics.median(rate):.1f} schedules/s, "
               f"bound {statistics.median(bound):.1f}/s = bare Unicorn's instructions/s over {insns:,.0f} "
               f"instructions per schedule; {BATCH} schedules a turn, median of {opts.rounds})")
    return {"ratio": ratio, "summary": summary, "round_ratios": per_round,
            "schedules_per_second": statistics.median(rate), "bound_per_second": statistics.median(bound),
            "instructions_per_schedule": insns,
            "details": ["per round: " + ", ".join(f"{x:.2f}" for x in per_round)]}


@benchmark("explore-scaling", goal=1.7, description=(
    "schedules per second of a local Dask cluster of two worker processes over one of one worker, "
    "taking turns on the same schedules"))
def explore_scaling(opts):
    image = lab.Image.load(opts.image)
    plan = _plan(image, opts.quantum, SCALING_SCHEDULES)
    schedules = _schedules(plan)
    sides = {"one": DaskRunner.local(1), "two": DaskRunner.local(2)}
    try:
        for runner in sides.values():            # every worker boots and snapshots before the clock runs
            list(runner.run(plan, schedules))
        seconds = {k: [] for k in sides}
        reference = None
        for r in range(opts.rounds):
            for name in (("one", "two") if r % 2 == 0 else ("two", "one")):
                gc.collect()
                t0 = time.perf_counter()
                outcomes = list(sides[name].run(plan, schedules))
                seconds[name].append(time.perf_counter() - t0)
                got = _digests(outcomes)
                if reference is None:
                    reference = got
                elif got != reference:
                    raise BenchmarkFailed(f"the cluster of {name} ran the schedules to other ends than before")
    finally:
        for runner in sides.values():
            runner.close()
    per_round = [a / b for a, b in zip(seconds["one"], seconds["two"])]
    ratio = statistics.median(per_round)
    rates = {k: len(schedules) / statistics.median(v) for k, v in seconds.items()}
    summary = (f"two workers / one: {ratio:.2f} ({rates['two']:.1f} against {rates['one']:.1f} schedules/s, "
               f"{len(schedules)} schedules a turn, median of {opts.rounds})")
    return {"ratio": ratio, "summary": summary, "round_ratios": per_round, "schedules_per_second": rates,
            "details": ["per round: " + ", ".join(f"{x:.2f}" for x in per_round)]}


@benchmark("explore-restore", goal=0.05, lower_is_better=True, description=(
    "time a worker spends restoring snapshots for a schedule over the time of the whole schedule, timed inside "
    "the worker's own path (lab.explore.worker.run_one); booting over restoring is reported beside it"))
def explore_restore(opts):
    image = lab.Image.load(opts.image)
    plan = _plan(image, opts.quantum, RESTORE_SCHEDULES)
    schedules = _schedules(plan)
    worker.forget()
    for s in schedules:                  # warm: the boot and every snapshot the schedules start from
        worker.run_one(plan, s)
    # Each restore the worker makes, timed where it is made.  No collection
    # is forced between schedules: the worker forces none, and one (which
    # walks every object of the process) leaves the caches as a schedule's
    # run never does (a gc.collect() added before each schedule here gave
    # 0.067 where the worker's restores take about 0.04).
    taken = []
    plain = Snapshot.restore

    def timed(snap, system=None):
        t0 = time.perf_counter()
        plain(snap, system)
        taken.append(time.perf_counter() - t0)
    restores, runs, shares, reference = [], [], [], None
    # the page loop in C (lab/_pages.c) and, taking turns with it, in Python
    # (what runs where no compiler is): the figure is the C loop's
    native = _native.pages()
    sides = ("c", "python") if native is not None else ("python",)
    by_side = {side: [] for side in sides}
    Snapshot.restore = timed
    try:
        for r in range(max(opts.rounds, 3) * len(sides)):
            side = sides[(r + r // len(sides)) % len(sides)]
            _native._pages = native if side == "c" else None
            outcomes = []
            for s in schedules:
                del taken[:]
                t0 = time.perf_counter()
                outcomes.append(worker.run_one(plan, s))
                elapsed = time.perf_counter() - t0
                # a schedule restores once, or twice where its snapshot
                # right after the load is taken (the worker keeps a few)
                by_side[side].append(sum(taken))
                if side != sides[0]:
                    continue
                restores.append(sum(taken))
                runs.append(elapsed)
                shares.append(sum(taken) / elapsed)
            if reference is None:
                reference = _digests(outcomes)
            elif _digests(outcomes) != reference:
                raise BenchmarkFailed("schedules run from restored snapshots ended otherwise than the first time")
    finally:
        Snapshot.restore = plain
        _native._pages = native if native is not None else _native._UNSET
        worker.forget()
    boots = []
    for _ in range(max(opts.rounds, 3) * 4):
        t0 = time.perf_counter()
        lab.boot(image, quantum=opts.quantum, observe=True).close()
        boots.append(time.perf_counter() - t0)
    ratio = statistics.median(restores) / statistics.median(runs)
    boot_over_restore = statistics.median(boots) / statistics.median(restores)
    summary = (f"restore / schedule: {ratio:.3f} (restore {statistics.median(restores) * 1e3:.2f} ms, schedule "
               f"{statistics.median(runs) * 1e3:.1f} ms in the worker; a boot takes {boot_over_restore:.0f} times "
               f"a restore; {len(restores)} schedules)")
    return {"ratio": ratio, "summary": summary, "restore_seconds": statistics.median(restores),
            "schedule_seconds": statistics.median(runs), "boot_seconds": statistics.median(boots),
            "boot_over_restore": boot_over_restore,
            "details": [f"page loop in {sides[0]}" + (
                            f"; with it in Python, taking turns: restore {statistics.median(by_side['python']) * 1e3:.2f}"
                            f" ms, {statistics.median(by_side['python']) / statistics.median(by_side['c']):.2f} times "
                            "the C loop's" if native is not None else " (no C compiler)"),
                        f"per schedule, restore / schedule: median {statistics.median(shares):.3f}, "
                        f"90th percentile {sorted(shares)[int(len(shares) * 0.9)]:.3f}; "
                        f"all restores over all schedules {sum(restores) / sum(runs):.3f}"]}


if __name__ == "__main__":
    import run
    sys.exit(run.main(sys.argv[1:] or ["explore-rate", "explore-scaling", "explore-restore"]))
