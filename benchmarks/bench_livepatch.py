"""bench_livepatch - what live patching costs the running kernel, as ratios taken in one run.

patched:     throughput once a transition has completed (every pad a direct JMP,
             no trampoline, no Python on the path) over throughput before the patch.
transition:  throughput while a transition stays open (every call of a patched
             function goes through the trampoline, which reads the caller's
             universe) over the same workload with no patch.
"""
from __future__ import annotations

import pathlib
import statistics

import lab
from run import BenchmarkFailed, alternate, benchmark, fmt_count, speed_ratio

PATCHES = pathlib.Path(__file__).resolve().parent.parent / "patches"
CAPABLE = PATCHES / "kgr_capable.o"


def _side(image, quantum, workload, patched, complete):
    def setup():
        system = lab.boot(image, quantum=quantum, workload=workload, signal_after=500_000)
        system.run(1_000_000)
        if patched:
            system.apply_patch(CAPABLE)
            if complete:
                system.run_until_patched(20_000_000)
                if system.transition is not None:
                    raise BenchmarkFailed("the capable() patch did not complete")
            else:
                system.run(2_000_000)
                if system.transition is None:
                    raise BenchmarkFailed("the transition was expected to stay open (kunannotated)")
        else:
            system.run(3_000_000)
        calls = system.task("cap-user")

        def check():
            return {"cap_user_syscalls": calls.syscalls}
        return system.run, check
    return setup


def _ratio(opts, name, workload, complete):
    image = lab.Image.load(opts.image)
    n, quantum = opts.instructions, opts.quantum
    runs = alternate({"patched": _side(image, quantum, workload, True, complete),
                      "unpatched": _side(image, quantum, workload, False, complete)},
                     opts.rounds, n, chunk=opts.chunk * quantum if opts.chunk else None)
    ratio, per_round = speed_ratio(runs, "patched", "unpatched")
    mips = {k: statistics.median(n / r["seconds"] / 1e6 for r in v) for k, v in runs.items()}
    return ratio, per_round, mips, n


@benchmark("patched", goal=0.95, description=(
    "throughput after the capable() transition completed (pads are direct JMPs) over throughput with "
    "no patch, same workload"))
def patched(opts):
    ratio, per_round, mips, n = _ratio(opts, "patched", "default", complete=True)
    return {"ratio": ratio, "round_ratios": per_round, "minstr_per_s": mips,
            "summary": (f"after completion / before the patch: {ratio:.2f} (patched {mips['patched']:.1f}, "
                        f"unpatched {mips['unpatched']:.1f} Minstr/s, {fmt_count(n)} instructions, "
                        f"median of {opts.rounds})")}


@benchmark("transition", goal=0.5, description=(
    "throughput during an open transition (workload unannotated keeps it open: every capable() call "
    "goes through the universe-reading trampoline) over the same workload with no patch"))
def transition(opts):
    ratio, per_round, mips, n = _ratio(opts, "transition", "unannotated", complete=False)
    return {"ratio": ratio, "round_ratios": per_round, "minstr_per_s": mips,
            "summary": (f"during a transition / steady state: {ratio:.2f} (in transition "
                        f"{mips['patched']:.1f}, steady {mips['unpatched']:.1f} Minstr/s, {fmt_count(n)} "
                        f"instructions, median of {opts.rounds})")}
