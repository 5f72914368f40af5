"""views - the shell's own renderables (pending tasks, events, pads, tracers, help): data in, a rich Table out."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text

_KIND_STYLE = {"migrated": "bold magenta", "signal": "bold cyan", "patch": "bold yellow", "oops": "bold red",
               "panic": "bold red", "exit": "red", "console": "", "task-new": "green"}
_PAD_STYLE = {"nop": "dim yellow", "call": "bold yellow", "jmp": "bold magenta"}


class PendingTable:
    """The tasks a transition waits for: rows of (tid, name, kind, state, function it sleeps in)."""

    def __init__(self, patch, direction, rows):
        self.patch = patch
        self.direction = direction
        self.rows = rows

    def __rich__(self):
        t = Table(title=f"{len(self.rows)} task(s) hold the {self.direction} transition of '{self.patch}' open",
                  title_justify="left")
        for col in ("tid", "name", "kind", "why it has not moved"):
            t.add_column(col, justify="right" if col == "tid" else "left")
        for tid, name, kind, state, where in self.rows:
            why = f"is sleeping on function {where}" if state == "sleeping" and where else f"is {state}"
            t.add_row(str(tid), Text(name), kind, Text(why, style="cyan" if state == "sleeping" else "green"))
        return t


class EventTable:
    """Events as (at, kind, sentence) rows."""

    def __init__(self, rows, title):
        self.rows = rows
        self.title = title

    def __rich__(self):
        t = Table(title=self.title, title_justify="left", box=None, pad_edge=False)
        t.add_column("at", justify="right", style="dim")
        t.add_column("kind")
        t.add_column("what")
        for at, kind, text in self.rows:
            style = _KIND_STYLE.get(kind, "dim")
            t.add_row(f"{at:,}", Text(kind, style=style), Text(text, style=style))
        return t


class PadTable:
    """Pads as they are in memory now: rows of (address, bytes, instruction, function, target)."""

    def __init__(self, rows, title):
        self.rows = rows
        self.title = title

    def __rich__(self):
        t = Table(title=self.title, title_justify="left")
        for col in ("address", "bytes", "instruction", "function", "goes to"):
            t.add_column(col)
        for address, raw, text, kind, function, target in self.rows:
            t.add_row(f"{address:#010x}", raw, Text(text, style=_PAD_STYLE.get(kind, "")), Text(function),
                      Text(target or ""))
        return t


class TracerTable:
    """The function tracers of a session: rows of (function, calls seen)."""

    def __init__(self, rows):
        self.rows = rows

    def __rich__(self):
        t = Table(title="function tracers", title_justify="left")
        t.add_column("function")
        t.add_column("calls", justify="right")
        for function, calls in self.rows:
            t.add_row(Text(function), f"{calls:,}")
        return t


class HelpTable:
    """The commands with their usage and what they do."""

    def __init__(self, specs):
        self.specs = specs

    def __rich__(self):
        t = Table(title="commands", title_justify="left", box=None, pad_edge=False)
        t.add_column("usage", style="bold", no_wrap=True)
        t.add_column("what it does")
        for s in self.specs:
            t.add_row(Text(s.usage), Text(s.summary))
        return t
