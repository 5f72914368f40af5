"""run - the lab's speed figures, each a ratio of two runs measured in one process.

    python benchmarks/run.py                    all benchmarks
    python benchmarks/run.py throughput         only the named ones
    python benchmarks/run.py --list             what there is
    python benchmarks/run.py --json             one JSON document (schema 1) on stdout

A benchmark is a function registered with @benchmark; it receives the parsed
options and returns a dict holding at least `ratio` and `summary` (one line).
Ratios, not absolute figures, are what the README quotes: the two sides of a
ratio run alternately in the same process, so machine speed and most noise
cancel.

Exit status: 0; 1 when a benchmark's two sides did not do the same work (a
figure that must not be quoted) or, with --check, when a ratio misses its goal;
2 on a usage error.
"""
from __future__ import annotations

import argparse
import gc
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import bare as bare_mod  # noqa: E402  (benchmarks/bare.py, next to this file)

import lab  # noqa: E402
from lab import kernel as lab_kernel  # noqa: E402
from lab import machine as lab_machine  # noqa: E402

SCHEMA = 1
DEFAULT_INSTRUCTIONS = 20_000_000
DEFAULT_ROUNDS = 5
WARMUP_INSTRUCTIONS = 2_000_000
DEFAULT_CHUNK_QUANTA = 20


# benchmark modules do `from run import benchmark`: when this file runs as a
# script that must be this module, not a second copy with its own registry
sys.modules.setdefault("run", sys.modules[__name__])


class BenchmarkFailed(Exception):
    """The two sides of a ratio did not do the same work: the figure is void."""


# ---- the registry ----

BENCHMARKS = {}


def benchmark(name, *, goal=None, lower_is_better=False, default=True, description):
    """Register fn(opts) -> dict as benchmark `name`.  goal: the ratio to reach
    (higher is better, or lower with lower_is_better: an overhead, a time), or
    None if the benchmark only reports.  default=False: a long one, run only
    when named."""
    def register(fn):
        BENCHMARKS[name] = {"fn": fn, "goal": goal, "lower": lower_is_better, "default": default,
                            "description": description}
        return fn
    return register


def goal_met(b, ratio):
    if b["goal"] is None:
        return None
    return ratio <= b["goal"] if b.get("lower") else ratio >= b["goal"]


# ---- measuring helpers, for any benchmark ----

def alternate(sides, rounds, instructions, chunk=None, warmup=None):
    """Time the sides against each other and return {label: [{"seconds", "check"}, ...]},
    one entry per round.

    sides maps a label to setup() -> (go, check): go(k) runs k more
    instructions and is timed, setup() and check() are not.  In each round
    every side is set up afresh and runs `instructions` in pieces of `chunk`
    (all at once if chunk is None), the sides taking turns piece by piece and
    the order flipping every piece (A B, B A, ...): load from elsewhere on the
    machine then falls on both sides alike, which alternating whole runs does
    not achieve on a busy machine.  A warm-up of each side, not recorded,
    comes first."""
    labels = list(sides)
    if warmup:
        for label in labels:
            go, _ = sides[label]()
            go(warmup)
    out = {label: [] for label in labels}
    step = chunk or instructions
    for _ in range(rounds):
        runs = {label: sides[label]() for label in labels}
        seconds = dict.fromkeys(labels, 0.0)
        gc.collect()
        done, turn = 0, 0
        while done < instructions:
            k = min(step, instructions - done)
            for label in (labels if turn % 2 == 0 else labels[::-1]):
                go = runs[label][0]
                t0 = time.perf_counter()
                go(k)
                seconds[label] += time.perf_counter() - t0
            done += k
            turn += 1
        for label in labels:
            out[label].append({"seconds": seconds[label], "check": runs[label][1]()})
        del runs
    return out


def speed_ratio(runs, numerator, denominator):
    """The median over rounds of each round's speed ratio numerator/denominator,
    and the list of them.  The sides of a round ran interleaved, so each
    round's ratio is steadier than the ratio of the sides' medians taken apart
    (which the details line reports too)."""
    per_round = [d["seconds"] / n["seconds"] for n, d in zip(runs[numerator], runs[denominator])]
    return statistics.median(per_round), per_round


def fmt_count(n):
    """2e7 for 20000000, 1.5e6 for 1500000, else the plain number."""
    mantissa, exp = f"{n:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    short = f"{mantissa}e{int(exp)}"
    return short if float(short) == n and len(short) < len(str(n)) else str(n)


# ---- lab against bare Unicorn ----

