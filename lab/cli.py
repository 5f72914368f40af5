"""cli - the `lab` command: every subcommand checks its arguments, calls the public API and renders its result.

Exit status: 0 success; 1 a failed check (a consistency violation, a kernel
panic, a patch the run could not apply); 2 a usage or input error.  A usage
error is found before any work is done (output paths are checked before the
kernel boots; only what needs the booted kernel, such as a task named by
--inject-fault, is checked after boot and before the first instruction runs)
and is reported as one line on stderr: `lab: error: ...`.
"""
from __future__ import annotations

import argparse
import decimal
import hashlib
import json
import os
import pathlib
import re
import sys
import tempfile

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .authoring import cli as authoring_cli
from .errors import KernelPanic, LabError, UsageError
from .kernel import QUANTUM_MAX, QUANTUM_MIN

EXIT_OK, EXIT_CHECK, EXIT_USAGE = 0, 1, 2

MAX_INSTRUCTIONS = 10_000_000_000   # 1e10: minutes of emulation; the benchmarks' longest runs are 1e9
QUANTUM_RANGE = (QUANTUM_MIN, QUANTUM_MAX)
MAX_SEED = 2**32 - 1
WIDTH_RANGE = (600, 20_000)
MAX_BOOT_PATCHES = 8                # start_kernel() has room for eight (boot_module_inits)
MODELS = ("kgraft", "immediate", "stop-machine", "klp", "upstream")   # lab.livepatch.core.MODELS
MAX_SCHEDULES = 1_000_000
MAX_BOUND = 8                       # forced preemptions per explored schedule: C(instants, K) grows fast
MAX_INSTANTS = 64
MAX_WORKERS = 256
MAX_LIST = {"--seeds": 32, "--quanta": 8, "--patch-at": 8, "--signal-after": 8}   # values of an explore list
SIGNALLING_MODELS = ("kgraft", "klp")   # the lab sends the fake signal; upstream's kernel sends its own (15 s)
RUN_DEFAULTS = {"instructions": 2_000_000, "patch_at": 1_000_000, "model": "kgraft"}


# ---- numbers as a person types them ----

_GROUPED = re.compile(r"[0-9]{1,3}(,[0-9]{3})+")


def parse_whole(text, lo, hi):
    """A whole number from 2000000, 2_000_000, 2,000,000, 2e6 or 2.5e6, within lo..hi.
    Raises ValueError with what is wrong (not a number, not whole, out of range)."""
    s = str(text).strip()
    if _GROUPED.fullmatch(s):
        s = s.replace(",", "")
    try:
        d = decimal.Decimal(s)
    except decimal.InvalidOperation:
        raise ValueError("not a number") from None
    if not d.is_finite():
        raise ValueError("not a finite number")
    # compared as a Decimal first: int() of 1e999999999 would not finish
    if not lo <= d <= hi:
        raise ValueError("out of range")
    if d != d.to_integral_value():
        raise ValueError("not a whole number")
    return int(d)


def _number(option, lo, hi, what=""):
    """An argparse type: a whole number for option, lo..hi, refused with the range."""
    unit = f" {what}" if what else ""

    def convert(text):
        try:
            return parse_whole(text, lo, hi)
        except ValueError as exc:
            if str(exc) == "out of range":
                raise argparse.ArgumentTypeError(
                    f"{option} {text}: out of range; give {lo:,} .. {hi:,}{unit}") from None
            raise argparse.ArgumentTypeError(
                f"{option} {text!r}: {exc}; give a whole number from {lo:,} to {hi:,}{unit} "
                "(2000000, 2_000_000, 2,000,000 and 2e6 all work)") from None
    return convert


def _instructions(option, lo=1):
    return _number(option, lo, MAX_INSTRUCTIONS, "instructions")


# ---- the parser: one line on a usage error, never the usage block ----

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        m = re.match(r"argument ([^:]+): (.*)", message, re.S)
        if m:
            name, rest = m.groups()
            if rest.startswith("-"):     # from _number: it names the option and says what to do
                raise _Usage(rest)
            message = f"{name.split('/')[-1]}: {rest}"
        raise _Usage(f"{message}; `{self.prog} --help` lists what it takes")


class _Usage(Exception):
    """An argparse error, already worded for the error line."""


def _add_image(p):
    p.add_argument("--image", metavar="ELF", help="kernel image (default: firmware/kernel.elf)")


def _add_boot(p, instructions):
    _add_image(p)
    p.add_argument("--workload", default="default", help="workload chosen at boot (`lab workloads`)")
    p.add_argument("--param", metavar="NAME=VALUE", action="append", default=[],
                   help="a parameter of the workload, e.g. nr_hammer=8; repeat for several "
                        "(`lab workloads` lists them with their ranges)")
    p.add_argument("--instructions", type=_instructions("--instructions"), default=None, metavar="N",
                   help=f"instructions retired since power-on at which the run ends (default {instructions:,}; "
                        f"at most {MAX_INSTRUCTIONS:,}, ten times the benchmarks' longest runs)")
    p.add_argument("--seed", type=_number("--seed", 0, MAX_SEED), default=0, metavar="S",
                   help=f"schedule seed: quantum jitter and task order (0: none; at most {MAX_SEED:,})")
    p.add_argument("--quantum", type=_number("--quantum", *QUANTUM_RANGE, "instructions"), default=None,
                   metavar="Q", help=f"instructions per time slice (default 20,000; "
                                     f"{QUANTUM_RANGE[0]:,} .. {QUANTUM_RANGE[1]:,})")
    p.add_argument("--json", action="store_true", help="print the JSON report")


def _explore_defaults():
    from .explore import plan
    from .explore.schedule import DEFAULT_LIMIT
    listed = lambda values: ",".join(str(v) for v in values)  # noqa: E731
    return {"schedules": plan.DEFAULT_SCHEDULES, "preemptions": plan.DEFAULT_PREEMPTIONS,
            "instants": plan.DEFAULT_INSTANTS, "seeds": listed(plan.DEFAULT_SEEDS),
            "quanta": listed(plan.DEFAULT_QUANTA), "patch_at": listed(plan.DEFAULT_PATCH_ATS),
            "signal_after": listed(plan.DEFAULT_SIGNALS) + " with kgraft and klp", "limit": DEFAULT_LIMIT}


