"""cmdline - a seeded fuzzer of the `lab` command line: a bad invocation is refused in one line before any work.

The cases come from a grammar of the subcommands and their options: a few
good, short command lines, and bad ones made from them by one mutation each
(a wrong type, a number out of range, a missing or malformed file, a
directory or an unwritable place as output, an unknown option, conflicting
options, a file given twice, an unknown workload, parameter, task, function
or model, an empty string, unicode, a huge number).  Each case runs in this
process through lab.cli.main() with stdout and stderr captured, and is
classified:

- "ok": exit status 0 or 1 and no traceback (a good case);
- "refused": exit status 2, nothing on stdout, exactly one line on stderr
  starting with "lab: error:", no output file created, and no boot before the
  refusal (or, for what only the booted kernel can tell, such as a task
  named by --inject-fault, no instruction run after boot);
- "failure": anything else: an exception, a usage block, several lines, a
  refusal after work was done, a bad case accepted, a good case refused.

`python -m lab.fuzz.cmdline --cases N --seed S` prints the figures and exits
1 on any failure.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import pathlib
import random
import shlex
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass

OK, REFUSED, FAILURE = "ok", "refused", "failure"
GOOD_SHARE = 0.15          # of the cases drawn, about this many are good command lines

_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
PATCHES = _ROOT / "patches"
CAPABLE = str(PATCHES / "kgr_capable.o")
PIPE_WAIT = str(PATCHES / "kgr_pipe_wait.o")
CMDLINE = str(PATCHES / "livepatch_cmdline.o")
PAIR = str(PATCHES / "kgr_proto_pair.o")


@dataclass(frozen=True)
class Case:
    """One command line.  argv may hold {PLACE} names of the fixtures; {OUT}
    becomes a file name of this case's own in the output directory."""

    argv: tuple
    bad: bool
    why: str
    after_boot: bool = False     # only the booted kernel can tell it is bad


# ---- the grammar ----

BAD_COUNTS = ("0", "-5", "1e30", "1e400", "1" + "0" * 400, "inf", "-inf", "nan", "lots", "1.5", "", "0x10",
              "½", "1e10000000000")
