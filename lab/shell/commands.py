"""commands - the shell's commands: their syntax, their help, and a line parsed into a Command before anything runs.

Parsing needs no kernel, so a script is checked line by line before the
kernel boots, and an interactive line that does not parse changes nothing.
What only the running kernel can tell (a task's name, a patch's name, a
function's pad) is checked by the session, also before the command acts.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ..errors import UsageError

MAX_INSTRUCTIONS = 10_000_000_000   # as `lab run --instructions`
RUN_DEFAULT = 1_000_000             # `run` alone
UNTIL_LIMIT = 20_000_000            # `run until EVENT` without N gives up after this many
EVENTS_DEFAULT = 20
CONSOLE_DEFAULT = 40

# what `run until` and `goto` can name: (argument it takes, what it is)
EVENTS = {
    "migrated": ("[TASK]", "a task (or TASK) moves to the transition's target universe"),
    "signal": ("[TASK]", "a signal, fake signal or wake-up is delivered (to TASK)"),
    "patch": ("[NAME]", "a patch (or NAME) changes state"),
    "complete": ("", "the transition in progress ends (`goto`: the latest that completed)"),
    "console": ("[TEXT]", "the kernel prints a line (containing TEXT)"),
    "oops": ("[TASK]", "a task (or TASK) oopses"),
    "exit": ("[TASK]", "a task (or TASK) exits"),
    "call": ("FUNC", "FUNC is entered (`run until` only: a function tracer watches it)"),
}


class ShellError(UsageError):
    """A command that cannot be done as typed; the message says what to type instead."""


@dataclass(frozen=True)
class Command:
    """One parsed line: the command's name and its arguments by name."""

    name: str
    args: dict = field(default_factory=dict)
    text: str = ""            # the line as typed


@dataclass(frozen=True)
class Spec:
    name: str
    usage: str
    summary: str
    parse: object             # fn(words) -> args dict; raises ShellError
    complete: tuple = ()      # what each argument position completes to: "task", "function", ...


# ---- numbers and steps as a person types them ----

def whole(text, lo, hi, what):
    from ..cli import parse_whole
    try:
        return parse_whole(text, lo, hi)
    except ValueError as exc:
        if str(exc) == "out of range":
            raise ShellError(f"{what} {text}: out of range; give {lo:,} .. {hi:,}") from None
        raise ShellError(f"{what} {text!r}: {exc}; give a whole number such as 1000000, 1_000_000, "
                         "1,000,000 or 1e6") from None


@dataclass(frozen=True)
class Step:
    """Where `goto` goes: an absolute step, a share of the recording, a move, the present or an event."""

    kind: str                 # "at" | "percent" | "relative" | "now" | "event"
    value: object = None      # int step, float share, signed int, or (event, argument)


def parse_step(text):
    s = text.strip()
    if s == "now":
        return Step("now")
    if s.endswith("%"):
        try:
            share = float(s[:-1].replace("_", ""))
        except ValueError:
            share = -1.0
        if not 0 <= share <= 100:
            raise ShellError(f"goto {text}: a share of the recording is 0% .. 100%")
        return Step("percent", share / 100)
    if s[:1] in "+-" and len(s) > 1:
        n = whole(s[1:], 1, MAX_INSTRUCTIONS, "goto")
        return Step("relative", n if s[0] == "+" else -n)
    return Step("at", whole(s, 0, MAX_INSTRUCTIONS, "goto"))


# ---- argument parsers, one per command ----

def _none(name):
    def parse(words):
        if words:
            raise ShellError(f"{name} takes no arguments; `help {name}` says what it does")
        return {}
    return parse


