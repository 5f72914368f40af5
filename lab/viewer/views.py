"""views - rich renderables of one step (code, registers, tasks, events, console); they render StepStates and hold nothing else."""
from __future__ import annotations

from rich.console import Group
from rich.jupyter import JupyterMixin
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..machine import GPRS

_STATE_STYLE = {"running": "green", "sleeping": "cyan", "dead": "dim", "oopsed": "bold red", "unused": "dim"}
_UNIVERSE_STYLE = {"old": "yellow", "new": "bold magenta", "-": "dim"}
_EVENT_STYLE = {"migrated": "bold magenta", "signal": "bold cyan", "patch": "bold yellow", "oops": "bold red",
                "panic": "bold red", "exit": "red", "console": "", "switch": "green", "irq": "dim",
                "call": "blue", "syscall": "dim", "kloop": "dim", "booted": "bold"}
_PAD_STYLE = {"nop": "dim yellow", "call": "bold yellow", "jmp": "bold magenta"}


class StepHeader(JupyterMixin):
    """Where the step is: step count and share of the run, the task on the CPU, rip."""

    def __init__(self, state, follow=None):
        self.state = state
        self.follow = follow

    def __rich__(self):
        s = self.state
        text = Text.assemble(("step ", "bold"), (f"{s.step:,}", "bold cyan"), f" of {s.start:,}..{s.end:,} ",
                             (f"({100 * s.fraction:.1f}%)", "dim"), "   task ",
                             (f"{s.current} {s.current_name}", "bold green"))
        if s.in_irq:
            text.append("  in interrupt", style="bold red")
        text.append("   rip ")
        text.append(f"{s.rip:#x}", style="bold")
        text.append(f" <{s.symbol}>", style="blue")
        if self.follow is not None:
            text.append(f"   following {self.follow}", style="reverse")
        return text


class CodeView(JupyterMixin):
    """The instructions around the step, decoded from the replayed memory: the
    current one marked, a patched pad shown as what it is at this step."""

    def __init__(self, state, title="code", raw=True):
        self.state = state
        self.title = title
        self.raw = raw          # show the instruction bytes (a narrow pane leaves them out)

    def __rich_console__(self, console, options):
        raw = self.raw and options.max_width >= 110     # a narrow terminal leaves the bytes out
        t = Table(box=None, show_header=False, pad_edge=False, expand=False)
        t.add_column(no_wrap=True, overflow="ellipsis")
        if raw:
            t.add_column(style="dim", no_wrap=True)
        t.add_column(no_wrap=True, min_width=20)
        t.add_column(style="blue", no_wrap=True, overflow="ellipsis")
        for x in self.state.listing:
            style = _PAD_STYLE.get(x.pad, "")
            if x.current:
                style = (style + " reverse").strip()
            # Text, not str: symbols such as "kgr_new_capable [kgr_capable]" are not console markup
            where = Text.assemble(("▶ " if x.current else "  ", "bold green"),
                                  (f"{x.address:#010x} <{x.symbol}>", "" if x.current else "dim"))
            cells = [where] + ([Text(x.raw)] if raw else [])
            cells += [Text(x.text, style=style), Text(f"# {x.comment}" if x.comment else "")]
            t.add_row(*cells)
        if not self.state.listing:
            t.add_row(*([""] * (len(t.columns) - 2)), Text(f"{self.state.rip:#x}: not in RAM", style="red"), "")
        yield Panel(t, title=self.title, title_align="left")


class RegisterView(JupyterMixin):
    """The registers at the step; those changed since the task's previous step in bold yellow."""

    def __init__(self, state, columns=3):
        self.state = state
        self.columns = columns

    def __rich__(self):
        s = self.state
        t = Table.grid(padding=(0, 2))
        for _ in range(self.columns):
            t.add_column(no_wrap=True)
        cells = []
        for name in GPRS:
            changed = name in s.changed
            cells.append(Text.assemble((f"{name:>6} ", "bold yellow" if changed else "dim"),
                                       (f"{s.regs[name]:016x}", "bold yellow" if changed else ""),
                                       ("*" if changed else " ", "bold yellow")))
        for i in range(0, len(cells), self.columns):
            t.add_row(*cells[i:i + self.columns])
        if s.previous_step is None:
            note = "first step of this task: nothing to compare with"
        else:
            note = f"* changed since step {s.previous_step:,}, this task's previous step"
        return Panel(Group(t, Text(note, style="dim")), title="registers", title_align="left")


