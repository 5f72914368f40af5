"""bench_authoring - how long `lab patch create` takes on a one-function diff.

create:  median seconds of create() on patches/diffs/static_wb_throttle.diff
         (one function), the kernel's own objects reused from the cache as a
         second `lab patch create` finds them: apply the diff, build the
         patched unit, compare, generate and build the module, and check it
         in the lab (choose the workload, load, run, explorer).  Lower is
         better; the goal is 10 s.  The details also give the first run with
         an empty cache (both trees built), the median without the check, and
         where the time goes.

    python benchmarks/bench_authoring.py            this benchmark alone
    python benchmarks/run.py create                 with the others (once run.py imports this module)
"""
from __future__ import annotations

import pathlib
import statistics
import sys
import tempfile
import time
from unittest import mock

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import lab  # noqa: E402
from run import BenchmarkFailed, benchmark  # noqa: E402

DIFF = HERE.parent / "patches" / "diffs" / "static_wb_throttle.diff"
EXPECTED = ["wb_throttle"]


def _create(image, out, check):
    from lab.authoring.create import create
    t0 = time.perf_counter()
    c = create(DIFF, out, image=image, check=check, workload=None)
    seconds = time.perf_counter() - t0
    if c.replaced() != EXPECTED or not c.ok:
        raise BenchmarkFailed(f"create() of {DIFF.name} gave {c.verdict} replacing {c.replaced()}, not a patch of "
                              f"{EXPECTED}: the time would be of other work")
    return seconds, c


@benchmark("create", goal=10.0, lower_is_better=True, description=(
    f"median seconds of `lab patch create {DIFF.name}` (one function changed) with the kernel's own objects "
    "reused: the diff applied, the patched unit built, both compared, the module generated, built and checked "
    "in the lab (workload chosen, loaded, run, 8 explored schedules)"))
def create_time(opts):
    from lab.authoring import tree
    image = lab.Image.load(opts.image)
    rounds = max(opts.rounds, 1)
    with tempfile.TemporaryDirectory(prefix="lab-bench-create-") as tmp:
        tmp = pathlib.Path(tmp)
        with mock.patch.object(tree, "CACHE_DIR", tmp / "cache"):
            cold, first = _create(image, tmp / "cold.o", True)
        _create(image, tmp / "warm.o", True)            # fills the real cache if it was empty
        warm, unchecked, parts = [], [], []
        for i in range(rounds):
            s, c = _create(image, tmp / f"w{i}.o", True)
            warm.append(s)
            parts.append(c.seconds)
            s, _ = _create(image, tmp / f"u{i}.o", False)
            unchecked.append(s)
    median = statistics.median(warm)
    where = {k: statistics.median(p.get(k, 0.0) for p in parts) for k in parts[0]}
    return {"ratio": median, "seconds": warm, "unchecked_seconds": unchecked, "cold_seconds": cold,
            "parts": where,
            "details": [f"first run with an empty cache (both trees built): {cold:.2f} s "
                        f"(kernel objects {first.seconds.get('original', 0):.2f} s)",
                        f"without the check: median {statistics.median(unchecked):.2f} s",
                        "where the time goes (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in where.items())],
            "summary": (f"lab patch create on a one-function diff: median {median:.2f} s with the check "
                        f"({statistics.median(unchecked):.2f} s without; {cold:.2f} s with nothing cached), "
                        f"{rounds} rounds")}


if __name__ == "__main__":
    import argparse
    import json
    p = argparse.ArgumentParser(description="time lab patch create on a one-function diff")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--image", default=None)
    p.add_argument("--json", action="store_true")
    opts = p.parse_args()
    result = create_time(opts)
    if opts.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(result["summary"])
        for line in result["details"]:
            print("  " + line)