def _event(words, command, allow_call=True):
    if not words:
        raise ShellError(f"{command}: name an event: {', '.join(EVENTS)}")
    kind, rest = words[0], words[1:]
    if kind not in EVENTS:
        raise ShellError(f"{command}: no event {kind!r}; the events are {', '.join(EVENTS)}")
    if kind == "call" and not allow_call:
        raise ShellError(f"{command}: `call` is for `run until` (a function tracer watches the run); "
                         "`events all` lists the recorded calls of patched functions")
    takes = EVENTS[kind][0]
    if kind == "console":
        return kind, " ".join(rest) or None
    if not takes and rest:
        raise ShellError(f"{command} {kind} takes no argument")
    if len(rest) > 1:
        raise ShellError(f"{command} {kind}: one {takes.strip('[]')} at most, not {' '.join(rest)!r}")
    if takes == "FUNC" and not rest:
        raise ShellError(f"{command} call: name the function, e.g. `{command} call capable`")
    return kind, (rest[0] if rest else None)


def _run(words):
    n, event = None, None
    if words and words[0] != "until":
        n = whole(words[0], 1, MAX_INSTRUCTIONS, "run")
        words = words[1:]
    if words:
        if words[0] != "until":
            raise ShellError(f"run: {words[0]!r} is not `until EVENT`; type `run [N] [until EVENT [ARG]]`")
        event = _event(words[1:], "run until")
    return {"instructions": n, "until": event}


def _one(name, what, example):
    def parse(words):
        if len(words) != 1:
            raise ShellError(f"{name} takes one {what}, e.g. `{name} {example}`")
        return {what: words[0]}
    return parse


def _count(name, default, lo=1, hi=MAX_INSTRUCTIONS):
    def parse(words):
        if len(words) > 1:
            raise ShellError(f"{name} takes one number at most, e.g. `{name} {default}`")
        return {"n": whole(words[0], lo, hi, name) if words else default}
    return parse


def _kill(words):
    if len(words) != 2:
        raise ShellError("kill takes a task and a signal, e.g. `kill pipe-reader SIGUSR1` (or `kill 3 10`)")
    return {"task": words[0], "signal": parse_signal(words[1])}


def parse_signal(text):
    from ..kernel import SIGNAL_NAMES
    names = {name: nr for nr, name in SIGNAL_NAMES.items()}
    up = text.upper()
    if up in names or "SIG" + up in names:
        return names.get(up) or names["SIG" + up]
    if text.isdigit():
        nr = int(text)
        if 1 <= nr <= 31:
            return nr
    raise ShellError(f"kill: {text!r} is not a signal; give 1 .. 31 or a name: {', '.join(names)}")


def _pads(words):
    if len(words) > 1:
        raise ShellError("pads takes `all` or one filter at most, e.g. `pads capable`")
    return {"filter": words[0] if words else None}


def _trace(words):
    if len(words) > 1:
        raise ShellError("trace takes one function, e.g. `trace capable` (`trace` alone lists the tracers)")
    return {"function": words[0] if words else None}


def _events(words):
    everything = bool(words) and words[0] == "all"
    if everything:
        words = words[1:]
    if len(words) > 1:
        raise ShellError("events takes `all` and a count at most, e.g. `events all 50`")
    n = whole(words[0], 1, 1_000_000, "events") if words else EVENTS_DEFAULT
    return {"all": everything, "n": n}


def _goto(words):
    if not words:
        raise ShellError("goto takes a step (1234567, 5e6, 50%, +N, -N, now) or an event, e.g. "
                         "`goto migrated pipe-reader`")
    if words[0] in EVENTS:
        return {"to": Step("event", _event(words, "goto", allow_call=False))}
    if len(words) != 1:
        raise ShellError(f"goto takes one step, not {' '.join(words)!r}")
    return {"to": parse_step(words[0])}


def _help(words):
    if len(words) > 1:
        raise ShellError("help takes one command at most, e.g. `help run`")
    if words and words[0] not in COMMANDS:
        raise ShellError(f"help {words[0]}: no such command; `help` lists them")
    return {"command": words[0] if words else None}


