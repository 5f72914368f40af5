"""script - a session's commands read from a file (or a pipe), checked before the kernel boots, run without prompts.

The transcript is each command echoed after the prompt a person would have
seen, then its output: equal scripts give equal bytes, so a script and its
transcript make a test.  A line that cannot be done stops the script: one
line on stderr naming the script and the line, exit status 2.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from ..errors import UsageError
from .commands import Command, ShellError, parse

EXIT_OK, EXIT_CHECK, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Line:
    number: int
    text: str
    command: Command | None     # None: a comment, echoed as it is


def read(text, name):
    """The lines of a script, each parsed; UsageError naming the first that does not parse."""
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            lines.append(Line(number, stripped, None))
            continue
        try:
            command = parse(raw)
        except ShellError as exc:
            raise UsageError(f"{name}:{number}: {exc}") from None
        lines.append(Line(number, stripped, command))
    return lines


def run(session, lines, name, err=None):
    """Run a script's lines in session; returns the exit status."""
    err = err or sys.stderr
    out = session.out
    for line in lines:
        if line.command is None:
            out.line(line.text, "dim")
            continue
        out.echo(session.prompt(), line.text)
        try:
            going = session.execute(line.command)
        except ShellError as exc:
            out.console.file.flush()
            print(f"lab: error: {name}:{line.number}: {exc}", file=err)
            return EXIT_USAGE
        if not going:
            break
    return EXIT_CHECK if verdict(session) else EXIT_OK


def verdict(session):
    """What failed in the session (refused patches, a panic, consistency violations), told once at its end."""
    problems = list(session.failed)
    problems += [f"patch '{p.name}' {p.state.value}: {p.reason}" for p in session.system.patches
                 if p.state.value in ("refused", "failed")]     # a stop-machine model may give up long after
    violations = session.system.violations()
    if violations:
        problems.append(f"{len(violations)} consistency violation(s)")
        session.out.line(f"{len(violations)} consistency violation(s): `report` lists them", "bold red")
    return problems