class TaskView(JupyterMixin):
    """The task list at the step: state, universe (old / new w.r.t. the latest transition), the one on the CPU."""

    def __init__(self, state, follow=None):
        self.state = state
        self.follow = follow

    def __rich__(self):
        s = self.state
        t = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("", "tid", "name", "kind", "state", "universe"):
            t.add_column(col, justify="right" if col == "tid" else "left", no_wrap=True)
        for task in s.tasks:
            mark = Text("▶", style="bold green") if task.current else Text("")
            name = Text(task.name, style="underline" if task.tid == self.follow else "")
            t.add_row(mark, str(task.tid), name, Text(task.kind), Text(task.state, style=_STATE_STYLE.get(task.state, "")),
                      Text(f"{task.universe} ({task.universe_byte})", style=_UNIVERSE_STYLE[task.universe]))
        where = f"target universe {s.target_universe}" if s.transition_started else "no transition yet: all old"
        pads = "  ".join(f"{p.function}: {p.state.upper()}" + (f" -> {p.target_symbol}" if p.target_symbol else "")
                         for p in s.pads)
        parts = [t, Text(where, style="dim")]
        if pads:
            parts.append(Text("pads  " + pads, style="yellow"))
        return Panel(Group(*parts), title="tasks", title_align="left")


class EventView(JupyterMixin):
    """The events around the step; those at the step highlighted, the cursor between past and future."""

    def __init__(self, state):
        self.state = state

    def __rich__(self):
        s = self.state
        t = Table(box=None, show_header=False, pad_edge=False)
        t.add_column(width=1)
        t.add_column(justify="right", style="dim", no_wrap=True)
        t.add_column(no_wrap=True)
        t.add_column(no_wrap=True, overflow="ellipsis")
        cursor_drawn = False
        for r in s.events:
            if r.when != "past" and not cursor_drawn:
                t.add_row(Text("▶", style="bold green"), Text(f"{s.step:,}", style="bold green"),
                          Text("here", style="bold green"), "")
                cursor_drawn = True
            style = _EVENT_STYLE.get(r.kind, "")
            if r.when == "now":
                style += " reverse"
            elif r.when == "future":
                style = "dim"
            t.add_row("", f"{r.at:,}", Text(r.kind, style=style), Text(r.text, style=style))
        if not cursor_drawn:
            t.add_row(Text("▶", style="bold green"), Text(f"{s.step:,}", style="bold green"),
                      Text("here", style="bold green"), "")
        return Panel(t, title="events", title_align="left")


class ConsoleTail(JupyterMixin):
    """The console printed before the step, its last lines."""

    def __init__(self, state):
        self.state = state

    def __rich__(self):
        s = self.state
        text = Text()
        if s.console_lines > len(s.console):
            text.append(f"... {s.console_lines - len(s.console)} earlier lines\n", style="dim")
        for line in s.console:
            text.append(line + "\n", style="bold red" if line.startswith(("BUG", "Oops", "Kernel panic")) else "")
        if not s.console_lines:
            text.append("(nothing printed yet)", style="dim")
        return Panel(text, title=f"console so far ({s.console_lines} lines)", title_align="left")


class StepView(JupyterMixin):
    """One step of a trace, all of it: header, code, registers, tasks, events, console."""

    def __init__(self, state, follow=None):
        self.state = state
        self.follow = follow

    def __rich__(self):
        s = self.state
        return Group(StepHeader(s, self.follow), CodeView(s), RegisterView(s), TaskView(s, self.follow),
                     EventView(s), ConsoleTail(s))


__all__ = ["StepHeader", "CodeView", "RegisterView", "TaskView", "EventView", "ConsoleTail", "StepView"]
