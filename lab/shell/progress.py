"""progress - a long run shown as it goes (instructions, tasks moved, pending) and stopped by Ctrl-C between slices.

The kernel checks a run's condition between two slices (System.run's
until), never inside one, so that is where the progress is drawn and where
Ctrl-C takes effect: SIGINT only sets a flag, the run ends at the next slice
boundary, and the kernel is left as any run leaves it.  The display is for a
terminal only; without one nothing is drawn and a run's output is the same
bytes whatever the machine's speed.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time

from rich.progress import BarColumn, Progress, TextColumn

_REFRESH = 0.1          # seconds between two redraws (display only)


class Interrupt:
    """Ctrl-C as a flag while a command works; the default behaviour otherwise."""

    def __init__(self):
        self.requested = False

    @contextlib.contextmanager
    def catching(self):
        """While inside, SIGINT sets requested instead of raising KeyboardInterrupt."""
        self.requested = False
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(_signum, _frame):
            self.requested = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def transition_counts(system):
    """(moved, pending names) of the transition in progress, or None."""
    t = system.livepatch.transition
    if t is None:
        return None
    pending = t.pending()
    return len(t.tracked()) - len(pending), [task.name for task in pending]


class RunProgress:
    """Runs a system for a number of instructions (or until a condition), drawing progress on a terminal.

    `RunProgress(system, console).run(n, until=fn)` returns (instructions run,
    interrupted).  `lab run`, `lab demo` and any loop over System.run can use
    it the same way: shown only if console is a terminal.
    """

    def __init__(self, system, console, interrupt=None, on_slice=None, label="running"):
        self.system = system
        self.console = console
        self.interrupt = interrupt or Interrupt()
        self.on_slice = on_slice      # fn() between two slices: flush what hooks collected
        self.label = label
        self.show = bool(console is not None and console.is_terminal)

    def run(self, instructions, until=None):
        system = self.system
        start = system.clock
        progress = task = None
        last = [0.0]

        def cond(s):
            if self.on_slice is not None:
                self.on_slice()
            if progress is not None:
                now = time.monotonic()
                if now - last[0] >= _REFRESH:
                    last[0] = now
                    progress.update(task, completed=s.clock - start, moves=self._moves())
                    progress.refresh()
            if self.interrupt.requested:
                return True
            return until is not None and until(s)

        with contextlib.ExitStack() as stack:
            if self.show:
                progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                    TextColumn("{task.completed:,.0f} of {task.total:,.0f} instructions"),
                                    TextColumn("{task.fields[moves]}"), TextColumn("[dim]Ctrl-C stops"),
                                    console=self.console, transient=True, auto_refresh=False)
                stack.enter_context(progress)
                task = progress.add_task(self.label, total=instructions, moves=self._moves())
            system.run(instructions, until=cond)
        if self.on_slice is not None:
            self.on_slice()
        return system.clock - start, self.interrupt.requested

    def _moves(self):
        counts = transition_counts(self.system)
        if counts is None:
            return ""
        moved, pending = counts
        names = ", ".join(pending[:4]) + (" ..." if len(pending) > 4 else "")
        return f"{moved} moved, {len(pending)} pending" + (f" ({names})" if pending else "")
