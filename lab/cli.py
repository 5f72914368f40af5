"""cli - the `lab` command: every subcommand calls the public API and renders its result.

Exit status: 0 success, 1 a failed check, 2 a usage or input error.
"""
from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from .errors import LabError

EXIT_OK, EXIT_CHECK, EXIT_USAGE = 0, 1, 2


def _count(text):
    """A positive instruction count; accepts 5e6 and 1_000_000."""
    try:
        value = int(float(text)) if ("e" in text.lower() or "." in text) else int(text.replace("_", ""))
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer seed") from None
    if value < 0:
        raise argparse.ArgumentTypeError("the seed must be 0 or more")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"lab: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _add_image(p):
    p.add_argument("--image", metavar="ELF", help="kernel image (default: firmware/kernel.elf)")


def _add_boot(p, instructions):
    _add_image(p)
    p.add_argument("--workload", default="default", help="workload chosen at boot (`lab workloads`)")
    p.add_argument("--instructions", type=_count, default=instructions, metavar="N",
                   help=f"instructions to run (default {instructions:,})")
    p.add_argument("--seed", type=_seed, default=0, metavar="S",
                   help="schedule seed: quantum jitter and task order (0: none)")
    p.add_argument("--quantum", type=_count, default=None, metavar="Q",
                   help="instructions per time slice (default 20,000)")
    p.add_argument("--json", action="store_true", help="print the JSON report")


