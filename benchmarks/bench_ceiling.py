"""bench_ceiling - what `count` costs: the engine over the same instruction stream with slices ended without it.

Every slice of the lab (and of bare.py) is `emu_start(..., count=N)`, and
Unicorn counts with an internal hook called on every instruction
(../shared/UNICORN.md).  The ceiling is the same image, the same slices, the
same ticks, run with count=0: a slice then has to end some other way, and the
only deterministic one that needs no count is where it ends.  So:

1. a counted bare run (bare.py) gives the plan: for each slice, its length
   and the address of the instruction it stopped before;
2. a second counted run, with a compiled code hook (ceiling_stop.c
   `count_hits`) on each slice's end address, counts how often that address
   ran inside the slice: the slice ends at the next arrival there;
3. the timed ceiling runs the plan with count=0, the compiled hook
   (`stop_at`) calling uc_emu_stop on that arrival; it must end in the state
   of the counted run (registers and RAM digest, jiffies, syscalls per task),
   or the figure is void.

The hook is C, on one address at a time: added before its slice (with that
address's translated block dropped, as a hook added after its code was
translated never fires) and deleted after.  It costs a call at each
execution of the address inside the slice, and the block's translation
again: the ceiling carries that residue, so it is a lower bound of the
engine's speed without count.  This way of ending a
slice needs the run's future (where each slice ends, known only from a
counted run), so it measures; it cannot drive a live run.  The third side,
`block`, is the ceiling plus a compiled block hook that only adds up block
sizes: the least a count kept per translated block (the alternative to
Unicorn's per-instruction count) would cost.

Needs a C compiler (cc); without one the benchmark reports that and stops.
"""
from __future__ import annotations

import bisect
import ctypes
import pathlib
import shutil
import statistics
import subprocess
import tempfile

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE

import bare as bare_mod
import lab
from run import BenchmarkFailed, _observables, alternate, benchmark, fmt_count, speed_ratio

SOURCE = pathlib.Path(__file__).resolve().parent / "ceiling_stop.c"


class _SliceEnd(ctypes.Structure):
    _fields_ = [("target", ctypes.c_uint64), ("remaining", ctypes.c_int64), ("stop", ctypes.c_void_p)]


_LIB = None


def _native():
    """ceiling_stop.c compiled and loaded (once per process), or None with no compiler."""
    global _LIB
    if _LIB is None:
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            return None
        out = pathlib.Path(tempfile.mkdtemp(prefix="lab-ceiling-")) / "ceiling_stop.so"
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(SOURCE)], check=True)
        _LIB = ctypes.CDLL(str(out))
    return _LIB


def _hook(uc, kind, fn, data, begin, end):
    """Add a compiled hook (fn: a function of the library, data: a _SliceEnd)."""
    from unicorn.unicorn_py3.unicorn import uc_hook_h, uclib
    handle = uc_hook_h()
    status = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), kind, ctypes.cast(fn, ctypes.c_void_p).value,
                               ctypes.addressof(data), begin, end)
    if status:
        raise BenchmarkFailed(f"uc_hook_add of a compiled hook failed ({status})")
    return handle


def _plan(image, quantum, booted_at, n):
    """[(count, end address)] of every slice of a counted bare run of booted_at + n
    instructions, split where the timed sides split it (after booted_at)."""
    b = bare_mod.Bare(image, quantum=quantum)
    start = b.emu_start
    plan = []

    def recording(rip, until, timeout, count):
        start(rip, until, timeout, count)
        plan.append((count, b.uc.reg_read(bare_mod.X.UC_X86_REG_RIP)))
    b.emu_start = recording
    b.run(booted_at)
    b.run(n)
    return plan, _observables(image, b.regs(), b.ram, b.u64)


