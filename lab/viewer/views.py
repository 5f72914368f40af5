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
        return self.line()

    def line(self, width=None):
        """The header; given a width it drops what does not fit (the range, then spacing) and adds the source line."""
        s = self.state
        if width is not None:
            text = Text.assemble(("step ", "bold"), (f"{s.step:,}", "bold cyan"), (f" ({100 * s.fraction:.1f}%)", "dim"),
                                 "  ", (f"{s.current} {s.current_name}", "bold green"))
            if s.in_irq:
                text.append(" in irq", style="bold red")
            text.append("  ")
            text.append(f"{s.rip:#x}", style="bold")
            text.append(f" <{s.symbol}>", style="blue")
            if s.source is not None:
                text.append(f"  {s.source}", style="cyan")
            if self.follow is not None:
                text.append(f"  following {self.follow}", style="reverse")
            if width >= len(text) + len(f" of {s.start:,}..{s.end:,}"):
                text = Text.assemble(text[:len(f"step {s.step:,}")], f" of {s.start:,}..{s.end:,}",
                                     text[len(f"step {s.step:,}"):])
            text.no_wrap = True
            text.overflow = "ellipsis"
            return text
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

    def __init__(self, state, title="code", raw=True, height=None):
        self.state = state
        self.title = title
        self.raw = raw          # show the instruction bytes (a narrow pane leaves them out)
        self.height = height    # lines the panel may take (the stepper's pane), None: the whole listing

    def __rich_console__(self, console, options):
        raw = self.raw and options.max_width >= 110     # a narrow terminal leaves the bytes out
        # a narrow one names the function once, in the title, and each line by its offset
        compact = options.max_width < 100 and self.height is not None
        function = self.state.symbol.split("+")[0]
        if function.startswith(f"{self.state.rip:#x} ["):
            function = function[len(f"{self.state.rip:#x} "):]
        t = Table(box=None, show_header=False, pad_edge=False, expand=False)
        t.add_column(no_wrap=True, overflow="ellipsis")
        if raw:
            t.add_column(style="dim", no_wrap=True)
        t.add_column(no_wrap=True, min_width=20)
        t.add_column(style="blue", no_wrap=True, overflow="ellipsis")
        shown = _around(self.state.listing, lambda x: x.current, self.height)
        room, labels = None, True
        if self.height is not None and not raw:
            # a pane of the stepper: the address and the instruction keep their width, the comment gives way
            # (a table would shrink every no-wrap column alike and cut addresses)
            inner = options.max_width - 4
            where_w = max([len(_label(x, compact, function)) + 15 for x in shown] + [1])
            if where_w + 2 + 20 > inner:
                labels = False          # no room for the symbols: the addresses alone
                where_w = 12
            text_w = max([len(x.text) for x in shown] + [1])
            room = inner - where_w - text_w - 4
            if room < 8:
                text_w = max(inner - where_w - 4, 8)      # the empty comment column keeps its padding
                room = 0
        for x in shown:
            style = _PAD_STYLE.get(x.pad, "")
            if x.current:
                style = (style + " reverse").strip()
            # Text, not str: symbols such as "kgr_new_capable [kgr_capable]" are not console markup
            label = f" <{_label(x, compact, function)}>" if labels else ""
            where = Text.assemble(("▶ " if x.current else "  ", "bold green"),
                                  (f"{x.address:#010x}{label}", "" if x.current else "dim"))
            cells = [where] + ([Text(x.raw)] if raw else [])
            insn, comment = Text(x.text, style=style), Text(f"# {x.comment}" if x.comment else "")
            if room is not None:
                insn.truncate(text_w, overflow="ellipsis")
                comment = Text("") if room == 0 else comment
                comment.truncate(max(room, 1), overflow="ellipsis")
            t.add_row(*cells, insn, comment)
        if not self.state.listing:
            t.add_row(*([""] * (len(t.columns) - 2)), Text(f"{self.state.rip:#x}: not in RAM", style="red"), "")
        title = Text(f"{self.title}: {function}" if compact else self.title)    # Text: "[trampoline]" is no markup
        yield Panel(t, title=title, title_align="left")


def _label(line, compact, function):
    """A listing line's symbol; in a narrow pane, its offset in the function the title names."""
    label = line.symbol
    if compact and (label == function or label.startswith(function + "+")):
        label = label[len(function):] or "+0"
    elif compact and label.startswith(f"{line.address:#x} ["):
        label = label[len(f"{line.address:#x} "):]      # "0x7f0015 [trampoline]": the address is there already
    return label


