"""bench_scale - what the lab costs as the work grows: more tasks, longer runs, a billion-instruction trace.

tasks:       lab and bare.py on the hammer workload with nr_hammer = 1, 4, 8,
             32 and 64 user tasks (the firmware takes up to 67: NR_TASKS is 72
             and five slots go to the other tasks), and at 64 the lab once
             more without its kernel stack guard pages, all eleven sides
             taking turns in one run: lab/bare at each size, each side's
             throughput over its own at 1 task, and what the guard pages
             cost at 64.
length:      a plain run and a recording run of the default workload, 1e8
             instructions each (capable() patched at 1e6), taking turns; the
             throughput of each window of 2e7 over the first window's, and
             recording/plain per window: flat if nothing grows with the run.
seek-scale:  a 1e9-instruction trace (`make bench-seek`; minutes): recorded in
             a child process that reports its RSS every 1e8 instructions and
             its peak; then loaded, verified once, and shown at 3 random
             steps in each tenth of the run (seek + step view + render).
             The figure is the median seconds per step.
"""
from __future__ import annotations

import gc
import io
import json
import os
import pathlib
import random
import statistics
import subprocess
import sys
import tempfile
import time

import bare as bare_mod
import lab
from lab import kernel as lab_kernel
from run import BenchmarkFailed, _observables, alternate, benchmark, fmt_count

TASKS = (1, 4, 8, 32, 64)
LENGTH = 100_000_000
WINDOW = 20_000_000
SCALE_INSTRUCTIONS = 1_000_000_000
SCALE_REPORT_EVERY = 100_000_000
SCALE_STEPS_PER_TENTH = 3


def _spread(xs):
    return f"{min(xs):.2f}-{max(xs):.2f}"


@benchmark("tasks", description=(
    "lab and bare.py on the hammer workload with 1, 4, 8, 32 and 64 user tasks, all sides taking turns: "
    "lab/bare at each size; the figure is lab/bare at 64 tasks"))