def _one_hook_per_slice(b, fn, data, each, counted):
    """Make bare b run each slice with a compiled code hook on that slice's end
    address only, added before the slice and deleted after it (a hook left on
    every end address would cost a call at each of them all the time: they
    are where the time goes, which is why ticks land there).  each(slice
    index, count) sets the hook's data up and returns the end address.
    counted: run with count as bare.py does, else with count=0 (never both
    on one engine: UNICORN.md, the count hook is there from the first
    emu_start or never)."""
    from unicorn.unicorn_py3.unicorn import uclib
    uc, start, delete, handle = b.uc, b.emu_start, uclib.uc_hook_del, b.uc._uch
    i = [0]

    def run_slice(rip, until, timeout, count):
        end = each(i[0], count)
        i[0] += 1
        h = _hook(uc, UC_HOOK_CODE, fn, data, end, end)
        uc.ctl_remove_cache(end, end + 1)   # a hook added after its code was translated never fires
        try:
            start(rip, until, timeout, count if counted else 0)
        finally:
            delete(handle, h)
    b.emu_start = run_slice


def _arrivals(image, quantum, booted_at, n, plan, lib):
    """For each slice of the plan, on which arrival at its end address it ends:
    1 + how often that address ran inside the slice (a counted run with the
    compiled count_hits hook on the slice's end address)."""
    b = bare_mod.Bare(image, quantum=quantum)
    data = _SliceEnd(0, 0, 0)
    arrivals = []

    def each(i, count):
        if arrivals:
            arrivals[-1] += data.remaining
        planned, end = plan[i]
        if count != planned:
            raise BenchmarkFailed(f"slice {i} of the second counted run is {count} instructions, the plan's {planned}")
        data.target, data.remaining = end, 0
        arrivals.append(1)
        return end
    _one_hook_per_slice(b, lib.count_hits, data, each, counted=True)
    b.run(booted_at)
    b.run(n)
    arrivals[-1] += data.remaining
    return arrivals


class _Ceiling:
    """bare.py running a plan with count=0, each slice ended by the compiled
    stop_at hook on its end address."""

    def __init__(self, image, quantum, plan, arrivals, lib, block_hook=False):
        self.bare = b = bare_mod.Bare(image, quantum=quantum)
        data = _SliceEnd(0, 0, ctypes.cast(_uc_emu_stop(), ctypes.c_void_p).value)
        self.block = _SliceEnd(0, 0, 0)
        if block_hook:
            _hook(b.uc, UC_HOOK_BLOCK, lib.on_block, self.block, 1, 0)
        self.ends = [0]
        for count, _ in plan:
            self.ends.append(self.ends[-1] + count)

        def each(i, count):
            planned, end = plan[i]
            if count != planned:
                raise BenchmarkFailed(f"the ceiling's slice {i} is {count} instructions, the plan's {planned}")
            data.target, data.remaining = end, arrivals[i]
            return end
        _one_hook_per_slice(b, lib.stop_at, data, each, counted=False)
        self.done = 0       # the plan's instructions asked for so far

    def go(self, k):
        """Run k more instructions, rounded up to the end of a planned slice
        (a slice of the plan is never split, so the run stays the plan)."""
        self.done += k
        i = bisect.bisect_left(self.ends, self.done)
        target = self.ends[min(i, len(self.ends) - 1)]
        if target > self.bare.clock:
            self.bare.run(target - self.bare.clock)


def _uc_emu_stop():
    """The engine's uc_emu_stop, for the compiled hook to call."""
    from unicorn.unicorn_py3.unicorn import uclib
    return uclib.uc_emu_stop


@benchmark("ceiling", description=(
    "the lab and bare.py over the engine's ceiling: the same image, slices and ticks run with count=0, "
    "each slice ended by a compiled code hook at its end address (benchmarks/bench_ceiling.py)"))