class RegisterView(JupyterMixin):
    """The registers at the step; those changed since the task's previous step in bold yellow."""

    def __init__(self, state, columns=3, notes=False):
        self.state = state
        self.columns = columns
        self.notes = notes      # a line per register whose value points at something the lab can name

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
        parts = [t, Text(note, style="dim")]
        if self.notes:
            for name, what in s.notes.items():
                parts.append(Text.assemble((f"{name:>6} ", "dim"), ("→ ", "dim"), (what, "cyan"),
                                           no_wrap=True, overflow="ellipsis"))
        return Panel(Group(*parts), title="registers", title_align="left")


class TaskView(JupyterMixin):
    """The task list at the step: state, universe (old / new w.r.t. the latest transition), the one on the CPU.
    Given the trace's index, each task also gets a lane: its universe and CPU state over the whole run
    (the Timeline in a line), the step marked, as Tenet's and qira's timelines show where you are.
    Given a height, the rows that fit around the followed task (else the one on the CPU), the title
    saying which of how many."""

    def __init__(self, state, follow=None, index=None, height=None):
        self.state = state
        self.follow = follow
        self.index = index
        self.height = height     # lines the panel may take, None: every task
        self.lanes = None        # after rendering with lanes: (first column, width, {line: tid}, start, end) for a click

    def _shown(self, s):
        """(the tasks drawn, the panel's title)."""
        if self.height is None:
            return s.tasks, "tasks"
        # besides the border: the header line, the universe line, the pads line if any
        extra = 2 + (1 if s.pads else 0)
        centre = self.follow if any(t.tid == self.follow for t in s.tasks) else None
        tasks = _around(s.tasks, lambda t: t.tid == centre if centre is not None else t.current, self.height - extra)
        if len(tasks) == len(s.tasks):
            return tasks, "tasks"
        return tasks, f"tasks {tasks[0].tid}-{tasks[-1].tid} of {len(s.tasks)}"

    def __rich_console__(self, console, options):
        if self.index is None:
            yield self._table()
            return
        yield self._with_lanes(options.max_width)

    def _with_lanes(self, width):
        from .timeline import _dominant, short_count
        s, ix = self.state, self.index
        tasks, title = self._shown(s)
        name_w = max([len(t.name) for t in s.tasks] + [4])
        fixed = 1 + 1 + 3 + 1 + name_w + 1 + 7 + 1 + 8 + 1 + 8 + 1       # mark tid name kind state universe
        lane_w = width - 4 - fixed
        if lane_w < 8:
            self.lanes = None
            return self._table()
        lo, hi = s.start, max(s.end, s.start + 1)
        per = (hi - lo) / lane_w
        here = min(int((s.step - lo) / per), lane_w - 1)
        marks = {}
        for m in ix.marks():
            if m.kind in ("migrated", "fake-signal") and m.tid is not None:
                marks.setdefault(m.tid, {})[min(int((m.at - lo) / per), lane_w - 1)] = m
        ends = short_count(lo).ljust(lane_w - len(short_count(hi))) + short_count(hi)
        lines = [Text.assemble((f"  tid {'name':<{name_w}} {'kind':<7} {'state':<8} {'universe':<8} ", "bold"),
                               (ends if len(ends) == lane_w else "", "dim"))]
        rows = {}
        for task in tasks:
            line = Text.assemble(("▶" if task.current else " ", "bold green"), f" {task.tid:>3} ",
                                 (task.name.ljust(name_w), "underline" if task.tid == self.follow else ""),
                                 f" {task.kind:<7} ", (f"{task.state:<8}", _STATE_STYLE.get(task.state, "")), " ",
                                 (f"{task.universe} ({task.universe_byte})".ljust(8), _UNIVERSE_STYLE[task.universe]),
                                 " ")
            spans = ix.lanes().get(task.tid, [])
            cells = _dominant(spans, lo, per, lane_w) if spans else [("none", "none")] * lane_w
            lane_marks = marks.get(task.tid, {})
            for c, (u, cpu) in enumerate(cells):
                m = lane_marks.get(c)
                style = {"old": "yellow", "new": "magenta"}.get(u, "dim")
                char = ("⚡" if m.kind == "fake-signal" else "◆") if m is not None else \
                    {"running": "█", "runnable": "▒", "sleeping": "░"}.get(cpu, " ")
                if m is not None:
                    style = "bold red" if m.kind == "fake-signal" else "bold green"
                if c == here:
                    style += " reverse"
                    char = char if char.strip() else "│"
                line.append(char, style=style)
            rows[len(lines)] = task.tid
            lines.append(line)
        where = f"target universe {s.target_universe}" if s.transition_started else "no transition yet: all old"
        lines.append(Text(where + "   lanes: █ on CPU ▒ preempted ░ asleep ◆ moved; click to jump", style="dim",
                          no_wrap=True, overflow="ellipsis"))
        pads = "  ".join(f"{p.function}: {p.state.upper()}" + (f" -> {p.target_symbol}" if p.target_symbol else "")
                         for p in s.pads)
        if pads:
            lines.append(Text("pads  " + pads, style="yellow", no_wrap=True, overflow="ellipsis"))
        for line in lines:
            line.no_wrap = True
            line.overflow = "ellipsis"
        # the panel's border and padding put the content at column 2, line 1
        self.lanes = (2 + fixed, lane_w, {y + 1: tid for y, tid in rows.items()}, lo, hi)
        return Panel(Group(*lines), title=title, title_align="left")

    def _table(self):
        s = self.state
        tasks, title = self._shown(s)
        t = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("", "tid", "name", "kind", "state", "universe"):
            t.add_column(col, justify="right" if col == "tid" else "left", no_wrap=True)
        for task in tasks:
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
        return Panel(Group(*parts), title=title, title_align="left")