def build_parser():
    from .explore.schedule import MAX_PREEMPTIONS as MAX_PREEMPT_AT
    _EXPLORE = _explore_defaults()
    parser = _Parser(prog="lab", description="A live kernel patching laboratory (kGraft style).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="the bundled scenario, start to end")
    _add_image(p)
    from .demo import PATCH_AT
    p.add_argument("--instructions", default=8_000_000,
                   type=_number("--instructions", PATCH_AT + 1, MAX_INSTRUCTIONS,
                                f"instructions (the demo loads its patch at {PATCH_AT:,})"),
                   metavar="N", help=f"stop after N instructions at most (default 8,000,000; more than "
                                     f"{PATCH_AT:,}, where the demo loads its patch; at most {MAX_INSTRUCTIONS:,})")
    p.add_argument("--seed", type=_number("--seed", 0, MAX_SEED), default=0, metavar="S")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the story")
    p.add_argument("--trace", metavar="FILE", help="record the run into a trace file (lab trace view FILE)")

    p = sub.add_parser("run", help="boot a workload and run it, optionally live-patching it")
    _add_boot(p, RUN_DEFAULTS["instructions"])
    p.add_argument("--patch", metavar="FILE", action="append", default=[],
                   help="a patch object (.o) to apply at --patch-at; repeat for several, applied in turn")
    p.add_argument("--patch-at", type=_instructions("--patch-at"), default=None, metavar="N",
                   help="instruction (since power-on) at which the first patch is loaded (default 1,000,000); "
                        "needs --patch")
    p.add_argument("--signal-after", type=_instructions("--signal-after"), default=None, metavar="N",
                   help="send the fake signal to tasks still in progress N instructions into a transition, "
                        "and every N after (models kgraft and klp, or any model's revert)")
    p.add_argument("--revert-at", type=_instructions("--revert-at"), default=None, metavar="N",
                   help="revert the last patch at instruction N (after --patch-at; needs --patch or --boot-patch)")
    p.add_argument("--write-at", metavar="N PATH=VALUE", nargs=2, action="append", default=[],
                   help="at instruction N, write VALUE to PATH from a task of the kernel, as `echo VALUE > PATH` "
                        "(e.g. /sys/kernel/livepatch/NAME/enabled=0 disables a klp patch); repeat for several")
    p.add_argument("--rmmod-at", metavar="N NAME", nargs=2, action="append", default=[],
                   help="at instruction N, remove module NAME (rmmod: refused while an enabled klp patch holds "
                        "it); repeat for several")
    p.add_argument("--insmod-at", metavar="N FILE", nargs=2, action="append", default=[],
                   help="at instruction N, load the module FILE (insmod: a live patch or not; a module that a "
                        "patch in transition patches joins that transition); repeat for several")
    p.add_argument("--boot-patch", metavar="FILE", action="append", default=[],
                   help="a patch applied at boot, before the first task runs (a reboot with patches; "
                        f"at most {MAX_BOOT_PATCHES})")
    p.add_argument("--inject-fault", metavar="TASK", action="append", default=[],
                   help="make TASK (tid or name) fault: a user task at its next system call, a kernel thread "
                        "at its next switch (an oops; the others run on); the idle task (0, swapper/0) panics "
                        "the kernel, and lab run exits 1 with the report so far; repeat for several")
    p.add_argument("--trace", metavar="FILE", help="record the run into a trace file (lab trace view FILE)")
    p.add_argument("--model", default=None, choices=MODELS,
                   help="consistency model for --patch (default kgraft)")
    p.add_argument("--preempt-at", metavar="N[,N...]", action="append", default=[],
                   help="force a preemption (a reschedule IPI) at each of these instructions since power-on, "
                        f"after boot and before the end of the run; at most {MAX_PREEMPT_AT} (what `lab explore` "
                        "prints in a reproducer)")

    p = sub.add_parser("compare", help="the consistency models side by side on one patch")
    _add_image(p)
    p.add_argument("--patch", required=True, metavar="FILE", help="the patch object to apply")
    p.add_argument("--workload", default="default")
    p.add_argument("--param", metavar="NAME=VALUE", action="append", default=[],
                   help="a parameter of the workload, e.g. nr_hammer=8; repeat for several")
    p.add_argument("--seed", type=_number("--seed", 0, MAX_SEED), default=0, metavar="S")
    p.add_argument("--patch-at", type=_instructions("--patch-at"), default=1_000_000, metavar="N",
                   help="instruction (since power-on) at which the patch is loaded (default 1,000,000)")
    p.add_argument("--signal-after", type=_instructions("--signal-after"), default=1_500_000, metavar="N",
                   help="fake signal interval for the models that send one (default 1,500,000)")
    p.add_argument("--limit", type=_instructions("--limit"), default=12_000_000, metavar="N",
                   help="give up waiting for completion after N instructions (default 12,000,000)")
    p.add_argument("-o", "--chart", metavar="OUT.svg", help="also draw the comparison as an SVG bar chart")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("explore", help="search schedules for a consistency violation; a minimal reproducer",
                       description="Runs a patch under many schedules (boot seed, quantum, when the patch loads, "
                                   "the fake signal's interval, forced preemptions at the instants that matter) and "
                                   "checks each run.  Exit status 0: no violation; 1: a violation (or a kernel panic) "
                                   "was found, and a `lab run` line reproduces it; 2: a usage error.")
    _add_image(p)
    p.add_argument("--patch", metavar="FILE", action="append", default=[],
                   help="a patch object to explore; repeat for several (each is explored on its own)")
    p.add_argument("--then", metavar="FILE", action="append", default=[],
                   help="a patch loaded after the explored one has completed, as `lab run --patch A --patch B` "
                        "loads them (a stacked patch: the transitions follow each other); repeat for more")
    p.add_argument("--model", metavar="M", action="append", default=[], choices=MODELS,
                   help="consistency model (default kgraft); repeat for several")
    p.add_argument("--workload", default="default", help="workload chosen at boot (`lab workloads`)")
    p.add_argument("--param", metavar="NAME=VALUE", action="append", default=[],
                   help="a parameter of the workload, e.g. nr_hammer=8; repeat for several")
    p.add_argument("--schedules", type=_number("--schedules", 1, MAX_SCHEDULES, "schedules"), default=None,
                   metavar="N", help=f"schedules to run for each patch and model (default {_EXPLORE['schedules']}; "
                                     f"at most {MAX_SCHEDULES:,})")
    p.add_argument("--preemptions", type=_number("--preemptions", 0, MAX_BOUND, "forced preemptions"), default=None,
                   metavar="K", help=f"at most K forced preemptions per schedule (default {_EXPLORE['preemptions']}; "
                                     f"0 .. {MAX_BOUND})")
    p.add_argument("--instants", type=_number("--instants", 1, MAX_INSTANTS, "instants"), default=None, metavar="M",
                   help=f"preempt among the first M interesting instants of each base schedule (default "
                        f"{_EXPLORE['instants']}; 1 .. {MAX_INSTANTS})")
    p.add_argument("--seeds", metavar="S[,S...]", default=None,
                   help=f"boot seeds to explore (default {_EXPLORE['seeds']})")
    p.add_argument("--quanta", metavar="Q[,Q...]", default=None,
                   help=f"quanta to explore (default {_EXPLORE['quanta']})")
    p.add_argument("--patch-at", metavar="N[,N...]", default=None,
                   help=f"instants (since power-on) at which the patch is loaded (default {_EXPLORE['patch_at']})")
    p.add_argument("--signal-after", metavar="N[,N...]", default=None,
                   help=f"fake signal intervals, for the models that send it (default {_EXPLORE['signal_after']})")
    p.add_argument("--limit", type=_instructions("--limit"), default=None, metavar="N",
                   help=f"instructions after the load a transition may take before a run ends (default "
                        f"{_EXPLORE['limit']:,})")
    p.add_argument("--sample-seed", type=_number("--sample-seed", 0, MAX_SEED), default=0, metavar="S",
                   help="seed of the random samples (default 0)")
    p.add_argument("--all", action="store_true", help="go on after the first failing schedule")
    p.add_argument("--workers", type=_number("--workers", 0, MAX_WORKERS, "worker processes"), default=None,
                   metavar="N", help="worker processes of a local Dask cluster (default: one per core; 0 or 1: "
                                     "in this process)")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="explore on the Dask cluster whose scheduler is at tcp://HOST:PORT instead")
    p.add_argument("--trace-dir", metavar="DIR", help="record the minimal failing schedule into a trace in DIR")
    p.add_argument("--junit", metavar="FILE", help="write a JUnit XML report: one testcase per patch and model")
    p.add_argument("--json", action="store_true", help="print the JSON report (schema 1)")

    p = sub.add_parser("patch", help="live patch objects")
    psub = p.add_subparsers(dest="patch_command", required=True, parser_class=_Parser)
    b = psub.add_parser("build", help="compile a C live patch with the firmware's flags")
    b.add_argument("source", metavar="SOURCE.c")
    b.add_argument("-o", "--output", metavar="OUT.o",
                   help="the object to write (default: SOURCE's name with .o, in the current directory)")
    authoring_cli.add_subcommands(psub)

    p = sub.add_parser("selftest", help="play upstream's livepatch selftests on the lab's kernel",
                       description="Plays the scenarios of tools/testing/selftests/livepatch/ (test-livepatch.sh, "
                                   "test-callbacks.sh, test-shadow-vars.sh, test-state.sh, test-sysfs.sh, "
                                   "test-ftrace.sh) on a fresh kernel each, and compares the kernel log with the "
                                   "script's expected text, word for word.  Exit status 0: all ok; 1: a scenario's "
                                   "log differs (the diff is printed); 2: a usage error.")
    p.add_argument("scripts", nargs="*", metavar="SCRIPT",
                   help="the scripts to play, e.g. test-state.sh (default: every one)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--model", default="upstream", choices=MODELS,
                   help="consistency model of the kernel (default upstream, the scripts' own)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("workloads", help="the workloads the image offers, with their parameters")
    _add_image(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("symbols", help="the kernel's symbols (kallsyms)")
    _add_image(p)
    p.add_argument("filter", nargs="?", help="only names containing this")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("pads", help="the fentry pads listed in __mcount_loc")
    _add_image(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("trace", help="look at a recorded run (--trace FILE of run and demo) step by step")
    tsub = p.add_subparsers(dest="trace_command", required=True, parser_class=_Parser)
    t = tsub.add_parser("view", help="step through a trace interactively (keys: see the help line)",
                        description="Keys: right/n and left/p step one instruction, ] and [ the next and previous "
                                    "event, s and S the next and previous safe point (Migrated) or signal, c the "
                                    "next call of a function (asked for), g go to a step (1234567, 5e6, 50%, "
                                    "+N, -N), f follow the current task only (again: stop), q quit.")
    t.add_argument("file", metavar="FILE")
    t.add_argument("--step", metavar="N", help="start at step N (a count, 5e6 or 50%%)")
    _add_image(t)
    t = tsub.add_parser("show", help="one step: code, registers, tasks with universes, events, console")
    t.add_argument("file", metavar="FILE")
    t.add_argument("--step", required=True, metavar="N",
                   help="instructions retired (1234567, 5e6) or a share of the run (50%%)")
    t.add_argument("--json", action="store_true", help="print the step as JSON")
    _add_image(t)
    t = tsub.add_parser("timeline", help="an SVG of the tasks over time: universes, safe points, fake signals")
    t.add_argument("file", metavar="FILE")
    t.add_argument("-o", "--output", required=True, metavar="OUT.svg")
    t.add_argument("--width", type=_number("--width", *WIDTH_RANGE, "pixels"), default=1200, metavar="PX",
                   help=f"width of the picture (default 1200; {WIDTH_RANGE[0]:,} .. {WIDTH_RANGE[1]:,})")
    _add_image(t)
    from . import gdbserver
    gdbserver.add_parser(tsub)

    p = sub.add_parser("disasm", help="disassemble a kernel function")
    _add_image(p)
    p.add_argument("function")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("shell", help="an interactive (or scripted) session on a live kernel",
                       description="Boots a kernel and reads commands: run, patch, pending, signal, force, revert, "
                                   "trace, back / goto (time travel over the recording), view, save, report; `help` "
                                   "in the session lists them.  With --script FILE, or commands on standard input "
                                   "that is not a terminal, it runs them without prompts and prints a transcript "
                                   "that is the same on every run.  Exit status: 0; 1 a patch refused, a panic or "
                                   "a consistency violation; 2 a usage error (in a script: the line, named).")
    _add_image(p)
    p.add_argument("--workload", default="default", help="workload chosen at boot (`lab workloads`)")
    p.add_argument("--param", metavar="NAME=VALUE", action="append", default=[],
                   help="a parameter of the workload, e.g. nr_hammer=8; repeat for several")
    p.add_argument("--seed", type=_number("--seed", 0, MAX_SEED), default=0, metavar="S",
                   help=f"schedule seed (0: none; at most {MAX_SEED:,})")
    p.add_argument("--quantum", type=_number("--quantum", *QUANTUM_RANGE, "instructions"), default=None,
                   metavar="Q", help=f"instructions per time slice (default 20,000; "
                                     f"{QUANTUM_RANGE[0]:,} .. {QUANTUM_RANGE[1]:,})")
    p.add_argument("--model", default="kgraft", choices=MODELS, help="consistency model (default kgraft)")
    p.add_argument("--script", metavar="FILE", help="run the commands in FILE, one a line (# comments)")
    p.add_argument("--svg", metavar="OUT.svg", help="also write the session, as a terminal shows it, to an SVG")
    return parser


# ---- checks made before any work ----

def _named(option, value):
    """How an error line names a value: with its option, or alone for an argument (SOURCE.c, FILE)."""
    return f"{option} {value}" if option.startswith("-") else str(value)


def _nonempty(option, value, what):
    if value is not None and not str(value).strip():
        if option.startswith("-"):
            raise UsageError(f"{option}: an empty {what}; give one or leave the option out")
        raise UsageError(f"{option}: an empty {what}; give one")


def check_output(option, path, example="out"):
    """Refuse an output path that cannot be written: its directory must exist
    and take a new file (tried with a temporary file, which root's os.access
    would not tell), and the path must not be a directory or a special file."""
    if path is None:
        return
    _nonempty(option, path, "file name")
    p = pathlib.Path(path)
    name = _named(option, path)
    if str(path).endswith(("/", os.sep)):
        raise UsageError(f"{name}: names a directory; give a file name, e.g. {p / example}")
    try:
        if p.is_dir():
            raise UsageError(f"{name}: is a directory; give a file name inside it, e.g. {p / example}")
        if p.exists() and not p.is_file():
            raise UsageError(f"{name}: exists and is not a regular file; give another file name")
        parent = p.parent
        if not parent.exists():
            raise UsageError(f"{name}: the directory {parent} does not exist; create it or choose another")
        if not parent.is_dir():
            raise UsageError(f"{name}: {parent} is not a directory; choose a file in a directory")
        if p.exists() and not os.access(p, os.W_OK):
            raise UsageError(f"{name}: the file is read-only; make it writable or choose another name")
        fd, probe = tempfile.mkstemp(prefix=".lab-write-check-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = p.parent if p.parent != pathlib.Path() else pathlib.Path(".")
        raise UsageError(f"{name}: cannot write in {where} ({exc.strerror or exc}); "
                         "choose a directory you can write to") from None


def check_input(option, path, what, hint):
    """Refuse an input file that is missing, a directory or unreadable."""
    _nonempty(option, path, "file name")
    p = pathlib.Path(path)
    name = _named(option, path)
    try:
        if not p.exists():
            raise UsageError(f"{name}: no such {what}; {hint}")
        if p.is_dir():
            raise UsageError(f"{name}: is a directory, not a {what}; {hint}")
        if not p.is_file():
            raise UsageError(f"{name}: is not a regular file; {hint}")
        with open(p, "rb"):
            pass
    except OSError as exc:
        raise UsageError(f"{name}: cannot read it ({exc.strerror or exc})") from None
    return p


def _image(args):
    from .image import Image
    if args.image is not None:
        check_input("--image", args.image, "kernel image",
                    "pass the kernel image built in firmware/ (kernel.elf)")
    return Image.load(args.image)


class _NoMemory:
    """The machine of a dry-run load: ModuleLoader.load() touches the machine
    only to commit an object that passed every check (its step 5: write the
    code, protect it), so every call here does nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def check_patches(img, groups):
    """Refuse a patch object that is missing, malformed, or that the loader
    would refuse (an unresolved symbol, an unsupported relocation, no init),
    and the same object given twice: kGraft refuses a second patch of the
    same name, so the second would only be refused at run time.
    groups: [(option, [paths])]."""
    from .modules import ModuleLoader
    seen = {}
    for option, paths in groups:
        for path in paths:
            noun = "module object" if option == "--insmod-at" else "patch object"
            p = check_input(option, path, noun, "build one with `lab patch build SOURCE.c`")
            try:
                ModuleLoader(img, _NoMemory()).load(p)
            except LabError as exc:
                named = option if p.name in str(exc) else f"{option} {path}"
                raise UsageError(f"{named}: {exc}") from None
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            if digest in seen:
                first_option, first = seen[digest]
                if os.path.realpath(first) == os.path.realpath(path):
                    what = f"{option} {path}: given twice" if first_option == option else \
                        f"{option} {path}: also given as {first_option}"
                else:
                    what = f"{option} {path}: the same object as {first_option} {first}"
                raise UsageError(f"{what}; a patch is applied once (kGraft refuses a second patch of the "
                                 "same name); give it once")
            seen[digest] = (option, path)


def parse_list(option, values, lo, hi, what, most, example="1200000,1350000"):
    """Whole numbers from option values holding comma-separated items
    (--preempt-at 1200000,1350000), each within lo..hi and given once, at
    most `most` of them.  The comma separates items, so an item is written
    without thousands separators."""
    items = []
    for value in values:
        _nonempty(option, value, "list")
        for piece in str(value).split(","):
            piece = piece.strip()
            if not piece:
                raise UsageError(f"{option} {value}: an empty item; give {what} separated by commas, "
                                 f"e.g. {option} {example}")
            try:
                n = parse_whole(piece, lo, hi)
            except ValueError as exc:
                why = f"{piece} is out of range; give {lo:,} .. {hi:,}" if str(exc) == "out of range" else \
                    f"{piece!r} is {exc}; give whole numbers"
                raise UsageError(f"{option} {value}: {why}; items are separated by commas, so write each "
                                 "without thousands separators (2000000, 2_000_000 or 2e6)") from None
            if n in items:
                raise UsageError(f"{option} {value}: {n:,} is given twice; give each once")
            items.append(n)
    if len(items) > most:
        raise UsageError(f"{option}: {len(items)} {what}; give at most {most}")
    return items


def check_directory(option, path):
    """Refuse a directory to write into that cannot be: an existing one
    must take a new file; a missing one is created later, so its parent
    must exist and take one."""
    if path is None:
        return
    _nonempty(option, path, "directory name")
    p = pathlib.Path(path)
    where = p
    try:
        if p.exists() and not p.is_dir():
            raise UsageError(f"{option} {path}: is not a directory; give a directory (a missing one is created)")
        if not p.exists():
            where = p.parent
            if not where.is_dir():
                raise UsageError(f"{option} {path}: {where} is not an existing directory; create it or choose "
                                 "another")
        fd, probe = tempfile.mkstemp(prefix=".lab-write-check-", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write in {where} ({exc.strerror or exc}); "
                         "choose a directory you can write to") from None


def parse_params(values):
    """{name: int} from --param NAME=VALUE options."""
    params = {}
    for item in values:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name or not value.strip():
            raise UsageError(f"--param {item!r}: give NAME=VALUE, e.g. --param nr_hammer=8 "
                             "(`lab workloads` lists the parameters)")
        if name in params:
            raise UsageError(f"--param {name} is given twice; give each parameter once")
        try:
            params[name] = parse_whole(value, -2**63, 2**63 - 1)
        except ValueError as exc:
            raise UsageError(f"--param {item}: {value!r} is {exc}; give a whole number") from None
    return params


def _check_params(img, workload, values):
    params = parse_params(values)
    if params:
        img.check_params(workload, params)   # ImageError naming the parameter and its range
    return params


def _workload(img, args):
    _nonempty("--workload", args.workload, "workload name")
    img.workload(args.workload)              # ImageError listing the workloads
    return _check_params(img, args.workload, args.param)


def check_run(args):
    """Every check of `lab run` that does not need a booted kernel.  Fills in
    the defaults of the options whose absence matters.  Returns (image, params)."""
    check_output("--trace", args.trace, "run.trace")
    img = _image(args)
    params = _workload(img, args)
    for name in args.inject_fault:
        _nonempty("--inject-fault", name, "task")
    if len(args.boot_patch) > MAX_BOOT_PATCHES:
        raise UsageError(f"--boot-patch is given {len(args.boot_patch)} times; at most {MAX_BOOT_PATCHES} "
                         "patches can be applied at boot")
    check_patches(img, [("--boot-patch", args.boot_patch), ("--patch", args.patch),
                        ("--insmod-at", [path for _n, path in args.insmod_at])])

    given = {k: getattr(args, k) is not None for k in RUN_DEFAULTS}
    for key, value in RUN_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    end = args.instructions
    if not args.patch:
        for key, why in (("patch_at", "it is when --patch FILE is loaded"),
                         ("model", "boot patches are applied before any task exists, whatever the model")):
            if given[key]:
                option = "--" + key.replace("_", "-")
                raise UsageError(f"{option} has no effect without --patch FILE ({why}); add --patch or drop it")
    else:
        if args.patch_at >= end:
            default = "" if given["patch_at"] else " (the default)"
            raise UsageError(f"--patch-at {args.patch_at:,}{default} is not before the end of the run "
                             f"(--instructions {end:,}); load the patch earlier or run longer")
    from .explore.schedule import MAX_PREEMPTIONS
    args.preempt_at = sorted(parse_list("--preempt-at", args.preempt_at, 1, MAX_INSTRUCTIONS, "instants",
                                        MAX_PREEMPTIONS))
    late = [n for n in args.preempt_at if n >= end]
    if late:
        raise UsageError(f"--preempt-at {late[0]:,} is not before the end of the run (--instructions {end:,}); "
                         "preempt earlier or run longer")
    if args.revert_at is not None:
        if not (args.patch or args.boot_patch):
            raise UsageError("--revert-at needs a patch to revert; add --patch FILE (or --boot-patch FILE)")
        if args.patch and args.revert_at <= args.patch_at:
            raise UsageError(f"--revert-at {args.revert_at:,} is not after --patch-at {args.patch_at:,}; "
                             "a patch is reverted after it is loaded")
        if args.revert_at >= end:
            raise UsageError(f"--revert-at {args.revert_at:,} is not before the end of the run "
                             f"(--instructions {end:,}); revert earlier or run longer")
    args.actions = _check_actions(args, end)
    if args.signal_after is not None:
        if not args.patch and args.revert_at is None:
            raise UsageError("--signal-after has no effect without --patch FILE (or --revert-at N): the fake "
                             "signal is sent only during a transition")
        if args.patch and args.model not in SIGNALLING_MODELS and args.revert_at is None:
            raise UsageError(f"--signal-after has no effect with --model {args.model}, which never sends the "
                             f"fake signal; use --model {' or '.join(SIGNALLING_MODELS)}, or drop it")
        start = args.patch_at if args.patch else args.revert_at
        if start + args.signal_after >= end:
            raise UsageError(f"--signal-after {args.signal_after:,}: the first fake signal would come at "
                             f"{start + args.signal_after:,}, not before the end of the run (--instructions "
                             f"{end:,}); give a smaller interval or run longer")
    return img, params


MAX_WRITE_PATH, MAX_WRITE_VALUE = 95, 127     # struct lab_request's path and buffer (firmware/module.c)


def _check_actions(args, end):
    """--write-at, --rmmod-at and --insmod-at: [(N, kind, what, value)] in time order."""
    actions = []
    for n, spec in args.write_at:
        at = _instructions("--write-at")(n)
        path, eq, value = spec.partition("=")
        if not eq or not path.startswith("/") or not value:
            raise UsageError(f"--write-at {n} {spec}: give PATH=VALUE with an absolute path, e.g. "
                             "/sys/kernel/livepatch/NAME/enabled=0")
        if len(path) > MAX_WRITE_PATH or len(value) > MAX_WRITE_VALUE or not (path + value).isprintable():
            raise UsageError(f"--write-at {n} {spec}: the path may have {MAX_WRITE_PATH} printable characters and "
                             f"the value {MAX_WRITE_VALUE}")
        actions.append((at, "write", path, value))
    for n, name in args.rmmod_at:
        at = _instructions("--rmmod-at")(n)
        if not name.isidentifier():
            raise UsageError(f"--rmmod-at {n} {name}: {name!r} is not a module name (the object's file name "
                             "without .o)")
        actions.append((at, "rmmod", name, None))
    for n, path in args.insmod_at:         # the object was checked with the patches
        actions.append((_instructions("--insmod-at")(n), "insmod", path, None))
    for at, kind, what, _v in actions:
        if at >= end:
            raise UsageError(f"--{kind}-at {at:,} {what} is not before the end of the run (--instructions "
                             f"{end:,}); do it earlier or run longer")
    return sorted(actions, key=lambda a: a[0])


def _run_actions(system, args, notes):
    """Do --write-at, --rmmod-at and --insmod-at in time order, after the patches."""
    from .livepatch import LivepatchError
    from .livepatch.klp import STRERROR
    failed = False
    for at, kind, what, value in args.actions:
        if system.clock < at:
            system.run(at - system.clock)
        elif system.clock > at:
            notes.append(f"--{kind}-at {at:,} {what}: done at {system.clock:,}, once what came before was done")
        try:
            if kind == "write":
                ret = system.write_file(what, value)
                if ret < 0:
                    notes.append(f"--write-at {at:,}: echo {value} > {what}: write error: "
                                 f"{STRERROR.get(-ret, f'error {ret}')}")
                    failed = True
            elif kind == "insmod":
                system.insmod(what)
            else:
                system.rmmod(what)
        except LivepatchError as exc:
            notes.append(f"--{kind}-at {at:,}: {exc}")
            failed = True
    return failed


def _after_boot_run(system, args):
    """The checks of `lab run` that need the booted kernel: the tasks named by
    --inject-fault and the instants that must come after boot.  Nothing has
    run since boot yet.  Returns the tids to fault."""
    booted_at = system.clock
    for option, value in (("--instructions", args.instructions),
                          ("--patch-at", args.patch_at if args.patch else None),
                          ("--revert-at", args.revert_at),
                          *((f"--{kind}-at", at) for at, kind, _w, _v in args.actions)):
        if value is not None and value < booted_at:
            hint = "; use --boot-patch to apply a patch at boot" if option == "--patch-at" else ""
            raise UsageError(f"{option} {value:,} comes before the end of boot (at {booted_at:,} instructions "
                             f"since power-on); give a later instant{hint}")
    if args.preempt_at and args.preempt_at[0] <= booted_at:
        raise UsageError(f"--preempt-at {args.preempt_at[0]:,} is not after the end of boot (at {booted_at:,} "
                         "instructions since power-on); give a later instant")
    tids = {}
    for name in args.inject_fault:
        key = int(name) if name.isascii() and name.isdigit() else name
        try:
            task = system.task(key)
        except LabError as exc:            # it names the tasks there are
            raise UsageError(f"--inject-fault {name}: {exc}") from None
        if task.tid in tids:
            raise UsageError(f"--inject-fault {name}: task {task.tid} ({task.name}) is already named by "
                             f"--inject-fault {tids[task.tid]}; name each task once")
        tids[task.tid] = name
    return list(tids)


# ---- the commands ----

def _line(out, text, style=""):
    """One line of the command's own, never wrapped or read as markup."""
    out.print(Text(text, style=style), soft_wrap=True)


def _notes_out(args, out, notes):
    for text in notes:
        if args.json:
            print(f"lab: {text}", file=sys.stderr)
        else:
            _line(out, text, "bold yellow")


def cmd_run(args, out):
    from .kernel import DEFAULT_QUANTUM
    from .livepatch import PatchState
    from .render import run_view
    from .system import boot
    img, params = check_run(args)
    with boot(img, workload=args.workload, seed=args.seed, quantum=args.quantum or DEFAULT_QUANTUM,
              patches=args.boot_patch, signal_after=args.signal_after, record=bool(args.trace),
              model=args.model, observe=True, params=params) as system:
        faults = _after_boot_run(system, args)
        if args.preempt_at:
            system.kernel.preempt_at(args.preempt_at)
        notes, failed, panic = [], False, None
        try:
            for tid in faults:
                system.inject_fault(tid)
            failed = _run_patches(system, args, notes, PatchState)
            failed = _run_actions(system, args, notes) or failed
            if system.clock < args.instructions:
                if out.is_terminal and not args.json:
                    # a progress line on a terminal, nothing when piped (same run either way)
                    from .shell.progress import RunProgress
                    RunProgress(system, out).run(args.instructions - system.clock)
                else:
                    system.run(args.instructions - system.clock)
        except KernelPanic as exc:
            panic = str(exc)
        if args.trace:
            system.save_trace(args.trace)
        report = system.report()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        out.print(run_view(report))
        if args.trace:
            _line(out, f"trace written to {args.trace}: step through it with `lab trace view {args.trace}`")
    _notes_out(args, out, notes)
    t = report.get("transition")
    if t and not args.json:
        who = ", ".join(f"{p['name']} ({p['sleeps_in'] or 'running'})" if isinstance(p, dict) else str(p)
                        for p in t.get("pending", []))
        hint = "" if args.signal_after is not None or args.model not in SIGNALLING_MODELS else \
            "; --signal-after N sends them the fake signal"
        _line(out, f"the transition of '{t.get('patch')}' is still in progress at the end of the run: "
                   f"waiting for {who or 'the interrupt context'}{hint}", "yellow")
    status = EXIT_CHECK if failed else EXIT_OK
    if report["violations"]:
        if not args.json:
            _line(out, f"{len(report['violations'])} consistency violation(s)", "bold red")
            for v in report["violations"]:
                _line(out, "  " + _violation_text(v), "red")
        status = EXIT_CHECK
    if panic:
        text = panic if panic.startswith("kernel panic") else f"kernel panic: {panic}"
        if args.json:
            print(text, file=sys.stderr)
        else:
            _line(out, text, "bold red")
        status = EXIT_CHECK
    return status


def _violation_text(v):
    """One violation in a line: who, which rule, which functions, when."""
    rule = v.get("rule", "mixed")
    if rule == "mixed":
        return (f"{v['task']} ({v['tid']}): one {v['unit']} from {v['start']:,} ran old {', '.join(v['old'])} "
                f"and new {', '.join(v['new'])} of '{v['patch']}' (mixed at {v['first_mixed_at']:,})")
    if rule == "stale":
        return (f"{v['task']} ({v['tid']}): entered {', '.join(v['old'])}, which the completed transition of "
                f"'{v['patch']}' left (stale, at {v['first_mixed_at']:,})")
    if rule == "decision":
        return (f"{v['task']} ({v['tid']}): entered {', '.join(v['old'] + v['new'])} of '{v['patch']}', the "
                f"version of the universe it was not in (decision, at {v['first_mixed_at']:,})")
    return (f"{v['task']} ({v['tid']}): switched universe with {', '.join(v['old'])} of '{v['patch']}' "
            f"on its stack (on-stack, at {v['first_mixed_at']:,})")


def _run_patches(system, args, notes, PatchState):
    """Load --patch objects in turn (one transition at a time, as kGraft
    requires) and revert at --revert-at.  What could not be done goes to
    notes; returns True if something asked for was not done."""
    from .livepatch import LivepatchError
    end, failed = args.instructions, False
    if args.patch:
        system.run(args.patch_at - system.clock)
        for i, path in enumerate(args.patch):
            if i:
                system.run_until_patched(max(end - system.clock, 0))
            if system.clock >= end or system.transition is not None:
                busy = system.transition.patch.name if system.transition is not None else None
                why = f"the transition of '{busy}' was still in progress" if busy else "the run ended first"
                if busy and args.signal_after is None and args.model in SIGNALLING_MODELS:
                    why += " (--signal-after N wakes the tasks that hold a transition open)"
                for rest in args.patch[i:]:
                    notes.append(f"--patch {rest} was not loaded: {why} at {system.clock:,}")
                failed = True
                break
            try:
                system.apply_patch(path)
            except LivepatchError as exc:
                notes.append(f"--patch {path} was refused by the kernel: {exc}")
                failed = True
    if args.revert_at is not None:
        if system.clock < args.revert_at:
            system.run(args.revert_at - system.clock)
        elif system.clock > args.revert_at:
            notes.append(f"--revert-at {args.revert_at:,}: reverted at {system.clock:,}, once the patches "
                         "were loaded")
        live = [p for p in system.patches if p.state in (PatchState.COMPLETE, PatchState.TRANSITION)]
        if not live:
            notes.append(f"--revert-at {args.revert_at:,}: no patch was applied then; nothing to revert")
            return True
        try:
            system.revert(live[-1].name)
        except LivepatchError as exc:
            notes.append(f"--revert-at {args.revert_at:,}: {exc}")
            failed = True
    return failed


def check_compare(args):
    check_output("--chart", args.chart, "compare.svg")
    img = _image(args)
    params = _workload(img, args)
    check_patches(img, [("--patch", [args.patch])])
    return img, params


def cmd_compare(args, out):
    from .compare import ComparisonTable, compare, write_chart
    img, params = check_compare(args)
    rows = compare(args.patch, workload=args.workload, seed=args.seed, patch_at=args.patch_at,
                   signal_after=args.signal_after, limit=args.limit, image=img, params=params)
    title = pathlib.Path(args.patch).name
    if args.chart:
        write_chart(rows, args.chart, title=title)
    if args.json:
        print(json.dumps({"schema": 1, "patch": str(args.patch), "workload": args.workload, "params": params,
                          "seed": args.seed, "models": rows}, indent=2))
    else:
        _print_table(out, ComparisonTable(rows, title).__rich__())
        if args.chart:
            _line(out, f"chart written to {args.chart}")
    panics = [r for r in rows if r.get("panic")]
    for r in panics:
        text = f"kernel panic under {r['model']}: {r['panic']}"
        if args.json:
            print(text, file=sys.stderr)
        else:
            _line(out, text, "bold red")
    return EXIT_CHECK if panics else EXIT_OK


def check_explore(args):
    """Every check of `lab explore` that does not need a booted kernel.
    Returns (image, params, models, {seeds, quanta, patch_ats, signal_afters})."""
    from .explore.runner import check_address
    from .explore.schedule import SIGNALLING_MODELS as signalling
    check_output("--junit", args.junit, "explore.xml")
    check_directory("--trace-dir", args.trace_dir)
    if not args.patch:
        raise UsageError("lab explore needs --patch FILE, the patch object to explore; repeat it for several")
    if args.workers is not None and args.scheduler is not None:
        raise UsageError("--workers and --scheduler conflict: the scheduler's cluster has its own workers; "
                         "give one of them")
    if args.scheduler is not None:
        _nonempty("--scheduler", args.scheduler, "address")
        check_address(args.scheduler)
    models = []
    for m in args.model or ["kgraft"]:
        if m in models:
            raise UsageError(f"--model {m} is given twice; give each model once")
        models.append(m)
    lists = {}
    for option, key, lo, hi, what, example in (
            ("--seeds", "seeds", 0, MAX_SEED, "seeds", "0,1,2"),
            ("--quanta", "quanta", *QUANTUM_RANGE, "quanta", "20000,7000"),
            ("--patch-at", "patch_ats", 1, MAX_INSTRUCTIONS, "instants", "1000000,1250000"),
            ("--signal-after", "signal_afters", 1, MAX_INSTRUCTIONS, "intervals", "200000,700000")):
        value = getattr(args, option[2:].replace("-", "_"))
        lists[key] = None if value is None else \
            tuple(parse_list(option, [value], lo, hi, what, MAX_LIST[option], example))
    if lists["signal_afters"] and not any(m in signalling for m in models):
        verb = "sends" if len(models) == 1 else "send"
        raise UsageError(f"--signal-after has no effect with --model {' and '.join(models)}, which never {verb} "
                         f"the fake signal; add --model {' or --model '.join(signalling)}, or drop it")
    img = _image(args)
    params = _workload(img, args)
    check_patches(img, [("--patch", args.patch), ("--then", args.then)])
    return img, params, models, lists


def _explore_after_boot(img, args, params, models, lists):
    """The check that needs booted kernels: every patch instant comes after
    the end of boot, for every seed and quantum explored."""
    from .explore import plan as xp
    from .system import boot
    first = min(lists["patch_ats"] or xp.DEFAULT_PATCH_ATS)
    for seed in lists["seeds"] or xp.DEFAULT_SEEDS:
        for quantum in lists["quanta"] or xp.DEFAULT_QUANTA:
            with boot(img, workload=args.workload, seed=seed, quantum=quantum, model=models[0],
                      params=params or None) as system:
                if first <= system.clock:
                    raise UsageError(f"--patch-at {first:,} is not after the end of boot (at {system.clock:,} "
                                     f"instructions since power-on with seed {seed} and quantum {quantum:,}); "
                                     "give a later instant")


def cmd_explore(args, out):
    from .explore import Plan, explore, make_runner
    from .explore.report import lines, to_json, write_junit
    from .explore.schedule import SIGNALLING_MODELS as signalling
    img, params, models, lists = check_explore(args)
    _explore_after_boot(img, args, params, models, lists)
    options = {key: value for key, value in lists.items() if value is not None and key != "signal_afters"}
    for key in ("schedules", "preemptions", "instants", "limit"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    plans = [Plan(os.path.abspath(path), model=model, workload=args.workload, params=tuple(sorted(params.items())),
                  image=str(img.path) if args.image is not None else None,
                  signal_afters=lists["signal_afters"] if model in signalling else None,
                  sample_seed=args.sample_seed, all=args.all, shown=path,
                  then=tuple(os.path.abspath(t) for t in args.then), then_shown=tuple(args.then), **options)
             for path in args.patch for model in models]
    if args.trace_dir is not None:
        pathlib.Path(args.trace_dir).mkdir(exist_ok=True)
    results = []
    import contextlib
    with make_runner(args.workers, args.scheduler) as runner, contextlib.ExitStack() as stack:
        bar = None
        if out.is_terminal and not args.json:
            # a progress line on a terminal (schedules run, by patch and model); nothing when piped
            from rich.progress import MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            bar = stack.enter_context(Progress(TextColumn("{task.description}"), MofNCompleteColumn(),
                                               TextColumn("schedules"), TimeElapsedColumn(),
                                               console=out, transient=True))
        for plan in plans:
            task = bar.add_task(f"{plan.shown} under {plan.model}", total=None) if bar is not None else None
            result = explore(plan, runner, trace_dir=args.trace_dir,
                             progress=(lambda _o, task=task: bar.advance(task)) if bar is not None else None)
            results.append(result)
            if not args.json:
                for text, style in lines(result):
                    _line(out, text, style)
    if args.junit is not None:
        write_junit(results, args.junit)
        if not args.json:
            _line(out, f"JUnit report written to {args.junit}")
    if args.json:
        print(json.dumps(to_json(results), indent=2))
    return EXIT_OK if all(r.clean for r in results) else EXIT_CHECK


def cmd_demo(args, out):
    from .demo import run_demo
    from .render import demo_view
    check_output("--trace", args.trace, "demo.trace")
    img = _image(args)
    if args.json:
        with run_demo(args.instructions, seed=args.seed, image=img, record=bool(args.trace)) as system:
            if args.trace:
                system.save_trace(args.trace)
            print(json.dumps(system.report(), indent=2))
        return EXIT_OK
    out.rule("kGraft lab: live patching capable() on a running kernel")
    import contextlib
    stack = contextlib.ExitStack()
    bar = task = None
    if out.is_terminal:
        # the instructions run so far under the story, on a terminal only
        from rich.progress import BarColumn, Progress, TextColumn
        bar = stack.enter_context(Progress(TextColumn("[dim]running"), BarColumn(),
                                           TextColumn("{task.completed:,.0f} of {task.total:,.0f} instructions"),
                                           console=out, transient=True))
        task = bar.add_task("demo", total=args.instructions)

    def on_step(system, lines):
        for at, text in lines:
            out.print(Text.assemble((f"{at:>11,}", "dim"), "  ", text), soft_wrap=True)
        if bar is not None:
            bar.update(task, completed=min(system.clock, args.instructions))

    with stack:
        system = run_demo(args.instructions, seed=args.seed, image=img, on_step=on_step, record=bool(args.trace))
    with system:
        out.print(demo_view(system))
        if args.trace:
            system.save_trace(args.trace)
            _line(out, f"trace written to {args.trace}: step through it with `lab trace view {args.trace}`")
    return EXIT_OK


def check_patch_build(args):
    source = check_input("SOURCE.c", args.source, "patch source", "give the C source of a live patch")
    if source.suffix != ".c":
        raise UsageError(f"{args.source}: not a C source (.c); `lab patch build` compiles C live patches")
    # as `gcc -c` does: into the current directory unless -o says where
    # (a committed object next to its source is rewritten only when asked)
    output = args.output if args.output is not None else source.with_suffix(".o").name
    check_output("-o" if args.output is not None else "", output, "patch.o")
    try:
        same = pathlib.Path(output).exists() and os.path.samefile(output, source)
    except OSError:
        same = False
    if same:
        raise UsageError(f"-o {output}: is the source itself; give another output file")
    return source, output


def cmd_patch(args, out):
    if args.patch_command in authoring_cli.COMMANDS:
        return authoring_cli.run(args, out)
    from .patchbuild import build_patch
    source, output = check_patch_build(args)
    path = build_patch(source, output)
    _line(out, f"built {path}")
    return EXIT_OK


def _text(name):
    """A symbol name as text: an ELF name need not be UTF-8."""
    return name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else name


def _param_records(workload):
    return [{"name": p.name, "minimum": p.minimum, "maximum": p.maximum, "default": p.default,
             "description": p.description} for p in workload.params]


def cmd_selftest(args, out):
    import difflib

    from .selftest import SelftestError
    from .selftest_scenarios import SCENARIOS, run
    scripts = sorted({script for script, _t, _f in SCENARIOS})
    unknown = [s for s in args.scripts if s not in scripts]
    if unknown:
        raise UsageError(f"no selftest script {unknown[0]!r}; the scripts are: {', '.join(scripts)}")
    chosen = [(s, t) for s, t, _f in SCENARIOS if not args.scripts or s in args.scripts]
    if args.list:
        for script, title in chosen:
            print(f"{script}\t{title}")
        return EXIT_OK
    results, failed = [], 0
    for script, title in chosen:
        try:
            expected, result = run(script, title, model=args.model)
            error = None
        except SelftestError as exc:
            expected, result, error = None, None, str(exc)
        ok = error is None and expected == result
        failed += not ok
        results.append({"script": script, "test": title, "ok": ok, "error": error,
                        "expected": expected, "result": result})
        if not args.json:
            print(f"{script}: TEST: {title} ... {'ok' if ok else 'not ok'}", flush=True)
            if error:
                print(f"  ERROR: {error}")
            elif not ok:
                diff = difflib.unified_diff(expected.splitlines(), result.splitlines(), "expected", "result",
                                            lineterm="")
                print("\n".join(f"  {line}" for line in diff))
    if args.json:
        print(json.dumps(results, indent=2))
    return EXIT_OK if not failed else EXIT_CHECK


def cmd_workloads(args, out):
    img = _image(args)
    rows = [{"name": w.name, "description": w.description, "params": _param_records(w)} for w in img.workloads]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    t = Table("workload", "description", "parameters", title=f"workloads in {img.path.name}",
              title_justify="left")
    for r in rows:
        params = "\n".join(f"--param {p['name']}={p['minimum']}..{p['maximum']} (default {p['default']}): "
                           f"{p['description']}" for p in r["params"])
        t.add_row(Text(r["name"]), Text(r["description"]), Text(params))
    out.print(t)
    return EXIT_OK


def _print_table(out, table):
    """A table on a terminal; piped, plain text: a title line, then one
    record per line, columns aligned, nothing cut or wrapped (STYLE.md 13)."""
    if out.is_terminal:
        out.print(table)
        return
    cells = [[str(c.header) for c in table.columns]]
    for r in range(table.row_count):
        cells.append([str(c._cells[r]) for c in table.columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    if table.title:
        print(str(table.title))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def cmd_symbols(args, out):
    img = _image(args)
    _nonempty("FILTER", args.filter, "filter")
    lo, hi = img.user_range
    rows = []
    for s in sorted(img.symbols, key=lambda s: (s.kind == "abs", s.address, _text(s.name))):
        name = _text(s.name)
        if args.filter and args.filter not in name:
            continue
        region = "const" if s.kind == "abs" else ("user" if lo <= s.address < hi else "kernel")
        rows.append({"name": name, "address": s.address, "size": s.size, "kind": s.kind,
                     "binding": "local" if s.local else "global", "region": region,
                     "pad": img.pad(s.name) is not None})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    t = Table("address", "size", "kind", "bind", "region", "pad", "name",
              title=f"{len(rows)} symbols in {img.path.name}", title_justify="left")
    for r in rows:
        t.add_row(f"{r['address']:#010x}", str(r["size"]), r["kind"], r["binding"], r["region"],
                  "yes" if r["pad"] else "", Text(r["name"]))
    _print_table(out, t)
    return EXIT_OK


def cmd_pads(args, out):
    img = _image(args)
    if args.json:
        print(json.dumps([{"address": p.address, "function": _text(p.function),
                           "bytes": img.read(p.address, 5).hex()} for p in img.pads], indent=2))
        return EXIT_OK
    t = Table("address", "bytes", "function", title=f"{len(img.pads)} fentry pads (__mcount_loc) in {img.path.name}",
              title_justify="left")
    for p in img.pads:
        t.add_row(f"{p.address:#010x}", img.read(p.address, 5).hex(" "), Text(_text(p.function)))
    _print_table(out, t)
    return EXIT_OK


def cmd_disasm(args, out):
    from .disasm import disassemble
    from .render import Listing
    img = _image(args)
    _nonempty("FUNC", args.function, "function name")
    func = img.function(args.function)
    insns = disassemble(img.read(func.address, func.size), func.address, symbolize=img.symbolize)
    pad = img.pad(func.name)
    name = _text(func.name)
    if args.json:
        print(json.dumps({"function": name, "address": func.address, "size": func.size,
                          "pad": pad.address if pad else None,
                          "instructions": [{"address": x.address, "bytes": x.raw.hex(), "text": x.text,
                                            "symbol": x.comment} for x in insns]}, indent=2))
        return EXIT_OK
    note = "fentry pad: 5-byte NOP" if pad else "notrace: no fentry pad, cannot be traced or patched"
    if not out.is_terminal:
        # piped: one instruction a line, never wrapped, so grep finds it whole
        print(f"{name} ({func.size} bytes, {note})")
        width = max((len(x.raw) for x in insns), default=1) * 3
        for x in insns:
            where = img.symbolize(x.address)
            comment = f"  # {x.comment}" if x.comment else ""
            print(f"{x.address:#010x} <{where}>  {x.raw.hex(' '):<{width}} {x.text}{comment}")
        return EXIT_OK
    out.print(Listing(f"{name} ({func.size} bytes, {note})", insns, img.symbolize,
                      highlight=[pad.address] if pad else []))
    return EXIT_OK


def check_trace(args):
    if args.trace_command == "timeline":
        check_output("-o", args.output, "timeline.svg")
    check_input("FILE", args.file, "trace", f"record one with `lab run --trace {args.file or 'FILE'}`")
    return _image(args)


def cmd_trace(args, out):
    if args.trace_command == "gdb":
        from . import gdbserver
        return gdbserver.main(args)      # it reports its own errors (exit status 2)
    from .viewer import open_trace
    img = check_trace(args)
    inspector = open_trace(args.file, image=img)
    if args.trace_command == "show":
        state = inspector.state(inspector.index.parse_step(args.step))
        if args.json:
            print(json.dumps(state.to_dict(), indent=2))
        else:
            from .viewer import StepView
            out.print(StepView(state))
        return EXIT_OK
    if args.trace_command == "timeline":
        from .viewer import Timeline
        Timeline(inspector.trace, width=args.width, index=inspector.index).save(args.output)
        _line(out, f"timeline of {args.file} written to {args.output}")
        return EXIT_OK
    from .viewer.stepper import Stepper
    step = inspector.index.parse_step(args.step) if args.step is not None else None
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("lab trace view needs a terminal; use `lab trace show FILE --step N` "
                         "(--json for tools) or `lab trace timeline FILE -o OUT.svg`")
    Stepper(inspector, step=step).run()
    return EXIT_OK


def cmd_shell(args, out):
    from .shell import cli as shell_cli
    check_output("--svg", args.svg, "session.svg")
    if args.script is not None:
        check_input("--script", args.script, "script", "give a file of the shell's commands, one a line")
    img = _image(args)
    return shell_cli.run(args, img, _workload(img, args))


COMMANDS = {"run": cmd_run, "demo": cmd_demo, "patch": cmd_patch, "compare": cmd_compare, "explore": cmd_explore,
            "workloads": cmd_workloads, "selftest": cmd_selftest, "symbols": cmd_symbols, "pads": cmd_pads,
            "disasm": cmd_disasm,
            "trace": cmd_trace, "shell": cmd_shell}


def _error(message):
    line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    print(f"lab: error: {line}", file=sys.stderr)
    return EXIT_USAGE


def main(argv=None):
    """The `lab` command; returns its exit status (also for --help and usage errors)."""
    try:
        args, extras = build_parser().parse_known_args(argv)
        if extras:
            words = ["lab", args.command, getattr(args, "patch_command", None), getattr(args, "trace_command", None)]
            prog = " ".join(w for w in words if w)
            raise _Usage(f"unrecognized arguments: {' '.join(extras)}; `{prog} --help` lists what it takes")
    except _Usage as exc:
        return _error(exc)
    except SystemExit as exc:     # --help
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    out = Console()
    try:
        return COMMANDS[args.command](args, out)
    except KernelPanic as exc:    # at boot: there is no run to report
        text = str(exc)
        print(text if text.startswith("kernel panic") else f"kernel panic: {text}", file=sys.stderr)
        return EXIT_CHECK
    except LabError as exc:
        return _error(exc)
    except BrokenPipeError:
        return EXIT_OK
