"""timetravel - earlier steps of a live session: the recording so far, opened with the viewer's Inspector.

The session boots with record=True, so every step since power-on can be
recomputed.  The recording is written as a trace into a directory the
session owns (the trace machinery reads only files) and opened with the
Inspector; a new one is written only when the kernel has run since the last.
Nothing of the file's name reaches the output: steps are checked here, before
the viewer (whose errors name the file) sees them.
"""
from __future__ import annotations

import pathlib
import tempfile

from .commands import ShellError

NAME = "session.trace"


class TimeMachine:
    """The recording of a system, openable at any step."""

    def __init__(self, system):
        self.system = system
        self._dir = None
        self._inspector = None
        self._key = None

    def close(self):
        self._inspector = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def _now_key(self):
        s = self.system
        return s.clock, len(s.events), s.machine.lab_writes

    def inspector(self):
        """The Inspector over the recording up to now (written again if the kernel ran since)."""
        from ..viewer import open_trace
        if self._inspector is None or self._key != self._now_key():
            if self._dir is None:
                self._dir = tempfile.TemporaryDirectory(prefix="lab-shell-")
            path = pathlib.Path(self._dir.name) / NAME
            self.system.save_trace(path)
            self._inspector = open_trace(path, image=self.system.image)
            self._key = self._now_key()
        return self._inspector

    @property
    def start(self):
        return self.inspector().start

    def check(self, step, asked):
        """step if the recording holds it, else ShellError naming the range."""
        ins = self.inspector()
        if not ins.start <= step <= ins.end:
            raise ShellError(f"{asked}: step {step:,} is not recorded; the recording holds steps "
                             f"{ins.start:,} .. {ins.end:,}")
        return step

    def state(self, step):
        return self.inspector().state(step)