NUMBER_OPTIONS = {
    # option: (values that are bad for it besides BAD_COUNTS' common ones, values of BAD_COUNTS that are fine)
    "--instructions": (("10000000001", "2e10"), ()),
    "--seed": (("4294967296", "1e100"), ("0",)),
    "--quantum": (("999", "1e15", "10000001"), ()),
}
TIMED_OPTIONS = ("--patch-at", "--signal-after", "--revert-at")
BAD_PATHS_IN = ("{MISSING}", "{DIR}", "{TEXT}", "{TRUNC}", "", "{UNICODE_MISSING}", "{SURROGATE_MISSING}")
# never a real special file such as /dev/null: were the check missing, a run as root would replace it
BAD_PATHS_OUT = ("{DIR}", "{DIR}/", "{NODIR}/x.out", "{UNWRITABLE}/x.out", "{FILE_PARENT}/x.out", "", "{FIFO}")
RUN_BASES = (
    ("run", "--instructions", "200000"),
    ("run", "--instructions", "3e5", "--seed", "3", "--json"),
    ("run", "--patch", CAPABLE, "--patch-at", "100000", "--instructions", "400000"),
    ("run", "--patch", PIPE_WAIT, "--patch-at", "100000", "--signal-after", "100000", "--instructions", "600000",
     "--json"),
)
GOOD = (
    ("run", "--instructions", "200000"),
    ("run", "--instructions", "3e5", "--seed", "3", "--json"),
    ("run", "--patch", CAPABLE, "--patch-at", "100000", "--instructions", "400000"),
    ("run", "--patch", PIPE_WAIT, "--patch-at", "100000", "--signal-after", "100000", "--instructions", "600000",
     "--json"),
    ("run", "--patch", CAPABLE, "--patch-at", "100000", "--revert-at", "300000", "--instructions", "500000",
     "--model", "klp"),
    ("run", "--patch", CMDLINE, "--patch", CAPABLE, "--patch-at", "100000", "--signal-after", "100000",
     "--instructions", "900000", "--model", "immediate", "--revert-at", "800000"),
    ("run", "--boot-patch", CAPABLE, "--instructions", "200000", "--json"),
    ("run", "--boot-patch", CAPABLE, "--revert-at", "100000", "--instructions", "300000", "--json"),
    ("run", "--workload", "unannotated", "--quantum", "5000", "--instructions", "2_000_00"),
    ("run", "--inject-fault", "cap-user", "--instructions", "300000", "--json"),
    ("run", "--inject-fault", "kfreezerd", "--instructions", "300000", "--json"),
    ("run", "--inject-fault", "0", "--instructions", "300000", "--json"),
    ("run", "--inject-fault", "swapper/0", "--instructions", "300000"),
    ("run", "--trace", "{OUT}.trace", "--instructions", "200000"),
    ("run", "--workload", "hammer", "--param", "nr_hammer=3", "--instructions", "200000", "--json"),
    ("demo", "--json", "--instructions", "1100000"),
    ("compare", "--patch", CAPABLE, "--patch-at", "100000", "--limit", "300000", "--json"),
    ("compare", "--patch", CAPABLE, "--patch-at", "100000", "--limit", "300000", "-o", "{OUT}.svg"),
    ("workloads",), ("workloads", "--json"), ("symbols", "capable"), ("pads", "--json"), ("disasm", "capable"),
    ("run", "--instructions", "300000", "--preempt-at", "150000,1.6e5", "--json"),
    ("run", "--patch", PAIR, "--model", "immediate", "--patch-at", "100000", "--preempt-at", "120000",
     "--preempt-at", "130000", "--instructions", "400000", "--json"),
    ("explore", "--patch", CAPABLE, "--workers", "0", "--schedules", "3", "--seeds", "0", "--quanta", "20000",
     "--patch-at", "100000", "--signal-after", "100000", "--json"),
    ("explore", "--patch", PAIR, "--model", "immediate", "--workers", "1", "--schedules", "4", "--seeds", "1,2",
     "--quanta", "20000", "--patch-at", "100000", "--junit", "{OUT}.xml", "--trace-dir", "{OUT}-traces"),
    ("trace", "show", "{TRACE}", "--step", "50%", "--json"),
    ("trace", "timeline", "{TRACE}", "-o", "{OUT}.svg", "--width", "800"),
    ("--help",), ("run", "--help"), ("trace", "show", "--help"),
)


