"""output - where a session's output goes: a terminal (colour, tables, progress) or plain text, and an SVG recording.

Plain output (not a terminal) is the transcript a script's golden file holds:
no colour, a fixed width whatever the environment says, tables as one record
per line, so the same script gives the same bytes on every run.
"""
from __future__ import annotations

import io
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

PLAIN_WIDTH = 120       # fixed: COLUMNS must not change a transcript
SVG_WIDTH = 120


class Output:
    """Prints renderables to stdout (a terminal or plain text) and, if asked, to a recording for an SVG."""

    def __init__(self, file=None, terminal=None, record_svg=False):
        file = file or sys.stdout
        self.terminal = file.isatty() if terminal is None else terminal
        if self.terminal:
            self.console = Console(file=file, highlight=False, emoji=False)
        else:
            self.console = Console(file=file, width=PLAIN_WIDTH, color_system=None, force_terminal=False,
                                   force_jupyter=False, highlight=False, emoji=False, soft_wrap=False,
                                   legacy_windows=False)
        self.recording = None
        if record_svg:
            self.recording = Console(file=io.StringIO(), width=SVG_WIDTH, record=True, force_terminal=True,
                                     color_system="truecolor", highlight=False, emoji=False,
                                     legacy_windows=False)

    def _consoles(self):
        return [self.console] + ([self.recording] if self.recording is not None else [])

    def print(self, renderable):
        """A renderable as it is (panels, listings, step views)."""
        for c in self._consoles():
            c.print(renderable)

    def line(self, text, style=""):
        """One line of the shell's own, never wrapped or read as markup."""
        for c in self._consoles():
            c.print(Text(text, style=style if c.is_terminal else ""), soft_wrap=True)

    def table(self, table):
        """A table on a terminal; plain, a title line and one record per line, columns aligned, nothing cut."""
        if self.recording is not None:
            self.recording.print(table)
        if self.terminal:
            self.console.print(table)
            return
        for text in plain_lines(table):
            self.console.print(Text(text), soft_wrap=True)

    def echo(self, prompt, line):
        """A script's command, as if typed at the prompt."""
        for c in self._consoles():
            c.print(Text.assemble((prompt, "bold green" if c.is_terminal else ""), line), soft_wrap=True)

    def save_svg(self, path, title):
        self.recording.save_svg(str(path), title=title)


def plain_lines(table: Table):
    """A rich Table as plain lines: its title, the header, one line per row."""
    columns = table.columns
    cells = [[_plain(c.header) for c in columns]]
    for r in range(table.row_count):
        cells.append([_plain(c._cells[r]) for c in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [_plain(table.title)] if table.title else []
    show = cells if table.show_header else cells[1:]
    for row in show:
        lines.append("  ".join(v.ljust(w) if i < len(row) - 1 else v for i, (v, w) in
                               enumerate(zip(row, widths))).rstrip())
    return lines


def _plain(cell):
    if isinstance(cell, Text):
        return cell.plain
    return str(cell)