def tasks(opts):
    image = lab.Image.load(opts.image)
    n, quantum = opts.instructions, opts.quantum
    (limit,) = [p.maximum for w in image.workloads if w.name == "hammer" for p in w.params if p.name == "nr_hammer"]
    sides, booted, guards = {}, {}, {}
    stacks = image.address("task_stacks")
    stacks = (stacks, stacks + image.const("NR_TASKS_MAX") * image.const("KSTACK_SLOT_BYTES"))
    for k in TASKS:
        params = {"nr_hammer": k}
        booted[k] = at = lab.boot(image, quantum=quantum, workload="hammer", params=params).clock

        def lab_side(params=params, at=at, guarded=True):
            if guarded:
                system = lab.boot(image, quantum=quantum, workload="hammer", params=params)
            else:
                # no guard page below any kernel stack: the hammer workload creates all its
                # tasks while it boots, and Kernel._guard_slot() does nothing meanwhile
                kept, lab_kernel.Kernel._guard_slot = lab_kernel.Kernel._guard_slot, lambda self, tid: None
                try:
                    system = lab.boot(image, quantum=quantum, workload="hammer", params=params)
                finally:
                    lab_kernel.Kernel._guard_slot = kept
            m = system.machine
            if m.clock != at:
                raise BenchmarkFailed(f"the lab booted hammer {params} in {m.clock} instructions once, {at} another time")
            guards[params["nr_hammer"], guarded] = sum(stacks[0] <= lo < stacks[1] for lo, _hi in m.guard_pages)
            return system.run, (lambda: _observables(image, list(m.regs().values()), m.ram, m.u64))

        def bare_side(k=k, at=at):
            b = bare_mod.Bare(image, quantum=quantum, cmdline=f"workload=hammer nr_hammer={k}")
            b.run(at)
            return b.run, (lambda: _observables(image, b.regs(), b.ram, b.u64))
        sides[f"lab-{k}"], sides[f"bare-{k}"] = lab_side, bare_side
    # at the largest size, the lab once more without its kernel stack guard pages: what they cost there
    top_k = TASKS[-1]
    sides[f"unguarded-{top_k}"] = lambda: lab_side({"nr_hammer": top_k}, booted[top_k], guarded=False)
    chunk = opts.chunk * quantum if opts.chunk else None
    runs = alternate(sides, opts.rounds, n, chunk=chunk)
    rows, per_size = [], {}
    for k in TASKS:
        ref = runs[f"bare-{k}"][0]["check"]
        for label in (f"lab-{k}", f"bare-{k}") + ((f"unguarded-{k}",) if k == top_k else ()):
            for i, r in enumerate(runs[label]):
                if r["check"] != ref:
                    raise BenchmarkFailed(f"{label} run {i + 1} ended in another state than bare-{k} run 1: "
                                          "bare.py no longer drives the hammer workload as the lab does")
        ratios = [lab_r["seconds"] and b["seconds"] / lab_r["seconds"]
                  for lab_r, b in zip(runs[f"lab-{k}"], runs[f"bare-{k}"])]
        mips = {s: statistics.median(n / r["seconds"] / 1e6 for r in runs[f"{s}-{k}"]) for s in ("lab", "bare")}
        grow = {s: [runs[f"{s}-1"][i]["seconds"] / runs[f"{s}-{k}"][i]["seconds"] for i in range(opts.rounds)]
                for s in ("lab", "bare")}
        per_size[k] = {"lab_over_bare": statistics.median(ratios), "round_ratios": ratios, "minstr_per_s": mips,
                       "lab_over_1": statistics.median(grow["lab"]), "bare_over_1": statistics.median(grow["bare"]),
                       "syscalls": sum(ref["syscalls"]), "booted_at": booted[k]}
        rows.append(f"{k:>5} | {mips['lab']:>8.1f} | {mips['bare']:>8.1f} | {statistics.median(ratios):.2f} "
                    f"({_spread(ratios)}) | {per_size[k]['lab_over_1']:.2f} | {per_size[k]['bare_over_1']:.2f} | "
                    f"{sum(ref['syscalls']):,}")
    top = per_size[top_k]
    bare_s = [r["seconds"] for r in runs[f"bare-{top_k}"]]
    unguarded = [b / r["seconds"] for r, b in zip(runs[f"unguarded-{top_k}"], bare_s)]
    top["unguarded_over_bare"], top["unguarded_round_ratios"] = statistics.median(unguarded), unguarded
    details = [f"hammer, {fmt_count(n)} instructions after boot, quantum {quantum}, median of {opts.rounds}; "
               f"every run of a size ends in the state of bare's first run of that size",
               "tasks | lab Minstr/s | bare Minstr/s | lab/bare (rounds) | lab over 1 task | bare over 1 task | "
               "system calls", *rows,
               f"the firmware has NR_TASKS = {image.const('NR_TASKS_MAX')} slots, 5 of them for the other tasks: "
               f"nr_hammer goes up to {limit}",
               # what grows with the tasks: in the guest, schedule() and the timer's walk over the slots in
               # use (both sides alike: fewer system calls in the same instructions); in the lab alone,
               # the guard pages below the kernel stacks, each a Unicorn memory region of its own
               f"the lab's kernel stack guard pages: {guards[1, True]} at 1 task, {guards[top_k, True]} at {top_k} "
               f"(bare sets none); without them, lab/bare at {top_k} tasks is {statistics.median(unguarded):.2f} "
               f"({_spread(unguarded)})"]
    return {"ratio": top["lab_over_bare"], "tasks": per_size, "instructions": n, "details": details,
            "summary": f"lab/bare at {TASKS[-1]} hammer tasks: {top['lab_over_bare']:.2f} (rounds "
                       f"{_spread(top['round_ratios'])}; 1 task {per_size[1]['lab_over_bare']:.2f}; the lab at "
                       f"{TASKS[-1]} tasks runs {top['lab_over_1']:.2f} of its speed at 1)"}


@benchmark("length", description=(
    f"plain and recording runs of {fmt_count(LENGTH)} instructions taking turns: each {fmt_count(WINDOW)} "
    "window's throughput over the first's, and recording/plain per window; the figure is the last window's "
    "plain throughput over the first's"))