def _without(argv, *options):
    """argv with every option of options (and its value) taken out."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in options:
            skip = True
            continue
        out.append(a)
    return tuple(out)


def _set(argv, option, value):
    return _without(argv, option) + (option, value)


def _bad_numbers(option, extra=(), fine=()):
    return [v for v in BAD_COUNTS + tuple(extra) if v not in fine]


def _run_cases():
    cases = []
    add = lambda argv, why, after_boot=False: cases.append(Case(tuple(argv), True, why, after_boot))  # noqa: E731
    plain, _seeded, patched, signalled = RUN_BASES
    for base in RUN_BASES:
        for option, (extra, fine) in NUMBER_OPTIONS.items():
            for value in _bad_numbers(option, extra, fine):
                add(_set(base, option, value), f"{option} {value!r}")
    for option in TIMED_OPTIONS:
        for value in BAD_COUNTS:
            add(_set(signalled, option, value), f"{option} {value!r}")
    for base in (plain, patched):
        for path in BAD_PATHS_OUT:
            add(_set(base, "--trace", path), f"--trace {path!r}")
        for path in BAD_PATHS_IN + ("{COPY_ELF}",):
            add(_set(base, "--image", path), f"--image {path!r}")
        for path in BAD_PATHS_IN + ("{KERNEL}",):
            add(base + ("--patch", path), f"--patch {path!r}")
            add(base + ("--boot-patch", path), f"--boot-patch {path!r}")
        for name in ("nope", "", "défaut", "default ", "💥"):
            add(_set(base, "--workload", name), f"--workload {name!r}")
        for model in ("nope", "", "KGRAFT"):
            add(_set(base, "--model", model), f"--model {model!r}")
        for task in ("nobody", "99", "", "²", "💥", "-1"):
            add(base + ("--inject-fault", task), f"--inject-fault {task!r}", after_boot=task not in ("",))
        add(base + ("--inject-fault", "1", "--inject-fault", "cap-user"), "one task faulted twice",
            after_boot=True)
        for option in ("--frobnicate", "-x", "extra"):
            add(base + (option,), f"unknown {option}")
        add(base + ("--patch",), "--patch without a value")
    for params in (("nope=1",), ("nr_hammer=999",), ("nr_hammer=0",), ("nr_hammer",), ("=5",), ("nr_hammer=abc",),
                   ("nr_hammer=1e400",), ("nr_hammer=8", "nr_hammer=9"), ("",), ("nr_hammer=1.5",)):
        argv = plain + ("--workload", "hammer") + sum((("--param", p) for p in params), ())
        add(argv, f"--param {' '.join(params)!r} on hammer")
    add(plain + ("--param", "nr_hammer=8"), "--param of another workload")
    # duplicates: kGraft refuses a second patch of the same name
    add(patched + ("--patch", CAPABLE), "--patch given twice")
    add(patched + ("--patch", "{COPY_PATCH}"), "--patch and a copy of it")
    add(plain + ("--boot-patch", CAPABLE, "--boot-patch", CAPABLE), "--boot-patch given twice")
    add(patched + ("--boot-patch", CAPABLE), "--boot-patch and --patch of one file")
    # conflicting or ignored options
    add(plain + ("--revert-at", "150000"), "--revert-at without a patch")
    add(patched + ("--revert-at", "100000"), "--revert-at at --patch-at")
    add(patched + ("--revert-at", "50000"), "--revert-at before --patch-at")
    add(patched + ("--revert-at", "400000"), "--revert-at at the end of the run")
    add(_set(patched, "--patch-at", "400000"), "--patch-at at the end of the run")
    add(_set(patched, "--patch-at", "5e6"), "--patch-at after the end of the run")
    add(_without(patched, "--patch-at") + ("--instructions", "900000"), "default --patch-at after the end")
    add(plain + ("--patch-at", "100000"), "--patch-at without --patch")
    add(plain + ("--model", "klp"), "--model without --patch")
    add(plain + ("--signal-after", "100000"), "--signal-after without a transition")
    for model in ("immediate", "stop-machine"):
        add(signalled + ("--model", model), f"--signal-after with --model {model}")
    add(_set(signalled, "--signal-after", "500000"), "--signal-after after the end of the run")
    add(_set(patched, "--patch-at", "1000"), "--patch-at before the end of boot", after_boot=True)
    add(_set(plain, "--instructions", "1000"), "--instructions before the end of boot", after_boot=True)
    add(plain + ("--boot-patch", CAPABLE, "--revert-at", "1000"), "--revert-at before the end of boot",
        after_boot=True)
    # forced preemptions: a list of instants after boot and before the end, each once, at most 64
    for value in ("0", "1,000,000", "abc", "", ",", "150000,", "1e400", "150000,150000", "nan", "-5", "1.5e5.5",
                  ",".join(str(100_000 + i) for i in range(65))):
        add(plain + ("--preempt-at", value), f"--preempt-at {value[:40]!r}")
    add(plain + ("--preempt-at", "150000", "--preempt-at", "150000"), "--preempt-at twice, the same instant")
    add(plain + ("--preempt-at", "200000"), "--preempt-at at the end of the run")
    add(plain + ("--preempt-at", "5e6"), "--preempt-at after the end of the run")
    add(plain + ("--preempt-at", "1000"), "--preempt-at before the end of boot", after_boot=True)
    return cases


# every explore case runs in this process and few schedules, should one be wrongly accepted
EXPLORE = ("explore", "--patch", CAPABLE, "--workers", "0", "--schedules", "2", "--seeds", "0", "--quanta", "20000",
           "--patch-at", "100000")
BAD_LIST_ITEMS = ("", ",", "1,,2", "x", "1e400", "-1", "1.5", "inf", "1,000,000")
BAD_SCHEDULERS = ("", "nowhere", "127.0.0.1:8786", "http://127.0.0.1:8786", "tcp://127.0.0.1", "tcp://:8786",
                  "tcp://127.0.0.1:99999", "tcp://127.0.0.1:0", "tcp://h o st:1")


def _explore_cases():
    cases = []
    add = lambda argv, why, after_boot=False: cases.append(Case(tuple(argv), True, why, after_boot))  # noqa: E731
    base = EXPLORE
    for option, lo, fine in (("--schedules", 1, ()), ("--preemptions", 0, ("0",)), ("--instants", 1, ()),
                             ("--workers", 0, ("0",)), ("--limit", 1, ()), ("--sample-seed", 0, ("0",))):
        extra = {"--preemptions": ("9", "100"), "--instants": ("65",), "--workers": ("257",),
                 "--schedules": ("1000001",), "--limit": ("1e11",), "--sample-seed": ("4294967296",)}[option]
        for value in _bad_numbers(option, extra, fine):
            add(_set(base, option, value), f"explore {option} {value!r}")
    for option, extra in (("--seeds", ("4294967296", "0,0")), ("--quanta", ("999", "20000,20000", "1e9")),
                          ("--patch-at", ("0", "1e11")), ("--signal-after", ("0",)),
                          ("--seeds", (",".join(map(str, range(33))),))):
        for value in BAD_LIST_ITEMS + extra:
            add(_set(base, option, value), f"explore {option} {value!r}")
    for address in BAD_SCHEDULERS:
        add(_without(base, "--workers") + ("--scheduler", address), f"explore --scheduler {address!r}")
    add(base + ("--scheduler", "tcp://127.0.0.1:8786"), "explore --workers and --scheduler")
    for path in BAD_PATHS_OUT:
        add(base + ("--junit", path), f"explore --junit {path!r}")
    for path in ("", "{TEXT}", "{NODIR}/x", "{UNWRITABLE}/x", "{FIFO}", "{FILE_PARENT}/x"):
        add(base + ("--trace-dir", path), f"explore --trace-dir {path!r}")
    for path in BAD_PATHS_IN + ("{KERNEL}",):
        add(_set(base, "--patch", path), f"explore --patch {path!r}")
    for path in BAD_PATHS_IN + ("{COPY_PATCH}",):
        add(base + ("--image", path), f"explore --image {path!r}")
    add(_without(base, "--patch"), "explore without --patch")
    add(base + ("--patch", CAPABLE), "explore --patch given twice")
    add(base + ("--patch", "{COPY_PATCH}"), "explore --patch and a copy of it")
    add(base + ("--model", "klp", "--model", "klp"), "explore --model given twice")
    for model in ("nope", "", "KGRAFT"):
        add(base + ("--model", model), f"explore --model {model!r}")
    add(base + ("--model", "immediate", "--signal-after", "100000"), "explore --signal-after with immediate")
    add(base + ("--model", "stop-machine", "--model", "immediate", "--signal-after", "100000"),
        "explore --signal-after with models that never signal")
    add(base + ("--workload", "nope"), "explore --workload nope")
    add(base + ("--workload", "hammer", "--param", "nr_hammer=999"), "explore nr_hammer out of range")
    add(base + ("--param", "nr_hammer=3"), "explore --param of another workload")
    add(base + ("--frobnicate",), "explore --frobnicate")
    add(base + ("--all", "extra"), "explore with an extra argument")
    add(_set(base, "--patch-at", "1000"), "explore --patch-at before the end of boot", after_boot=True)
    add(_set(base, "--patch-at", "100000,1000"), "explore one --patch-at before the end of boot", after_boot=True)
    return cases


def _other_cases():
    cases = []
    add = lambda argv, why, after_boot=False: cases.append(Case(tuple(argv), True, why, after_boot))  # noqa: E731
    demo = ("demo", "--json", "--instructions", "1100000")
    for value in _bad_numbers("--instructions", ("1000000", "999999")):
        add(_set(demo, "--instructions", value), f"demo --instructions {value!r}")
    for value in _bad_numbers("--seed", ("4294967296",), ("0",)):
        add(_set(demo, "--seed", value), f"demo --seed {value!r}")
    for path in BAD_PATHS_OUT:
        add(demo + ("--trace", path), f"demo --trace {path!r}")
    for path in BAD_PATHS_IN:
        add(demo + ("--image", path), f"demo --image {path!r}")
    add(demo + ("--patch", CAPABLE), "demo takes no --patch")

    compare = ("compare", "--patch", CAPABLE, "--patch-at", "100000", "--limit", "300000", "--json")
    for option in ("--patch-at", "--signal-after", "--limit", "--seed"):
        fine = ("0",) if option == "--seed" else ()
        for value in _bad_numbers(option, (), fine):
            add(_set(compare, option, value), f"compare {option} {value!r}")
    for path in BAD_PATHS_IN + ("{KERNEL}",):
        add(_set(compare, "--patch", path), f"compare --patch {path!r}")
    for path in BAD_PATHS_IN + ("{COPY_PATCH}",):
        add(compare + ("--image", path), f"compare --image {path!r}")
    for path in BAD_PATHS_OUT:
        add(compare + ("-o", path), f"compare -o {path!r}")
    add(_without(compare, "--patch"), "compare without --patch")
    add(compare + ("--workload", "nope"), "compare --workload nope")
    add(compare + ("--workload", "hammer", "--param", "nr_hammer=999"), "compare nr_hammer out of range")
    add(compare + ("--param", "nr_hammer=3"), "compare --param of another workload")
    add(compare + ("--model", "klp"), "compare takes no --model")
    add(_set(compare, "--patch-at", "1000"), "compare --patch-at before the end of boot", after_boot=True)

    for command in (("workloads",), ("pads",), ("symbols",), ("disasm", "capable")):
        for path in BAD_PATHS_IN + ("{COPY_PATCH}",):
            add(command + ("--image", path), f"{command[0]} --image {path!r}")
        add(command + ("--frobnicate",), f"{command[0]} --frobnicate")
    for name in ("", "nope", "jiffies", "ｃａｐａｂｌｅ", "capable\n", " "):
        add(("disasm", name), f"disasm {name!r}")
    add(("disasm",), "disasm without a function")
    add(("symbols", ""), "symbols with an empty filter")
    add(("symbols", "capable", "extra"), "symbols with two filters")
    add(("pads", "capable"), "pads takes no argument")

    build = ("patch", "build", "{SOURCE}")
    for path in ("{MISSING}.c", "{DIR}", "{TEXT}", "", "{UNICODE_MISSING}.c"):
        add(("patch", "build", path), f"patch build {path!r}")
    for path in BAD_PATHS_OUT + ("{SOURCE}",):
        add(build + ("-o", path), f"patch build -o {path!r}")
    add(("patch", "build"), "patch build without a source")
    add(("patch",), "patch without a subcommand")
    add(("patch", "frob"), "patch frob")

    for command in ("show", "timeline", "view"):
        base = {"show": ("trace", "show", "{TRACE}", "--step", "50%"),
                "timeline": ("trace", "timeline", "{TRACE}", "-o", "{OUT}.svg"),
                "view": ("trace", "view", "{TRACE}")}[command]
        for path in BAD_PATHS_IN:
            add(("trace", command, path) + base[3:], f"trace {command} {path!r}")
        add(base + ("--image", "{MISSING}"), f"trace {command} --image missing")
        add(base + ("--image", "{TEXT}"), f"trace {command} --image text")
    for step in ("soon", "", "1e400", "nan%", "150%", "-1", "1e30", "inf"):
        add(("trace", "show", "{TRACE}", "--step", step), f"trace show --step {step!r}")
        add(("trace", "view", "{TRACE}", "--step", step), f"trace view --step {step!r}")
    add(("trace", "show", "{TRACE}"), "trace show without --step")
    add(("trace", "view", "{TRACE}"), "trace view without a terminal")
    timeline = ("trace", "timeline", "{TRACE}", "-o", "{OUT}.svg")
    for path in BAD_PATHS_OUT:
        add(_set(timeline, "-o", path), f"trace timeline -o {path!r}")
    for value in ("10", "599", "20001", "1e30", "inf", "wide", ""):
        add(timeline + ("--width", value), f"trace timeline --width {value!r}")
    add(("trace", "timeline", "{TRACE}"), "trace timeline without -o")
    add(("trace",), "trace without a subcommand")

    for argv in ((), ("frob",), ("--frobnicate",), ("RUN",), ("",), ("🙂",)):
        add(argv, f"lab {' '.join(argv)!r}")
    return cases


def grammar():
    """(good cases, bad cases), each in a fixed order and without duplicates."""
    good = [Case(argv, False, "good") for argv in GOOD]
    bad, seen = [], set()
    for case in _run_cases() + _other_cases() + _explore_cases():
        if case.argv not in seen:
            seen.add(case.argv)
            bad.append(case)
    return good, bad


def draw(n, seed=0, select=None):
    """n distinct cases (fewer if the grammar has fewer), the same for the same seed;
    select(case) -> bool narrows the grammar first."""
    rng = random.Random(seed)
    good, bad = grammar()
    if select is not None:
        good, bad = [c for c in good if select(c)], [c for c in bad if select(c)]
    rng.shuffle(good)
    rng.shuffle(bad)
    cases = []
    while len(cases) < n and (good or bad):
        pick_good = good and (not bad or rng.random() < GOOD_SHARE)
        cases.append((good if pick_good else bad).pop())
    return cases


# ---- the fixtures the cases name ----

class Fixtures:
    """Files the cases name, made in a temporary directory: a text file, a
    directory, a truncated ELF, a copy of a patch, a C source, a trace."""

    def __init__(self, root):
        import lab
        self.root = root = pathlib.Path(root)
        self.out = root / "out"
        self.out.mkdir()
        (root / "dir").mkdir()
        os.mkfifo(root / "fifo")    # an existing file that is not a regular one
        (root / "text.txt").write_text("this is not a kernel, a patch or a trace\n")
        (root / "truncated.o").write_bytes(b"\x7fELF\x02\x01\x01\x00" + b"\0" * 8)
        shutil.copyfile(CAPABLE, root / "copy.o")
        shutil.copyfile(PATCHES / "kgr_capable.c", root / "patch.c")
        kernel = lab.Image.load().path
        shutil.copyfile(kernel, root / "kernel_copy.elf")
        if os.geteuid() == 0:
            unwritable = pathlib.Path("/proc")        # no one may create a file there, root included
        else:
            unwritable = root / "readonly"
            unwritable.mkdir(mode=0o555)
        with lab.boot(record=True) as system:
            system.run(200_000)
            system.save_trace(root / "run.trace")
        self.places = {
            "MISSING": str(root / "missing.o"), "DIR": str(root / "dir"), "TEXT": str(root / "text.txt"),
            "TRUNC": str(root / "truncated.o"), "COPY_PATCH": str(root / "copy.o"),
            "COPY_ELF": str(root / "copy.o"), "KERNEL": str(root / "kernel_copy.elf"),
            "UNICODE_MISSING": str(root / "ünïcødé"), "SURROGATE_MISSING": str(root / "bad\udcff.o"),
            "NODIR": str(root / "nodir"), "UNWRITABLE": str(unwritable),
            "FILE_PARENT": str(root / "text.txt"), "SOURCE": str(root / "patch.c"),
            "TRACE": str(root / "run.trace"), "FIFO": str(root / "fifo"),
        }

    def argv(self, case, index):
        places = dict(self.places, OUT=str(self.out / f"case{index}"))
        out = []
        for a in case.argv:
            for name, value in places.items():
                a = a.replace("{" + name + "}", value)
            out.append(a)
        return out

    def listing(self):
        return sorted(p.name for p in self.out.iterdir()) + sorted(p.name for p in (self.root / "dir").iterdir())

    def close(self):
        readonly = self.root / "readonly"
        if readonly.exists():
            readonly.chmod(0o755)


# ---- running one case ----

class _Work:
    """Counts boots and the runs of a booted kernel, by wrapping System."""

    def __init__(self):
        from ..system import System
        self.System = System
        self.boots = self.runs = 0
        self._init, self._run = System.__init__, System.run
        work = self

        def init(system, *args, **kwargs):
            work.boots += 1
            return work._init(system, *args, **kwargs)

        def run(system, *args, **kwargs):
            if system.kernel.booted:
                work.runs += 1
            return work._run(system, *args, **kwargs)

        System.__init__, System.run = init, run

    def reset(self):
        self.boots = self.runs = 0

    def close(self):
        self.System.__init__, self.System.run = self._init, self._run


def run_case(argv, work):
    """(status or None, stdout, stderr, traceback or None) of lab.cli.main(argv) in this process."""
    from .. import cli
    out, err = io.StringIO(), io.StringIO()
    status, tb = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = cli.main(list(argv))
        except SystemExit as exc:
            tb = f"SystemExit({exc.code!r}) escaped from lab.cli.main"
        except Exception:
            tb = traceback.format_exc()
    return status, out.getvalue(), err.getvalue(), tb


def classify(case, status, out, err, tb, work, created):
    """(outcome, why)."""
    if tb is not None:
        return FAILURE, "an exception escaped: " + tb.strip().splitlines()[-1]
    if "Traceback" in err:
        return FAILURE, "a traceback on stderr"
    if "usage:" in err:
        return FAILURE, "a usage block on stderr"
    if status == 2:
        lines = err.splitlines()
        if len(lines) != 1 or not lines[0].startswith("lab: error:"):
            return FAILURE, f"a refusal must be one line `lab: error: ...`, not {len(lines)} line(s)"
        if out:
            return FAILURE, "a refusal after output was written to stdout"
        if created:
            return FAILURE, f"a refusal after files were written: {', '.join(created)}"
        if work.runs:
            return FAILURE, f"a refusal after the booted kernel ran ({work.runs} run(s))"
        if work.boots and not case.after_boot:
            return FAILURE, "a refusal after boot: it could have been found before"
        if not case.bad:
            return FAILURE, f"a good command line was refused: {lines[0]}"
        return REFUSED, lines[0]
    if status in (0, 1):
        if case.bad:
            return FAILURE, f"a bad command line ({case.why}) was accepted with exit status {status}"
        return OK, f"exit status {status}"
    return FAILURE, f"exit status {status!r}"


def fuzz_cmdlines(n, seed=0, progress=None, select=None):
    """Run n distinct command lines drawn with seed; a dict of the figures:
    cases, outcomes per class, good and bad counts, and every failure with
    a reproducer.  progress(i, n, argv, outcome) after each case; select
    narrows the grammar (see draw())."""
    cases = draw(n, seed, select)
    outcomes = {OK: 0, REFUSED: 0, FAILURE: 0}
    failures = []
    tmp = tempfile.mkdtemp(prefix="lab-fuzz-")
    fixtures = None
    work = None
    try:
        fixtures = Fixtures(tmp)
        work = _Work()
        for i, case in enumerate(cases):
            argv = fixtures.argv(case, i)
            before = fixtures.listing()
            work.reset()
            status, out, err, tb = run_case(argv, work)
            created = [name for name in fixtures.listing() if name not in before] if status == 2 else []
            outcome, why = classify(case, status, out, err, tb, work, created)
            outcomes[outcome] += 1
            if outcome == FAILURE:
                failures.append({"argv": argv, "reproducer": "lab " + shlex.join(argv), "why": why,
                                 "case": case.why, "status": status, "stderr": err[-2000:],
                                 "traceback": tb})
            if progress is not None:
                progress(i, len(cases), argv, outcome)
    finally:
        if work is not None:
            work.close()
        if fixtures is not None:
            fixtures.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"cases": len(cases), "seed": seed, "bad": sum(c.bad for c in cases),
            "good": sum(not c.bad for c in cases), "outcomes": outcomes, "failures": failures,
            "fixtures": f"{tmp} (removed): text.txt, dir/, truncated.o, copy.o (of {CAPABLE}), "
                        "patch.c, kernel_copy.elf, fifo, run.trace (200,000 instructions)"}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lab.fuzz.cmdline",
                                description="Fuzz the lab command line with bad (and some good) invocations.")
    p.add_argument("--cases", type=int, default=200, metavar="N", help="how many command lines (default 200)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="the draw's seed (default 0)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every case and its outcome")
    args = p.parse_args(argv)
    if args.cases < 1:
        p.error("--cases must be at least 1")

    def progress(i, n, case_argv, outcome):
        if args.verbose:
            print(f"{i + 1:>5}/{n}  {outcome:<8} lab {shlex.join(case_argv)}", flush=True)

    result = fuzz_cmdlines(args.cases, args.seed, progress)
    o = result["outcomes"]
    print(f"{result['cases']} command lines (seed {result['seed']}; {result['bad']} bad, {result['good']} good): "
          f"{o[OK]} ok, {o[REFUSED]} refused, {o[FAILURE]} failures")
    for f in result["failures"]:
        print(f"FAILURE  {f['why']}\n  case: {f['case']}\n  {f['reproducer']}")
        if f["traceback"]:
            print("  " + f["traceback"].strip().replace("\n", "\n  "))
        elif f["stderr"]:
            print("  stderr: " + f["stderr"].strip().replace("\n", "\n          "))
    if result["failures"]:
        print(f"fixtures: {result['fixtures']}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