def build_parser():
    parser = _Parser(prog="lab", description="A live kernel patching laboratory (kGraft style).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="the bundled scenario, start to end")
    _add_image(p)
    p.add_argument("--instructions", type=_count, default=8_000_000, metavar="N",
                   help="stop after N instructions at most (default 8,000,000)")
    p.add_argument("--seed", type=_seed, default=0, metavar="S")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the story")
    p.add_argument("--trace", metavar="FILE", help="record the run into a trace file (lab trace view FILE)")

    p = sub.add_parser("run", help="boot a workload and run it, optionally live-patching it")
    _add_boot(p, 2_000_000)
    p.add_argument("--patch", metavar="FILE", action="append", default=[],
                   help="a patch object (.o) to apply at --patch-at; repeat for several, applied in turn")
    p.add_argument("--patch-at", type=_count, default=1_000_000, metavar="N",
                   help="instruction at which the first patch is loaded (default 1,000,000)")
    p.add_argument("--signal-after", type=_count, default=None, metavar="N",
                   help="send the fake signal to tasks still in progress N instructions into a transition, "
                        "and every N after")
    p.add_argument("--revert-at", type=_count, default=None, metavar="N",
                   help="revert the last patch at instruction N")
    p.add_argument("--boot-patch", metavar="FILE", action="append", default=[],
                   help="a patch applied at boot, before the first task runs (a reboot with patches)")
    p.add_argument("--inject-fault", metavar="TASK", action="append", default=[],
                   help="make TASK (tid or name) take a page fault at its next system call")
    p.add_argument("--trace", metavar="FILE", help="record the run into a trace file (lab trace view FILE)")
    p.add_argument("--model", default="kgraft", choices=("kgraft", "immediate", "stop-machine", "klp"),
                   help="consistency model (default kgraft)")

    p = sub.add_parser("compare", help="the consistency models side by side on one patch")
    _add_image(p)
    p.add_argument("--patch", required=True, metavar="FILE", help="the patch object to apply")
    p.add_argument("--workload", default="default")
    p.add_argument("--seed", type=_seed, default=0, metavar="S")
    p.add_argument("--patch-at", type=_count, default=1_000_000, metavar="N")
    p.add_argument("--signal-after", type=_count, default=1_500_000, metavar="N",
                   help="fake signal interval for the models that send one (default 1,500,000)")
    p.add_argument("--limit", type=_count, default=12_000_000, metavar="N",
                   help="give up waiting for completion after N instructions (default 12,000,000)")
    p.add_argument("-o", "--chart", metavar="OUT.svg", help="also draw the comparison as an SVG bar chart")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("patch", help="live patch objects")
    psub = p.add_subparsers(dest="patch_command", required=True, parser_class=_Parser)
    b = psub.add_parser("build", help="compile a C live patch with the firmware's flags")
    b.add_argument("source")
    b.add_argument("-o", "--output", metavar="OUT.o")

    p = sub.add_parser("workloads", help="the workloads the image offers")
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
    t.add_argument("--width", type=_count, default=1200, metavar="PX", help="width of the picture (default 1200)")
    _add_image(t)

    p = sub.add_parser("disasm", help="disassemble a kernel function")
    _add_image(p)
    p.add_argument("function")
    p.add_argument("--json", action="store_true")
    return parser


def _boot_kwargs(args):
    from .kernel import DEFAULT_QUANTUM
    if args.quantum is not None and args.quantum < 1000:
        raise LabError(f"--quantum {args.quantum} is too small; use at least 1000 instructions")
    return dict(workload=args.workload, seed=args.seed, quantum=args.quantum or DEFAULT_QUANTUM)


def cmd_run(args, out):
    import pathlib

    from .render import run_view
    from .system import boot
    for path in args.patch + args.boot_patch:
        if not pathlib.Path(path).is_file():
            raise LabError(f"{path}: no such patch object; build one with `lab patch build SOURCE.c`")
    if args.patch and args.patch_at >= args.instructions:
        raise LabError(f"--patch-at {args.patch_at:,} is not before the end of the run ({args.instructions:,})")
    _check_trace_path(args.trace)
    system = boot(args.image, **_boot_kwargs(args), patches=args.boot_patch, signal_after=args.signal_after,
                  record=bool(args.trace), model=args.model, observe=True)
    for name in args.inject_fault:
        system.inject_fault(int(name) if name.isdigit() else name)
    end = args.instructions
    if args.patch:
        system.run(max(args.patch_at - system.clock, 1))
        for i, path in enumerate(args.patch):
            if i:   # one transition at a time, as kGraft requires
                system.run(max(end - system.clock, 1), until=lambda s: s.transition is None)
            if system.clock >= end:
                break
            system.apply_patch(path)
    if args.revert_at is not None and args.revert_at > system.clock:
        system.run(args.revert_at - system.clock)
        patches = [p for p in system.patches if p.state.value in ("complete", "transition")]
        if patches:
            system.revert(patches[-1].name)
    if system.clock < end:
        system.run(end - system.clock)
    if args.trace:
        system.save_trace(args.trace)
    report = system.report()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        out.print(run_view(report))
    if report["violations"]:
        if not args.json:
            out.print(f"[bold red]{len(report['violations'])} consistency violation(s)[/bold red]")
        return EXIT_CHECK
    return EXIT_OK


def cmd_compare(args, out):
    import pathlib

    from .compare import ComparisonTable, compare, write_chart
    if not pathlib.Path(args.patch).is_file():
        raise LabError(f"{args.patch}: no such patch object; build one with `lab patch build SOURCE.c`")
    rows = compare(args.patch, workload=args.workload, seed=args.seed, patch_at=args.patch_at,
                   signal_after=args.signal_after, limit=args.limit, image=args.image)
    if args.chart:
        write_chart(rows, args.chart, title=pathlib.Path(args.patch).name)
    if args.json:
        print(json.dumps({"schema": 1, "patch": str(args.patch), "workload": args.workload, "seed": args.seed,
                          "models": rows}, indent=2))
    else:
        out.print(ComparisonTable(rows, pathlib.Path(args.patch).name))
        if args.chart:
            out.print(f"chart written to {args.chart}")
    return EXIT_OK


def _check_trace_path(path):
    import pathlib
    if path and not pathlib.Path(path).resolve().parent.is_dir():
        raise LabError(f"--trace {path}: its directory does not exist")


def cmd_demo(args, out):
    from .demo import run_demo
    from .render import demo_view
    _check_trace_path(args.trace)
    if args.json:
        system = run_demo(args.instructions, seed=args.seed, image=args.image, record=bool(args.trace))
        if args.trace:
            system.save_trace(args.trace)
        print(json.dumps(system.report(), indent=2))
        return EXIT_OK
    out.rule("kGraft lab: live patching capable() on a running kernel")

    from rich.markup import escape

    def on_step(system, lines):
        for at, text in lines:
            out.print(f"[dim]{at:>11,}[/dim]  {escape(text)}")

    system = run_demo(args.instructions, seed=args.seed, image=args.image, on_step=on_step,
                      record=bool(args.trace))
    out.print(demo_view(system))
    if args.trace:
        system.save_trace(args.trace)
        out.print(f"trace written to {args.trace}: step through it with `lab trace view {args.trace}`")
    return EXIT_OK


def cmd_patch(args, out):
    from .patchbuild import build_patch
    path = build_patch(args.source, args.output)
    out.print(f"built {path}")
    return EXIT_OK


def cmd_workloads(args, out):
    from .image import Image
    img = Image.load(args.image)
    if args.json:
        print(json.dumps([{"name": w.name, "description": w.description} for w in img.workloads], indent=2))
        return EXIT_OK
    t = Table("workload", "description", title=f"workloads in {img.path.name}", title_justify="left")
    for w in img.workloads:
        t.add_row(w.name, w.description)
    out.print(t)
    return EXIT_OK


def cmd_symbols(args, out):
    from .image import Image
    img = Image.load(args.image)
    lo, hi = img.user_range
    rows = []
    for s in sorted(img.symbols, key=lambda s: (s.kind == "abs", s.address, s.name)):
        if args.filter and args.filter not in s.name:
            continue
        region = "const" if s.kind == "abs" else ("user" if lo <= s.address < hi else "kernel")
        rows.append({"name": s.name, "address": s.address, "size": s.size, "kind": s.kind,
                     "binding": "local" if s.local else "global", "region": region,
                     "pad": img.pad(s.name) is not None})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    t = Table("address", "size", "kind", "bind", "region", "pad", "name",
              title=f"{len(rows)} symbols in {img.path.name}", title_justify="left")
    for r in rows:
        t.add_row(f"{r['address']:#010x}", str(r["size"]), r["kind"], r["binding"], r["region"],
                  "yes" if r["pad"] else "", r["name"])
    out.print(t)
    return EXIT_OK


def cmd_pads(args, out):
    from .image import Image
    img = Image.load(args.image)
    if args.json:
        print(json.dumps([{"address": p.address, "function": p.function,
                           "bytes": img.read(p.address, 5).hex()} for p in img.pads], indent=2))
        return EXIT_OK
    t = Table("address", "bytes", "function", title=f"{len(img.pads)} fentry pads (__mcount_loc) in {img.path.name}",
              title_justify="left")
    for p in img.pads:
        t.add_row(f"{p.address:#010x}", img.read(p.address, 5).hex(" "), p.function)
    out.print(t)
    return EXIT_OK


def cmd_disasm(args, out):
    from .disasm import disassemble
    from .image import Image
    from .render import Listing
    img = Image.load(args.image)
    func = img.function(args.function)
    insns = disassemble(img.read(func.address, func.size), func.address, symbolize=img.symbolize)
    pad = img.pad(func.name)
    if args.json:
        print(json.dumps({"function": func.name, "address": func.address, "size": func.size,
                          "pad": pad.address if pad else None,
                          "instructions": [{"address": x.address, "bytes": x.raw.hex(), "text": x.text,
                                            "symbol": x.comment} for x in insns]}, indent=2))
        return EXIT_OK
    note = "fentry pad: 5-byte NOP" if pad else "notrace: no fentry pad, cannot be traced or patched"
    out.print(Listing(f"{func.name} ({func.size} bytes, {note})", insns, img.symbolize,
                      highlight=[pad.address] if pad else []))
    return EXIT_OK


def cmd_trace(args, out):
    import pathlib

    from .viewer import open_trace
    inspector = open_trace(args.file, image=args.image)
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
        target = pathlib.Path(args.output)
        if not target.resolve().parent.is_dir():
            raise LabError(f"-o {target}: its directory does not exist")
        Timeline(inspector.trace, width=max(args.width, 600), index=inspector.index).save(target)
        out.print(f"timeline of {args.file} written to {target}")
        return EXIT_OK
    from .viewer.stepper import Stepper
    step = inspector.index.parse_step(args.step) if args.step else None
    Stepper(inspector, step=step).run()
    return EXIT_OK


COMMANDS = {"run": cmd_run, "demo": cmd_demo, "patch": cmd_patch, "compare": cmd_compare, "workloads": cmd_workloads, "symbols": cmd_symbols,
            "pads": cmd_pads, "disasm": cmd_disasm, "trace": cmd_trace}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Console()
    try:
        return COMMANDS[args.command](args, out)
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