def _check_constants():
    """bare.py repeats the lab's layout and tick rules; refuse to compare if they drifted."""
    pairs = {
        "RAM_BASE": (bare_mod.RAM_BASE, lab_machine.RAM_BASE),
        "RAM_END": (bare_mod.RAM_END, lab_machine.RAM_END),
        "X86_EFLAGS_IF": (bare_mod.X86_EFLAGS_IF, lab_machine.X86_EFLAGS_IF),
        "STALL_CHUNK": (bare_mod.STALL_CHUNK, lab_kernel._STALL_CHUNK),
        "STALL_JITTER": (bare_mod.STALL_JITTER, lab_kernel._STALL_JITTER),
        "LOCKUP_QUANTA": (bare_mod.LOCKUP_QUANTA, lab_kernel._LOCKUP_QUANTA),
    }
    shown = lambda v: f"{v:#x}" if isinstance(v, int) and v > 0xFFFF else str(v)  # noqa: E731  (addresses in hex)
    drift = [f"{k} (bare {shown(b)}, lab {shown(v)})" for k, (b, v) in pairs.items() if b != v]
    if drift:
        raise BenchmarkFailed("benchmarks/bare.py no longer follows the lab: " + ", ".join(drift)
                              + "; update bare.py to match lab/machine.py and lab/kernel.py")


def _observables(image, regs, ram, u64):
    """What two runs are compared on: a digest of the registers and all of RAM,
    plus figures a reader can check at a glance (jiffies, syscalls per task)."""
    off = image.address("nr_tasks") - bare_mod.RAM_BASE
    nr_tasks = int.from_bytes(ram[off:off + 4], "little", signed=True)
    tasks = image.address("tasks")
    size, field = image.const("TASK_SIZE"), image.const("TASK_nr_syscalls")
    return {
        "state_sha256": bare_mod.state_digest(regs, ram),
        "jiffies": u64(image.address("jiffies")),
        "syscalls": [u64(tasks + i * size + field) for i in range(nr_tasks)],
    }


@benchmark("throughput", goal=0.95, description=(
    "lab (lab.boot + System.run) over bare Unicorn running the same image with the same "
    "slicing and ticks and only the SYSCALL and hypercall-port hooks (benchmarks/bare.py)"))
def throughput(opts):
    _check_constants()
    image = lab.Image.load(opts.image)
    n, quantum = opts.instructions, opts.quantum

    # lab.boot() runs the kernel until start_kernel() is done; the bare side
    # runs the same instructions before its clock starts, so both time the
    # same n instructions of the running workload
    booted_at = lab.boot(image, quantum=quantum).clock

    def bare_side():
        b = bare_mod.Bare(image, quantum=quantum, registers=opts.bare_registers)
        b.run(booted_at)
        return b.run, (lambda: _observables(image, b.regs(), b.ram, b.u64))

    def lab_side():
        system = lab.boot(image, quantum=quantum)
        m = system.machine
        if m.clock != booted_at:
            raise BenchmarkFailed(f"the lab booted in {m.clock} instructions once and {booted_at} another time")

        def check():
            if m.clock != booted_at + n:
                raise BenchmarkFailed(f"the lab retired {m.clock - booted_at} instructions after boot, not {n}")
            return _observables(image, list(m.regs().values()), m.ram, m.u64)
        return system.run, check

    # the lab's run() may be split anywhere without changing the run (its
    # stall rule counts from the tick's due time), and so may bare's
    chunk = opts.chunk * quantum if opts.chunk else None
    runs = alternate({"bare": bare_side, "lab": lab_side}, opts.rounds, n, chunk=chunk,
                     warmup=min(n, WARMUP_INSTRUCTIONS))

    reference = runs["bare"][0]["check"]
    for label, results in runs.items():
        for i, r in enumerate(results):
            got = r["check"]
            if got != reference:
                raise BenchmarkFailed(
                    f"{label} run {i + 1} ended in a different state from bare run 1 after {n} instructions "
                    f"(jiffies {got['jiffies']} vs {reference['jiffies']}, syscalls per task "
                    f"{got['syscalls']} vs {reference['syscalls']}, registers+RAM sha256 "
                    f"{got['state_sha256'][:16]} vs {reference['state_sha256'][:16]}): bare.py no longer drives the image "
                    "as the lab does, so the ratio would compare different work")

    mips = {label: statistics.median(n / r["seconds"] / 1e6 for r in results) for label, results in runs.items()}
    ratio, per_round = speed_ratio(runs, "lab", "bare")
    regs = f", bare registers {opts.bare_registers}"
    summary = (f"lab/bare throughput: {ratio:.3f} (rounds {min(per_round):.2f}-{max(per_round):.2f}; "
               f"lab {mips['lab']:.1f} Minstr/s, bare {mips['bare']:.1f} "
               f"Minstr/s, {fmt_count(n)} instructions, quantum {quantum}{regs}, median of {opts.rounds})")
    details = [
        f"bare and lab match {fmt_count(n)} instructions after boot (clock {booted_at}) in all "
        f"{2 * opts.rounds} runs: "
        f"jiffies {reference['jiffies']}, syscalls per task {reference['syscalls']}, "
        f"registers+RAM sha256 {reference['state_sha256'][:16]}",
    ] + [
        f"{label}: " + ", ".join(f"{n / r['seconds'] / 1e6:.1f}" for r in results) + " Minstr/s"
        for label, results in runs.items()
    ] + [
        "lab/bare per round: " + ", ".join(f"{x:.2f}" for x in per_round)
        + f"; ratio of the medians {mips['lab'] / mips['bare']:.2f}",
    ]
    return {
        "ratio": ratio,
        "summary": summary,
        "details": details,
        "instructions": n,
        "quantum": quantum,
        "booted_at": booted_at,
        "rounds": opts.rounds,
        "chunk_instructions": min(chunk, n) if chunk else n,
        "bare_registers": opts.bare_registers,
        "minstr_per_s": mips,
        "round_ratios": per_round,
        "seconds": {label: [r["seconds"] for r in results] for label, results in runs.items()},
        "matched": True,
        "state": reference,
    }