_SPECS = [
    Spec("run", "run [N] [until EVENT [ARG]]",
         f"run the kernel N instructions (default {RUN_DEFAULT:,}), or until an event (at most N, default "
         f"{UNTIL_LIMIT:,}); events: {', '.join(EVENTS)}; Ctrl-C stops it between two slices",
         _run, ("until", "event", "event-arg")),
    Spec("tasks", "tasks", "the tasks: state, universe, why and when each moved", _none("tasks")),
    Spec("pending", "pending", "who holds the transition open, and the function each sleeps in", _none("pending")),
    Spec("patches", "patches", "the patches loaded: state, functions, when they started and completed",
         _none("patches")),
    Spec("patch", "patch FILE", "load a live patch object (a .c source is built first); its init runs in "
         "the kernel and starts the transition", _one("patch", "file", "patches/kgr_capable.o"), ("file",)),
    Spec("signal", "signal", "send the fake signal now to every task the transition waits for",
         _none("signal")),
    Spec("kill", "kill TASK SIG", "send signal SIG (SIGUSR1, 10, ...) to a user task, as kill(2)",
         _kill, ("task", "signal")),
    Spec("force", "force", "move every pending task now (unsafe: a warning; the module then stays for good)",
         _none("force")),
    Spec("revert", "revert NAME", "unpatch: the same transition backwards (reverses one in progress)",
         _one("revert", "name", "sample_kgraft_patch"), ("patch",)),
    Spec("disasm", "disasm FUNC", "a function as it is in memory now, its pad included",
         _one("disasm", "function", "capable"), ("function",)),
    Spec("pads", "pads [all | FILTER]", "the fentry pads that are not the NOP (all of them, or those "
         "matching FILTER)", _pads, ("function",)),
    Spec("trace", "trace [FUNC]", "print every call of FUNC as the kernel runs (a function tracer); alone: "
         "the tracers", _trace, ("function",)),
    Spec("untrace", "untrace FUNC | all", "stop tracing FUNC", _one("untrace", "function", "capable"),
         ("traced",)),
    Spec("console", "console [N]", f"the kernel console, its last N lines (default {CONSOLE_DEFAULT})",
         _count("console", CONSOLE_DEFAULT, hi=1_000_000)),
    Spec("events", "events [all] [N]", f"the last N events (default {EVENTS_DEFAULT}) that tell the story; "
         "all: every event, switches and interrupts included", _events, ("all",)),
    Spec("back", "back [N]", "show the recorded step N instructions before the one shown (default 1)",
         _count("back", 1)),
    Spec("forward", "forward [N]", "show the recorded step N instructions after the one shown (default 1)",
         _count("forward", 1)),
    Spec("goto", "goto STEP | goto EVENT [ARG]", "show a recorded step: 1234567, 5e6, 50%, +N, -N, now, or "
         "the latest step of an event (`goto migrated pipe-reader`)", _goto, ("event", "event-arg")),
    Spec("view", "view", "open the stepper on the recording so far, at the step shown (q returns here)",
         _none("view")),
    Spec("save", "save FILE", "write the recording so far as a trace (`lab trace view FILE`)",
         _one("save", "file", "session.trace"), ("file",)),
    Spec("report", "report", "the JSON report of the run so far (as `lab run --json`)", _none("report")),
    Spec("help", "help [COMMAND]", "the commands, or one of them", _help, ("command",)),
    Spec("quit", "quit", "end the session (also Ctrl-D)", _none("quit")),
]
COMMANDS = {s.name: s for s in _SPECS}


def split(line):
    """The words of a line (shell quoting, so a path may hold spaces); [] for a blank line or a comment."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:
        raise ShellError(f"{line.strip()!r}: {exc}; close the quote") from None
    return words


def parse(line):
    """The Command a line asks for, or None for a blank line or a comment; ShellError if it cannot be done."""
    words = split(line)
    if not words:
        return None
    name, rest = words[0], words[1:]
    if name == "exit":
        name = "quit"
    spec = COMMANDS.get(name)
    if spec is None:
        close = [c for c in COMMANDS if c.startswith(name[:2])]
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ShellError(f"no command {name!r}; {hint}`help` lists the commands")
    return Command(name, spec.parse(rest), line.strip())
