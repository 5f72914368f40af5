"""render - what a person looks at: rich renderables for tasks, console and listings, and the frame of the SVG pictures."""
from __future__ import annotations

import math

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

_STATE_STYLE = {"running": "green", "sleeping": "cyan", "dead": "dim", "oopsed": "bold red"}
_UNIVERSE_STYLE = {"old": "yellow", "new": "bold magenta"}


class TaskTable:
    """The task list of a report: state, universe and progress counters."""

    def __init__(self, report):
        self.report = report

    def __rich__(self):
        t = Table(title="tasks", title_justify="left", expand=False)
        for col in ("tid", "name", "kind", "state", "universe", "migrated by", "syscalls",
                    "iterations", "switches", "sleeps in"):
            t.add_column(col, justify="right" if col in ("tid", "syscalls", "iterations", "switches") else "left")
        for task in self.report["tasks"]:
            state, universe = task["state"], task["universe"]
            t.add_row(
                str(task["tid"]), Text(task["name"]), task["kind"],
                Text(state, style=_STATE_STYLE.get(state, "")),
                # a task that has gone is in no universe
                Text(universe or "-", style=_UNIVERSE_STYLE.get(universe, "dim")),
                task["migrated_by"] or "",
                str(task["syscalls"]), str(task["iterations"]), str(task["switches"]),
                Text(task["sleeps_in"] or ""),
            )
        return t


class ConsoleView:
    """The kernel console (printk lines), the last `limit` of them."""

    def __init__(self, lines, limit=40, title="console"):
        self.lines = list(lines)
        self.limit = limit
        self.title = title

    def __rich__(self):
        shown = self.lines[-self.limit:] if self.limit else self.lines
        text = Text()
        if len(self.lines) > len(shown):
            text.append(f"... {len(self.lines) - len(shown)} earlier lines\n", style="dim")
        for line in shown:
            style = "bold red" if line.startswith(("BUG", "Oops", "Kernel panic")) else ""
            text.append(line + "\n", style=style)
        return Panel(text, title=self.title, title_align="left")


class RunSummary:
    """The head of a run report: workload, instructions, digest."""

    def __init__(self, report):
        self.report = report

    def __rich__(self):
        r = self.report
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold")
        t.add_column()
        t.add_row("workload", Text(r["workload"]))
        t.add_row("instructions", f"{r['instructions']:,}")
        t.add_row("seed / quantum", f"{r['seed']} / {r['quantum']:,}")
        t.add_row("events", f"{r['events']:,}")
        t.add_row("digest", r["digest"])
        if r.get("panic"):
            t.add_row("panic", Text(r["panic"], style="bold red"))
        return t


def run_view(report, console_lines=40):
    parts = [RunSummary(report), TaskTable(report)]
    if report.get("patches"):
        parts.append(PatchTable(report))
    parts.append(ConsoleView(report["console"], console_lines))
    return Group(*parts)


class Listing:
    """Disassembly lines: address, bytes, instruction, symbol comment; the pad highlighted."""

    def __init__(self, title, insns, symbolize, highlight=()):
        self.title = title
        self.insns = insns
        self.symbolize = symbolize
        self.highlight = set(highlight)

    def __rich__(self):
        t = Table(title=self.title, title_justify="left", box=None, show_header=False, pad_edge=False)
        t.add_column(style="dim")
        t.add_column(style="dim")
        t.add_column()
        t.add_column(style="blue")
        for x in self.insns:
            style = "bold yellow" if x.address in self.highlight else ""
            label = self.symbolize(x.address)
            # symbol names such as "kgr_new_capable [kgr_capable]" are not markup
            t.add_row(Text(f"{x.address:#010x} <{label}>"), x.raw.hex(" "), Text(x.text, style=style),
                      Text(f"# {x.comment}") if x.comment else "")
        return t


class PadView:
    """A patched function's pad as the CPU sees it now, disassembled."""

    def __init__(self, system, function):
        self.system = system
        self.function = function

    def __rich__(self):
        ft = self.system.ftrace
        name, address = ft.resolve(self.function)
        insn = ft.disassemble_pad(address)
        target = ft.state(address)[1]
        where = f" -> {ft.symbolize(target)}" if target is not None else ""
        return Text.assemble((f"{address:#010x} <{name}>  ", "dim"), (insn.raw.hex(" ") + "  ", "dim"),
                             (insn.text, "bold yellow"), (where, "blue"))


class PatchTable:
    def __init__(self, report):
        self.report = report

    def __rich__(self):
        t = Table(title="patches", title_justify="left")
        for col in ("name", "state", "functions", "started at", "completed at"):
            t.add_column(col)
        for p in self.report["patches"]:
            funcs = ", ".join(f"{f['old']} -> {f['new']}" for f in p["functions"])
            t.add_row(Text(p["name"]), p["state"], Text(funcs), _num(p["started_at"]), _num(p["completed_at"]))
        return t


def _num(v):
    return "" if v is None else f"{v:,}"


def demo_view(system):
    report = system.report()
    parts = [TaskTable(report), PatchTable(report)]
    for p in system.patches:
        if p.description:
            for f in p.description.functions:
                parts.append(PadView(system, f.old_name))
    lines = [line for line in report["console"] if line.startswith(("livepatch", "we added", "pipe-reader"))]
    parts.append(ConsoleView(lines, 20, title="console (livepatch lines)"))
    return Group(*parts)


# ---- SVG pictures (the timeline, the compare chart) ----

def svg_open(width, height, cls="", extra=""):
    """The opening tag of a picture drawn in a width x height box: it scales down to the
    width of its container (a notebook's cell, a README) and never up past its own size."""
    cls = f' class="{cls}"' if cls else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 {width} {height}" '
            f'preserveAspectRatio="xMinYMin meet" style="max-width:{width}px;height:auto"{cls}{extra}>')


def nice_ticks(lo, hi, target=8):
    """Round tick positions between lo and hi: steps of 1, 2 or 5 times a power of ten."""
    span = max(hi - lo, 1)
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), 10 * mag)
    step = max(int(step), 1)
    first = -(-lo // step) * step
    return list(range(first, hi + 1, step))


def short_count(n):
    """1.5M, 250k, 900 - an axis label."""
    for div, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if abs(n) >= div:
            v = n / div
            return (f"{v:.0f}" if v == int(v) else f"{v:.3g}") + suffix
    return str(n)