# ---- the command ----

def _load_more():
    """Benchmarks kept in their own modules register themselves on import."""
    import bench_authoring  # noqa: F401
    import bench_ceiling  # noqa: F401
    import bench_explore  # noqa: F401
    import bench_livepatch  # noqa: F401
    import bench_scale  # noqa: F401
    import bench_trace  # noqa: F401


def _count(text):
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of instructions (e.g. 2e7 or 20000000)")
    if value != int(value) or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole, positive number of instructions")
    return int(value)


def _parser():
    p = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="The lab's speed figures, each a ratio of two runs alternated in one process.")
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all; --list shows them)")
    p.add_argument("--instructions", "-n", type=_count, default=DEFAULT_INSTRUCTIONS,
                   help=f"instructions per timed run (default {fmt_count(DEFAULT_INSTRUCTIONS)})")
    p.add_argument("--quantum", type=int, default=lab_kernel.DEFAULT_QUANTUM,
                   help=f"instructions between timer ticks (default {lab_kernel.DEFAULT_QUANTUM})")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                   help=f"timed runs of each side, alternating; medians are reported (default {DEFAULT_ROUNDS})")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK_QUANTA, metavar="QUANTA",
                   help="the two sides take turns every QUANTA timer quanta within a round; 0: whole runs "
                        f"(default {DEFAULT_CHUNK_QUANTA})")
    p.add_argument("--bare-registers", choices=("api", "ctypes"), default="ctypes",
                   help="how bare.py's SYSCALL hook and tick delivery reach the registers: ctypes arrays "
                        "straight into uc_reg_*_batch, as lab/machine.py does (default), or the binding's "
                        "reg_*_batch")
    p.add_argument("--image", default=None, help="kernel image (default: firmware/kernel.elf)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--check", action="store_true", help="exit 1 if a ratio misses its goal")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return p


def main(argv=None):
    _load_more()
    p = _parser()
    opts = p.parse_args(argv)
    if opts.list:
        for name, b in BENCHMARKS.items():
            better = "or lower" if b.get("lower") else "or better"
            goal = f" (goal {b['goal']} {better})" if b["goal"] is not None else ""
            only = "" if b["default"] else " [only when named]"
            print(f"{name}: {b['description']}{goal}{only}")
        return 0
    unknown = [n for n in opts.names if n not in BENCHMARKS]
    if unknown:
        p.error(f"no benchmark {', '.join(unknown)}; choose from: {', '.join(BENCHMARKS)}")
    if opts.rounds < 1:
        p.error("--rounds must be at least 1")
    if opts.chunk < 0:
        p.error("--chunk must be 0 (whole runs) or a number of quanta")
    if opts.quantum < 1000:
        p.error("--quantum must be at least 1000 instructions (the lab refuses smaller quanta)")

    status = 0
    results = []
    for name in opts.names or [n for n, b in BENCHMARKS.items() if b["default"]]:
        b = BENCHMARKS[name]
        try:
            r = b["fn"](opts)
        except (BenchmarkFailed, lab.LabError, bare_mod.BareError) as exc:
            status = 1
            results.append({"name": name, "ok": False, "error": f"{type(exc).__name__}: {exc}", "goal": b["goal"]})
            if not opts.json:
                print(f"{name}: FAILED: {exc}", file=sys.stderr)
            continue
        met = goal_met(b, r["ratio"])
        results.append({"name": name, "ok": True, "goal": b["goal"], "goal_met": met, **r})
        if opts.check and met is False:
            status = 1
        if not opts.json:
            for line in r.get("details", ()):
                print(f"  {line}")
            verdict = "" if met is None else f"  [goal {b['goal']}: {'met' if met else 'MISSED'}]"
            print(r["summary"] + verdict)
    if opts.json:
        json.dump({"schema": SCHEMA, "python": sys.version.split()[0], "results": results}, sys.stdout, indent=2)
        print()
    return status


if __name__ == "__main__":
    sys.exit(main())