class EventView(JupyterMixin):
    """The events around the step; those at the step highlighted, the cursor between past and future."""

    def __init__(self, state, height=None):
        self.state = state
        self.height = height     # lines the panel may take, None: every event of the state
        self.rows = []           # the step of each line drawn (None for the cursor), for a click

    def __rich_console__(self, console, options):
        s = self.state
        rows = []                # (step or None, at text, kind, text, style)
        cursor_drawn = False
        for r in s.events:
            if r.when != "past" and not cursor_drawn:
                rows.append((None, f"{s.step:,}", "here", "", "bold green"))
                cursor_drawn = True
            style = _EVENT_STYLE.get(r.kind, "")
            if r.when == "now":
                style += " reverse"
            elif r.when == "future":
                style = "dim"
            rows.append((r.at, f"{r.at:,}", r.kind, r.text, style))
        if not cursor_drawn:
            rows.append((None, f"{s.step:,}", "here", "", "bold green"))
        here = next(i for i, r in enumerate(rows) if r[0] is None)
        rows = _around(rows, lambda r: r[0] is None, self.height, index=here)
        # the step and kind columns keep their width; only the sentence gives way, cut with an ellipsis
        # (a table would shrink every no-wrap column alike, down to "1,…" and "c…")
        at_w = max(len(r[1]) for r in rows)
        kind_w = max(len(r[2]) for r in rows)
        room = max(options.max_width - 4 - (at_w + kind_w + 7), 4)   # the panel's 4, the columns and their padding
        t = Table(box=None, show_header=False, pad_edge=False)
        t.add_column(width=1)
        t.add_column(justify="right", style="dim", no_wrap=True, min_width=at_w)
        t.add_column(no_wrap=True, min_width=kind_w)
        t.add_column(no_wrap=True, overflow="ellipsis")
        self.rows = []
        for step, at, kind, text, style in rows:
            sentence = Text(text, style=style)
            sentence.truncate(room, overflow="ellipsis")
            if step is None:
                t.add_row(Text("▶", style="bold green"), Text(at, style="bold green"), Text("here", style="bold green"),
                          "")
            else:
                t.add_row("", at, Text(kind, style=style), sentence)
            self.rows.append(step)
        yield Panel(t, title="events", title_align="left")


class ConsoleTail(JupyterMixin):
    """The console printed before the step, its last lines."""

    def __init__(self, state, height=None):
        self.state = state
        self.height = height

    def __rich__(self):
        s = self.state
        text = Text()
        shown = s.console if self.height is None else s.console[-max(self.height - 3, 1):]
        if s.console_lines > len(shown):
            text.append(f"... {s.console_lines - len(shown)} earlier lines\n", style="dim")
        for line in shown:
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


_FRAME_STYLE = {"current": "bold green", "call": "", "leaf caller": "", "interrupted": "bold red", "maybe": "dim",
                "user": "cyan"}


class BacktraceView(JupyterMixin):
    """The call chain of the task on the CPU (gdb's `bt`), innermost first; an interrupt
    frame draws a line across, and the word at the interrupted stack's top is marked
    "maybe" (the caller, if the function had not pushed its frame yet)."""

    def __init__(self, state, height=None):
        self.state = state
        self.height = height

    def __rich__(self):
        s = self.state
        lines = []
        for i, f in enumerate(s.backtrace):
            if f.kind == "interrupted":
                lines.append(Text("── interrupt: the frame it saved ──", style="red"))
            elif f.kind == "user" and i:
                lines.append(Text("── user mode ──", style="cyan"))
            line = Text.assemble((f"#{i:<2} ", "dim"), (f"{f.address:#x} ", "dim"),
                                 (f.symbol, _FRAME_STYLE.get(f.kind, "")), (f"  {f.source}" if f.source else "", "cyan"),
                                 (f"  ({f.kind})" if f.kind in ("leaf caller", "maybe") else "", "dim"))
            line.no_wrap, line.overflow = True, "ellipsis"
            lines.append(line)
        if not lines:
            lines.append(Text("no kernel frames", style="dim"))
        if self.height is not None and len(lines) > self.height - 2:
            cut = len(lines) - (self.height - 3)
            lines = lines[:self.height - 3] + [Text(f"… {cut} more", style="dim")]
        return Panel(Group(*lines), title=Text(f"backtrace of {s.current_name}" + (" (in interrupt)" if s.in_irq else "")),
                     title_align="left")


