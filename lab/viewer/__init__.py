"""viewer - a recorded run looked at step by step: the state at any instruction, a timeline, an interactive stepper."""
from __future__ import annotations

from .index import Mark, Span, TraceIndex, ViewerError
from .state import Inspector, StepState
from .timeline import Timeline
from .views import (BacktraceView, CodeView, ConsoleTail, EventView, MemoryView, RegisterView, SourceView, StepHeader,
                    StepView, TaskView)


def open_trace(trace_or_path, image=None):
    """An Inspector over a trace (a Trace, or the path of one)."""
    return Inspector.open(trace_or_path, image=image)


def step_state(trace_or_path, step, image=None):
    """The StepState at step."""
    return open_trace(trace_or_path, image).state(step)


def show_step(trace_or_path, step, image=None):
    """The StepView of one step: prints in a terminal (rich), displays inline in Jupyter."""
    return StepView(step_state(trace_or_path, step, image))


def view(trace_or_path, image=None, step=None):
    """Run the interactive stepper (Textual) on a trace."""
    from .stepper import Stepper
    return Stepper(open_trace(trace_or_path, image), step=step).run()


__all__ = ["open_trace", "step_state", "show_step", "view", "Inspector", "StepState", "StepView", "StepHeader",
           "CodeView", "RegisterView", "TaskView", "EventView", "ConsoleTail", "Timeline", "TraceIndex", "Span",
           "Mark", "ViewerError", "BacktraceView", "SourceView", "MemoryView"]
