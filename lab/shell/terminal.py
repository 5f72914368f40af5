"""terminal - the interactive session: a prompt with history (readline) and completion of what a command takes.

An error prints one line and the session goes on, nothing changed; Ctrl-C at
the prompt drops the line, during a run stops the run between two slices;
Ctrl-D or `quit` ends the session.
"""
from __future__ import annotations

import glob
import os
import pathlib

from . import commands as cmds
from .commands import ShellError, parse

HISTORY_LENGTH = 1000


def history_path():
    """Where the history is kept between sessions: $XDG_STATE_HOME/lab/shell_history."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return pathlib.Path(state) / "lab" / "shell_history"


class Completer:
    """Candidates for the word being typed, from the command table and the live kernel."""

    def __init__(self, session):
        self.session = session
        self._functions = None
        self._traceable = None

    # ---- what the kernel offers ----
    def functions(self):
        if self._functions is None:
            self._functions = sorted({f.name for f in self.session.system.image.functions if isinstance(f.name, str)})
        mods = [f.name for m in self.session.system.modules.modules if m.loaded
                for f in m.symbols.values() if f.kind == "func"]
        return self._functions + sorted(mods)

    def traceable(self):
        s = self.session.system
        if self._traceable is None:
            self._traceable = sorted({p.function for p in s.image.pads if isinstance(p.function, str)})
        return self._traceable + sorted(name for m in s.modules.modules if m.loaded for _a, name in m.pads)

    def tasks(self):
        return [t.name for t in self.session.system.tasks if t.state.value != "unused"]

    def patches(self):
        return [p.name for p in self.session.system.patches]

    @staticmethod
    def files(text, suffixes=None):
        out = []
        for path in sorted(glob.glob(os.path.expanduser(text) + "*")):
            if os.path.isdir(path):
                out.append(path + "/")
            elif suffixes is None or path.endswith(suffixes):
                out.append(path)
        return out

    # ---- the word at a position ----
    def candidates(self, words, text):
        """Completions of text, the word after words (the words typed before it on the line)."""
        if not words:
            return [c for c in [*cmds.COMMANDS, "exit"] if c.startswith(text)]
        name, args = words[0], words[1:]
        pool = self._pool(name, args, text)
        return [c for c in pool if c.startswith(text)]

    def _event_arg(self, kind):
        return {"migrated": self.tasks, "signal": self.tasks, "oops": self.tasks, "exit": self.tasks,
                "patch": self.patches, "call": self.traceable}.get(kind, list)()

    def _pool(self, name, args, text):
        from ..kernel import SIGNAL_NAMES
        if name == "run":
            if args and args[-1] == "until":
                return list(cmds.EVENTS)
            if len(args) >= 2 and args[-2] == "until":
                return self._event_arg(args[-1])
            return [] if "until" in args else ["until"]
        if name == "goto":
            if not args:
                return [*cmds.EVENTS, "now"]
            return self._event_arg(args[0]) if len(args) == 1 else []
        if name == "kill":
            return self.tasks() if not args else (list(SIGNAL_NAMES.values()) if len(args) == 1 else [])
        if args:
            return []
        if name == "patch":
            return self.files(text, (".o", ".c"))
        if name == "save":
            return self.files(text)
        if name == "revert":
            return self.patches()
        if name == "disasm":
            return self.functions()
        if name in ("trace", "pads"):
            return self.traceable() + (["all"] if name == "pads" else [])
        if name == "untrace":
            return sorted(self.session.tracers) + ["all"]
        if name == "help":
            return list(cmds.COMMANDS)
        if name == "events":
            return ["all"]
        return []


def _readline(session):
    """readline set up for the session, or None where Python has none."""
    try:
        import readline
    except ImportError:
        return None
    completer = Completer(session)
    matches = []

    def complete(text, state):
        if state == 0:
            line = readline.get_line_buffer()[:readline.get_begidx()]
            try:
                words = cmds.split(line)
            except ShellError:
                words = []
            try:
                # a whole word is followed by a space, as in bash; a directory goes on with its files
                matches[:] = [c if c.endswith("/") else c + " " for c in completer.candidates(words, text)]
            except Exception:       # completion must never break the prompt
                matches[:] = []
        return matches[state] if state < len(matches) else None

    readline.set_completer_delims(" \t\n")      # task names and paths hold '/' and '-'
    readline.set_completer(complete)
    if "libedit" in (readline.__doc__ or ""):
        readline.parse_and_bind("bind ^I rl_complete")
    else:
        readline.parse_and_bind("tab: complete")
    readline.set_history_length(HISTORY_LENGTH)
    try:
        readline.read_history_file(history_path())
    except OSError:
        pass
    return readline


def _save_history(readline):
    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(path)
    except OSError:
        pass


def interact(session):
    """Read commands at a prompt until quit or end of input; returns the exit status (1 if a check failed)."""
    out = session.out
    readline = _readline(session)
    try:
        while True:
            try:
                line = input(session.prompt())
            except KeyboardInterrupt:
                print()
                continue
            except EOFError:
                print()
                break
            try:
                command = parse(line)
                if command is None:
                    continue
                if not session.execute(command):
                    break
            except ShellError as exc:
                out.line(f"error: {exc}", "bold red")
    finally:
        if readline is not None:
            _save_history(readline)
    from .script import EXIT_CHECK, EXIT_OK, verdict
    return EXIT_CHECK if verdict(session) else EXIT_OK
