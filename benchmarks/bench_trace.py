"""bench_trace - what recording a trace costs a run, and how fast the viewer gets to any step of a long one.

record:  time of a run recording a trace (keyframes, observed events) over the
         same run not recording: the overhead ratio, lower is better.
seek:    on a recorded run of 5e7 instructions, the median time to build the
         step view of a random step (seek from the nearest keyframe, the
         task's previous step for the register changes, render): seconds,
         lower is better.
"""
from __future__ import annotations

import io
import pathlib
import random
import statistics
import tempfile
import time

from rich.console import Console

import lab
from run import BenchmarkFailed, alternate, benchmark, fmt_count, speed_ratio

PATCHES = pathlib.Path(__file__).resolve().parent.parent / "patches"
CAPABLE = PATCHES / "kgr_capable.o"
PATCH_AT = 1_000_000
SIGNAL_AFTER = 1_500_000
SEEK_INSTRUCTIONS = 50_000_000
SEEK_STEPS = 30


def _patched(image, quantum, record):
    """Booted, run to PATCH_AT and patched with capable(): the transition runs in the timed part."""
    system = lab.boot(image, quantum=quantum, signal_after=SIGNAL_AFTER, record=record)
    system.run(PATCH_AT - system.clock)
    system.apply_patch(CAPABLE)
    return system


@benchmark("record", goal=1.10, lower_is_better=True, description=(
    "time of a run recording a trace (lab.boot(record=True): keyframes every 1e6 instructions, system calls, "
    "patched-function entries, kthread loop tops) over the same run not recording, the capable() patch "
    "applied at 1e6 and its transition inside the timed part"))
def record(opts):
    image = lab.Image.load(opts.image)
    n, quantum = opts.instructions, opts.quantum

    def side(recording):
        def setup():
            system = _patched(image, quantum, recording)
            return system.run, (lambda: {"clock": system.clock, "digest": system.digest})
        return setup

    runs = alternate({"plain": side(False), "recording": side(True)}, opts.rounds, n,
                     chunk=opts.chunk * quantum if opts.chunk else None)
    reference = runs["plain"][0]["check"]
    for label, results in runs.items():
        for i, r in enumerate(results):
            if r["check"] != reference:
                raise BenchmarkFailed(f"{label} run {i + 1} ended at {r['check']} and plain run 1 at {reference}: "
                                      "recording changed the run, so the ratio would compare different work")
    ratio, per_round = speed_ratio(runs, "plain", "recording")    # recording seconds / plain seconds
    mips = {k: statistics.median(n / r["seconds"] / 1e6 for r in v) for k, v in runs.items()}
    return {"ratio": ratio, "round_ratios": per_round, "minstr_per_s": mips, "instructions": n,
            "details": ["recording/plain time per round: " + ", ".join(f"{x:.3f}" for x in per_round),
                        f"same events digest in all {2 * opts.rounds} runs: {reference['digest'][:16]}"],
            "summary": (f"record overhead (recording time / plain time): {ratio:.3f} (rounds {min(per_round):.2f}-"
                        f"{max(per_round):.2f}; recording "
                        f"{mips['recording']:.1f}, plain {mips['plain']:.1f} Minstr/s, {fmt_count(n)} instructions "
                        f"after the patch load, median of {opts.rounds})")}


@benchmark("seek", goal=0.2, lower_is_better=True, description=(
    f"median seconds to show a random step of a recorded {fmt_count(SEEK_INSTRUCTIONS)}-instruction run "
    f"(capable() patched at 1e6): lab.viewer Inspector.state (seek from the nearest keyframe, the task's "
    f"previous step) plus rendering the StepView, {SEEK_STEPS} random steps"))
def seek(opts):
    from lab.trace import Trace
    from lab.viewer import Inspector, StepView
    image = lab.Image.load(opts.image)
    with tempfile.TemporaryDirectory(prefix="lab-bench-seek-") as tmp:
        path = pathlib.Path(tmp) / "long.trace"
        t0 = time.perf_counter()
        system = _patched(image, opts.quantum, True)
        system.run(SEEK_INSTRUCTIONS - system.clock)
        system.save_trace(path)
        recorded = time.perf_counter() - t0
        size = path.stat().st_size
        trace = Trace.load(path, image=image)
        t0 = time.perf_counter()
        inspector = Inspector(trace)
        opened = time.perf_counter() - t0
        if trace.end != SEEK_INSTRUCTIONS:
            raise BenchmarkFailed(f"the recorded run ended at {trace.end:,}, not {SEEK_INSTRUCTIONS:,}")
        rng = random.Random(1)
        steps = [rng.randrange(trace.start, trace.end + 1) for _ in range(SEEK_STEPS)]
        seconds = []
        for step in steps:
            t0 = time.perf_counter()
            state = inspector.state(step)
            Console(file=io.StringIO(), width=140).print(StepView(state))
            seconds.append(time.perf_counter() - t0)
            if state.step != step or state.rip != state.regs["rip"]:
                raise BenchmarkFailed(f"the step view of {step:,} shows step {state.step:,}")
    median = statistics.median(seconds)
    return {"ratio": median, "seconds": seconds, "steps": steps, "instructions": SEEK_INSTRUCTIONS,
            "keyframes": len(trace.keyframes), "trace_bytes": size,
            "details": [f"recorded {fmt_count(SEEK_INSTRUCTIONS)} instructions in {recorded:.1f} s: "
                        f"{len(trace.keyframes)} keyframes, {len(trace.events):,} events, {size / 1e6:.1f} MB; "
                        f"index built in {opened:.2f} s",
                        f"per step: min {min(seconds):.3f} s, max {max(seconds):.3f} s"],
            "summary": (f"seek + step view: median {median:.3f} s over {SEEK_STEPS} random steps of a "
                        f"{fmt_count(SEEK_INSTRUCTIONS)}-instruction trace (max {max(seconds):.3f} s)")}