def ceiling(opts):
    lib = _native()
    if lib is None:
        raise BenchmarkFailed("no C compiler (cc): the ceiling needs ceiling_stop.c compiled")
    image = lab.Image.load(opts.image)
    n, quantum = opts.instructions, opts.quantum
    booted_at = lab.boot(image, quantum=quantum).clock
    plan, reference = _plan(image, quantum, booted_at, n)
    arrivals = _arrivals(image, quantum, booted_at, n, plan, lib)
    timed = _after(plan, booted_at)

    def bare_side():
        b = bare_mod.Bare(image, quantum=quantum)
        b.run(booted_at)
        return b.run, (lambda: _observables(image, b.regs(), b.ram, b.u64))

    def ceiling_side(block_hook=False):
        def setup():
            c = _Ceiling(image, quantum, plan, arrivals, lib, block_hook)
            c.go(booted_at)
            b = c.bare
            return c.go, (lambda: _observables(image, b.regs(), b.ram, b.u64))
        return setup

    def lab_side():
        system = lab.boot(image, quantum=quantum)
        m = system.machine
        return system.run, (lambda: _observables(image, list(m.regs().values()), m.ram, m.u64))

    chunk = opts.chunk * quantum if opts.chunk else None
    runs = alternate({"bare": bare_side, "ceiling": ceiling_side(), "block": ceiling_side(True), "lab": lab_side},
                     opts.rounds, n, chunk=chunk)
    for label, results in runs.items():
        for i, r in enumerate(results):
            if r["check"] != reference:
                raise BenchmarkFailed(
                    f"{label} run {i + 1} did not end in the counted run's state after {fmt_count(n)} instructions "
                    f"(registers+RAM sha256 {r['check']['state_sha256'][:16]} vs {reference['state_sha256'][:16]}): "
                    "the ceiling would not be the same instruction stream")
    mips = {k: statistics.median(n / r["seconds"] / 1e6 for r in v) for k, v in runs.items()}
    lab_ceiling, lab_rounds = speed_ratio(runs, "lab", "ceiling")
    bare_ceiling, bare_rounds = speed_ratio(runs, "bare", "ceiling")
    block_ceiling, block_rounds = speed_ratio(runs, "block", "ceiling")
    hits = sum(a - 1 for a in arrivals[len(arrivals) - len(timed):])
    spread = lambda xs: f"{min(xs):.2f}-{max(xs):.2f}"  # noqa: E731
    details = [
        f"all {4 * opts.rounds} runs end in the counted run's state (registers+RAM sha256 "
        f"{reference['state_sha256'][:16]}, jiffies {reference['jiffies']})",
        f"plan: {len(timed):,} slices after boot, ended at {len({a for _, a in plan})} distinct addresses; "
        f"the stop hook ran {hits / max(len(timed), 1):,.0f} times a slice besides the stop",
        "Minstr/s: " + ", ".join(f"{k} {v:.1f}" for k, v in mips.items()),
        f"bare (count) / ceiling per round: {', '.join(f'{x:.2f}' for x in bare_rounds)}",
        f"ceiling with a compiled block hook / ceiling per round: {', '.join(f'{x:.2f}' for x in block_rounds)}",
        f"lab / ceiling per round: {', '.join(f'{x:.2f}' for x in lab_rounds)}",
        f"why: Unicorn's count is a hook on every instruction and costs bare {1 - bare_ceiling:.0%} of the "
        f"engine's speed; the lab's own cost on top is lab/bare ({lab_ceiling / bare_ceiling:.2f} here); a count "
        f"kept per block by a compiled block hook would cost about {1 - block_ceiling:.0%} (benchmarks/README.md)",
    ]
    summary = (f"lab/ceiling throughput: {lab_ceiling:.2f} (rounds {spread(lab_rounds)}; bare with count "
               f"{bare_ceiling:.2f} of the ceiling, rounds {spread(bare_rounds)}; a compiled block hook alone "
               f"{block_ceiling:.2f}; {fmt_count(n)} instructions, quantum {quantum}, median of {opts.rounds})")
    return {"ratio": lab_ceiling, "summary": summary, "details": details, "minstr_per_s": mips,
            "round_ratios": lab_rounds, "bare_over_ceiling": bare_ceiling, "bare_round_ratios": bare_rounds,
            "block_over_ceiling": block_ceiling, "block_round_ratios": block_rounds,
            "slices": len(timed), "stop_addresses": len({a for _, a in plan}), "instructions": n}


def _after(plan, booted_at):
    """The slices of the plan after the first booted_at instructions."""
    done, out = 0, []
    for count, end in plan:
        if done >= booted_at:
            out.append((count, end))
        done += count
    return out
