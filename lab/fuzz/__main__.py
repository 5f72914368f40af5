"""python -m lab.fuzz - every fuzzer of the referee in one run: patch objects, damaged traces, command lines.

Prints one line per fuzzer and outcome class, then the failures with their
reproducers; exits 1 if any fuzzer found a failure.  `make fuzz` runs it with
the long counts; the test suite runs a bounded share of each fuzzer.
"""
from __future__ import annotations

import argparse
import sys
import time


def _progress(name):
    """A progress callback on a terminal (rich), nothing when piped."""
    if not sys.stderr.isatty():
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    bar = Progress(TextColumn(f"{name:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   transient=True)
    task = bar.add_task(name, total=None)

    def update(done, total=None, *_):
        bar.update(task, completed=done, total=total)
    return bar, update


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lab.fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--patches", type=int, default=10_000, metavar="N", help="patch object mutants (default 10,000)")
    p.add_argument("--traces", type=int, default=300, metavar="N", help="damaged traces (default 300)")
    p.add_argument("--cmdlines", type=int, default=1_000, metavar="N",
                   help="command lines (default 1,000: the whole grammar)")
    p.add_argument("--seed", type=int, default=0, metavar="S")
    args = p.parse_args(argv)
    from .cmdline import fuzz_cmdlines
    from .patches import fuzz_patches
    from .traces import fuzz_traces
    runs = [("cmdlines", fuzz_cmdlines, args.cmdlines), ("traces", fuzz_traces, args.traces),
            ("patches", fuzz_patches, args.patches)]
    failed = 0
    for name, fuzz, n in runs:
        if n <= 0:
            continue
        start = time.monotonic()
        bar, update = _progress(name)
        if bar is not None:
            with bar:
                result = fuzz(n, seed=args.seed, progress=update)
        else:
            result = fuzz(n, seed=args.seed)
        took = time.monotonic() - start
        counts = result.get("outcomes") or result.get("counts") or {}
        failures = result.get("failures") or []
        print(f"{name}: {result.get('cases', n)} cases, seed {args.seed}, {took:.0f} s")
        for outcome, count in sorted(counts.items()):
            print(f"  {outcome:<16} {count:>7,}")
        for f in failures:
            if isinstance(f, dict):
                print(f"  FAILURE {f.get('why', '')}: {f.get('reproducer', f)}")
            else:
                print(f"  FAILURE {f}")
        failed += len(failures)
    print("0 failures" if not failed else f"{failed} failure(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