def length(opts):
    from bench_trace import _patched
    image = lab.Image.load(opts.image)
    quantum = opts.quantum
    chunk = (opts.chunk or 20) * quantum
    windows = LENGTH // WINDOW
    table = {label: [[0.0] * windows for _ in range(opts.rounds)] for label in ("plain", "recording")}
    for rnd in range(opts.rounds):
        systems = {"plain": _patched(image, quantum, False), "recording": _patched(image, quantum, True)}
        gc.collect()        # the last round's systems go now, not inside this round's timing (as alternate())
        done, turn = 0, 0
        while done < LENGTH:
            k = min(chunk, LENGTH - done, WINDOW - done % WINDOW)
            for label in (("plain", "recording") if turn % 2 == 0 else ("recording", "plain")):
                t0 = time.perf_counter()
                systems[label].run(k)
                table[label][rnd][done // WINDOW] += time.perf_counter() - t0
            done += k
            turn += 1
        if systems["plain"].digest != systems["recording"].digest:
            raise BenchmarkFailed("recording changed the run: the two sides' events differ")
        for system in systems.values():
            system.close()
    rows, last = [], None
    for w in range(windows):
        plain = [WINDOW / table["plain"][r][w] / 1e6 for r in range(opts.rounds)]
        over_first = [table["plain"][r][0] / table["plain"][r][w] for r in range(opts.rounds)]
        rec_first = [table["recording"][r][0] / table["recording"][r][w] for r in range(opts.rounds)]
        overhead = [table["recording"][r][w] / table["plain"][r][w] for r in range(opts.rounds)]
        rows.append(f"{fmt_count(w * WINDOW + 1_000_000):>6}.. | {statistics.median(plain):>6.1f} | "
                    f"{statistics.median(over_first):.2f} | {statistics.median(rec_first):.2f} | "
                    f"{statistics.median(overhead):.2f} ({_spread(overhead)})")
        last = (statistics.median(over_first), over_first)
    details = [f"default workload, capable() patched at 1e6, median of {opts.rounds}",
               "window from | plain Minstr/s | plain over window 1 | recording over window 1 | recording/plain (rounds)",
               *rows]
    return {"ratio": last[0], "details": details, "windows": table,
            "summary": f"plain throughput in the last {fmt_count(WINDOW)} of {fmt_count(LENGTH)} instructions over "
                       f"the first: {last[0]:.2f} (rounds {_spread(last[1])})"}


# ---- a billion instructions ----

def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _record_child(path, instructions, image):
    """In a fresh process: record `instructions` (capable() patched at 1e6),
    print one JSON line per SCALE_REPORT_EVERY with the RSS, then save."""
    import resource

    from bench_trace import _patched
    img = lab.Image.load(image)
    t0 = time.perf_counter()
    system = _patched(img, lab.kernel.DEFAULT_QUANTUM, True)
    print(json.dumps({"at": system.clock, "rss_mb": _rss_mb(), "events": len(system.events)}), flush=True)
    while system.clock < instructions:
        system.run(min(SCALE_REPORT_EVERY - system.clock % SCALE_REPORT_EVERY, instructions - system.clock))
        print(json.dumps({"at": system.clock, "rss_mb": _rss_mb(), "events": len(system.events),
                          "keyframe_bytes": system.recorder._blobs.tell()}), flush=True)
    recorded = time.perf_counter() - t0
    system.save_trace(path)
    print(json.dumps({"saved": True, "record_s": recorded, "save_s": time.perf_counter() - t0 - recorded,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


@benchmark("seek-scale", goal=0.05, lower_is_better=True, default=False, description=(
    f"median seconds to seek to and show a step of a {fmt_count(SCALE_INSTRUCTIONS)}-instruction trace, "
    f"{SCALE_STEPS_PER_TENTH} random steps in each tenth; with the recording's RSS per "
    f"{fmt_count(SCALE_REPORT_EVERY)} instructions and its peak (make bench-seek; minutes)"))
def seek_scale(opts):
    from rich.console import Console

    from lab.trace import Trace
    from lab.viewer import Inspector, StepView
    image = lab.Image.load(opts.image)
    with tempfile.TemporaryDirectory(prefix="lab-bench-scale-") as tmp:
        path = pathlib.Path(tmp) / "billion.trace"
        child = subprocess.run(
            [sys.executable, __file__, "--record-child", str(path), str(SCALE_INSTRUCTIONS), str(image.path)],
            capture_output=True, text=True, cwd=pathlib.Path(__file__).resolve().parent)
        if child.returncode:
            raise BenchmarkFailed(f"recording {fmt_count(SCALE_INSTRUCTIONS)} instructions failed: "
                                  f"{child.stderr.strip().splitlines()[-1] if child.stderr.strip() else child.returncode}")
        lines = [json.loads(x) for x in child.stdout.splitlines() if x.startswith("{")]
        samples = [x for x in lines if "at" in x]
        saved = next(x for x in lines if x.get("saved"))
        size = path.stat().st_size
        t0 = time.perf_counter()
        trace = Trace.load(path, image=image)
        loaded = time.perf_counter() - t0
        if trace.end != SCALE_INSTRUCTIONS:
            raise BenchmarkFailed(f"the recorded run ended at {trace.end:,}, not {SCALE_INSTRUCTIONS:,}")
        t0 = time.perf_counter()
        inspector = Inspector(trace)
        opened = time.perf_counter() - t0
        t0 = time.perf_counter()
        trace.verify()
        verified = time.perf_counter() - t0
        rng = random.Random(1)
        tenth = (trace.end - trace.start) // 10
        steps = [(t, rng.randrange(trace.start + t * tenth, trace.start + (t + 1) * tenth))
                 for t in range(10) for _ in range(SCALE_STEPS_PER_TENTH)]
        rng.shuffle(steps)
        by_tenth = {t: [] for t in range(10)}
        for t, step in steps:
            replayed = trace.replayed
            t0 = time.perf_counter()
            state = inspector.state(step)
            Console(file=io.StringIO(), width=140).print(StepView(state))
            by_tenth[t].append((time.perf_counter() - t0, trace.replayed - replayed))
            if state.step != step:
                raise BenchmarkFailed(f"the step view of {step:,} shows step {state.step:,}")
        trace.close()
    seconds = [s for v in by_tenth.values() for s, _ in v]
    median = statistics.median(seconds)
    growth = [(b["rss_mb"] - a["rss_mb"]) / ((b["at"] - a["at"]) / 1e8) for a, b in zip(samples[1:], samples[2:])]
    per_1e8 = statistics.median(growth) if growth else float("nan")
    details = [
        f"recorded {fmt_count(SCALE_INSTRUCTIONS)} instructions in {saved['record_s']:.0f} s, saved in "
        f"{saved['save_s']:.1f} s: {size / 1e6:.1f} MB ({size / 1e6 / (SCALE_INSTRUCTIONS / 1e8):.2f} MB per 1e8 "
        f"instructions), {len(trace.keyframes):,} keyframes, {len(trace.events):,} events",
        "recording RSS MB at each 1e8: " + ", ".join(f"{x['rss_mb']:.0f}" for x in samples)
        + f"; peak {saved['peak_rss_mb']:.0f} (saving included); growth {per_1e8:.1f} MB per 1e8 instructions "
          f"(the run's event log: {samples[-1]['events'] / (SCALE_INSTRUCTIONS / 1e8):,.0f} events per 1e8; "
          f"keyframes {samples[-1].get('keyframe_bytes', 0) / 1e6 / (SCALE_INSTRUCTIONS / 1e8):.2f} MB per 1e8)",
        f"loaded in {loaded:.1f} s, index built in {opened:.1f} s, verified once against its replay in {verified:.0f} s",
        "median s per tenth of the run: " + ", ".join(f"{statistics.median(s for s, _ in by_tenth[t]):.3f}"
                                                      for t in range(10)),
        "instructions replayed per step, most: " + f"{max(r for v in by_tenth.values() for _, r in v):,}",
    ]
    return {"ratio": median, "seconds": seconds, "details": details, "trace_bytes": size,
            "rss_mb": samples, "peak_rss_mb": saved["peak_rss_mb"], "rss_mb_per_1e8": per_1e8,
            "verify_s": verified, "load_s": loaded,
            "summary": f"seek + step view on a {fmt_count(SCALE_INSTRUCTIONS)}-instruction trace: median "
                       f"{median:.3f} s over {len(seconds)} steps (max {max(seconds):.3f} s); recording RSS +"
                       f"{per_1e8:.1f} MB per 1e8 instructions, peak {saved['peak_rss_mb']:.0f} MB; "
                       f"trace {size / 1e6 / (SCALE_INSTRUCTIONS / 1e8):.2f} MB per 1e8"}


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--record-child":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    _record_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