class SourceView(JupyterMixin):
    """The source around the line rip came from (DWARF's line table), the line marked, as gdb's TUI shows it."""

    def __init__(self, state, sources, height=None):
        self.state = state
        self.sources = sources
        self.height = height

    def __rich_console__(self, console, options):
        yield self._panel(options.max_width)

    def _panel(self, width):
        s = self.state
        where = s.source
        if where is None:
            why = ("user mode" if s.backtrace and s.backtrace[0].kind == "user" else
                   "a trampoline, assembled at run time" if "[trampoline]" in s.symbol else
                   "module code: its object has no line table here" if "[" in s.symbol else "no line for this address")
            return Panel(Text(f"no source: {why}", style="dim"), title="source", title_align="left")
        room = 9 if self.height is None else max(self.height - 2, 1)
        before = (room - 1) // 2
        first, lines = self.sources.around(where, before, room - 1 - before)
        number_w = len(str(first + len(lines))) + 1
        room = max(width - 4 - number_w - 2, 4)        # the line numbers keep their width, the text gives way
        t = Table(box=None, show_header=False, pad_edge=False)
        t.add_column(justify="right", style="dim", no_wrap=True, min_width=number_w)
        t.add_column(no_wrap=True, overflow="ellipsis")
        for n, line in enumerate(lines, first):
            current = n == where.line
            text = Text(line.expandtabs(4), style="reverse" if current else "")
            text.truncate(room, overflow="ellipsis")
            t.add_row(Text(("▶" if current else " ") + str(n), style="bold green" if current else "dim"), text)
        if not lines:
            t.add_row("", Text(f"{where.path} is not in firmware/", style="dim"))
        return Panel(t, title=Text(f"source {where}"), title_align="left")


class MemoryView(JupyterMixin):
    """The watched bytes at the step (a hex dump around them, what they are), the last write
    found to them, and the breakpoints set: the stepper's watch pane (pwndbg's hexdump)."""

    def __init__(self, watch=None, data=b"", base=0, changed=(), last_write=None, breakpoints=(), height=None):
        self.watch = watch            # (address, size, label) or None
        self.data = data              # bytes from base
        self.base = base
        self.changed = set(changed)   # addresses whose byte differs from the task's previous step
        self.last_write = last_write  # a sentence, or None
        self.breakpoints = breakpoints
        self.height = height

    def __rich__(self):
        lines = []
        if self.watch is None:
            lines.append(Text("no watch: w sets one (a variable, 0xADDRESS, or TASK.FIELD)", style="dim"))
        else:
            address, size, label = self.watch
            lines.append(Text.assemble(("watch ", "bold"), (f"{address:#x}", "bold"), f" ({size} bytes) ",
                                       (label, "cyan"), no_wrap=True, overflow="ellipsis"))
            if not self.data:
                lines.append(Text("not in RAM", style="red"))
            for row in range(0, len(self.data), 16):
                at = self.base + row
                line = Text(f"{at:#010x} ", style="dim")
                for i, b in enumerate(self.data[row:row + 16]):
                    a = at + i
                    style = "bold yellow" if a in self.changed else ""
                    if address <= a < address + size:
                        style = (style + " reverse").strip()
                    line.append(f"{b:02x}", style=style)
                    line.append(" ")
                lines.append(line)
            lines.append(Text(self.last_write or "W: find the last write to it before this step", style="dim",
                              no_wrap=True, overflow="ellipsis"))
        lines.append(Text.assemble(("breakpoints ", "bold"), (", ".join(map(str, self.breakpoints)) or "none (b sets one)",
                                                              "magenta" if self.breakpoints else "dim"),
                                   no_wrap=True, overflow="ellipsis"))
        return Panel(Group(*lines), title="watch and breakpoints", title_align="left")


def _around(items, is_here, height, index=None):
    """The items a panel of `height` lines shows (its border takes two), centred on the one is_here picks."""
    items = list(items)
    if height is None or len(items) <= max(height - 2, 1):
        return items
    room = max(height - 2, 1)
    here = index if index is not None else next((i for i, x in enumerate(items) if is_here(x)), 0)
    first = min(max(here - room // 2, 0), len(items) - room)
    return items[first:first + room]


__all__ = ["StepHeader", "CodeView", "RegisterView", "TaskView", "EventView", "ConsoleTail", "StepView",
           "BacktraceView", "SourceView", "MemoryView"]
