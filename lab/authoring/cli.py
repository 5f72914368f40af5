"""cli - `lab patch analyze` and `lab patch create`: their arguments, the checks made before any work, and their output.

lab/cli.py adds these to `lab patch` with add_subcommands(psub) and hands
args to run(args, out) when args.patch_command is one of COMMANDS.
Exit status: 0 success; 1 a diff that cannot become a patch (refused,
nothing to patch, or a generated patch that failed its check); 2 a usage
or input error, raised as a LabError for the caller's one-line message.
"""
from __future__ import annotations

import argparse
import json
import pathlib

from ..errors import UsageError

EXIT_OK, EXIT_CHECK = 0, 1
COMMANDS = ("analyze", "create")
MAX_FUNCTIONS = 64
MAX_SCHEDULES = 10_000


def _schedules(text):
    try:
        value = int(str(text).replace("_", "").replace(",", ""), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--schedules {text!r}: not a whole number; give 1 .. {MAX_SCHEDULES:,}") \
            from None
    if not 1 <= value <= MAX_SCHEDULES:
        raise argparse.ArgumentTypeError(f"--schedules {text}: out of range; give 1 .. {MAX_SCHEDULES:,}")
    return value


def add_subcommands(patch_subparsers):
    """Add analyze and create to `lab patch` (the subparsers object of its parser)."""
    a = patch_subparsers.add_parser(
        "analyze", help="what gcc did to functions (inlined into, clones, tail calls) and what a patch must replace",
        description="Reads the kernel's DWARF and symbols: every function FUNC was inlined into (with the call "
                    "site), its clones (.isra, .constprop, .part) and what each dropped or fixed, whether it has an "
                    "fentry pad, callers that reach it by a tail jmp, its static locals, whether it is static "
                    "(kallsyms), and the functions a live patch of FUNC must replace.")
    a.add_argument("functions", nargs="+", metavar="FUNC", help="a function's name (a clone's symbol also works)")
    a.add_argument("--image", metavar="ELF", help="kernel image (default: firmware/kernel.elf)")
    a.add_argument("--json", action="store_true", help="print the answer as JSON")

    c = patch_subparsers.add_parser(
        "create", help="a live patch module generated from a source diff of firmware/",
        description="Applies FIX.diff to a copy of firmware/, builds both trees with -ffunction-sections "
                    "-fdata-sections, compares every function and variable (relocations by the symbol they point "
                    "to), refuses what cannot be live-patched with the reason and the way out, generates a kGraft "
                    "patch module (static kernel symbols found with kallsyms_lookup_name() in its init), builds it, "
                    "and checks it in the lab: it loads, replaces the expected functions, its new code runs, and "
                    "the explorer finds no violation.")
    c.add_argument("diff", metavar="FIX.diff", help="a unified diff of firmware/ (git diff, diff -u)")
    c.add_argument("-o", "--output", metavar="OUT.o", help="the module to write (default: FIX.o next to the "
                                                            "diff); its generated sources go to OUT.src/")
    c.add_argument("--image", metavar="ELF", help="kernel image (default: firmware/kernel.elf); it must be "
                                                 "built from the sources in firmware/")
    c.add_argument("--workload", metavar="NAME", help="workload the check runs (default: the one whose run enters "
                                                     "most of the replaced functions)")
    c.add_argument("--schedules", type=_schedules, default=None, metavar="N",
                   help="schedules the explorer runs in the check (default 8)")
    c.add_argument("--no-check", action="store_true", help="build the module without trying it in the lab")
    c.add_argument("--json", action="store_true", help="print the answer as JSON")


def run(args, out):
    """Run `lab patch analyze` or `lab patch create`; the exit status."""
    if args.patch_command == "analyze":
        return cmd_analyze(args, out)
    return cmd_create(args, out)


def _image(args):
    from ..cli import check_input
    from ..image import Image
    if args.image is not None:
        check_input("--image", args.image, "kernel image", "pass the kernel image built in firmware/ (kernel.elf)")
    return Image.load(args.image)


def cmd_analyze(args, out):
    from .analysis import analyze
    from .render import AnalysisView
    names = [n.strip() for n in args.functions]
    if any(not n for n in names):
        raise UsageError("FUNC: an empty function name; give one")
    if len(names) > MAX_FUNCTIONS:
        raise UsageError(f"FUNC: {len(names)} functions; give at most {MAX_FUNCTIONS} at a time")
    img = _image(args)
    answers = analyze(img, names)
    if args.json:
        print(json.dumps({"schema": 1, "image": str(img.path), "functions": [a.to_dict() for a in answers]},
                         indent=2))
        return EXIT_OK
    for i, a in enumerate(answers):
        if i:
            out.print()
        out.print(AnalysisView(a), soft_wrap=True)
    return EXIT_OK


def check_create(args):
    """The checks made before any work: the diff, the output, the workload."""
    from ..cli import check_input, check_output
    diff = check_input("FIX.diff", args.diff, "diff", "make one with `git diff -- firmware/ > FIX.diff`")
    output = pathlib.Path(args.output) if args.output else diff.with_suffix(".o")
    if output.suffix != ".o":
        raise UsageError(f"-o {output}: a patch module is an object file; give a name ending in .o")
    check_output("-o", str(output), "fix.o")
    if output.resolve() == diff.resolve():
        raise UsageError(f"-o {output}: is the diff itself; give another output file")
    sources = output.with_suffix(".src")
    if sources.exists() and not (sources.is_dir() and (sources / "patch.c").is_file()):
        raise UsageError(f"-o {output}: the generated sources go to {sources}, which exists and was not made by "
                         "lab patch create; move it or choose another output")
    img = _image(args)
    if args.workload is not None:
        img.workload(args.workload)
    if args.no_check and (args.workload is not None or args.schedules is not None):
        raise UsageError("--workload and --schedules choose how the patch is checked; they have no effect with "
                         "--no-check")
    return diff, output, img


def cmd_create(args, out):
    from .create import create
    from .render import CreationView
    diff, output, img = check_create(args)
    result = create(diff, output, image=img, check=not args.no_check, workload=args.workload,
                    schedules=args.schedules)
    if args.json:
        print(json.dumps({"schema": 1, **result.to_dict()}, indent=2))
    else:
        out.print(CreationView(result), soft_wrap=True)
    return EXIT_OK if result.ok else EXIT_CHECK
