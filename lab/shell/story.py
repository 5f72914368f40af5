"""story - the events of a run told in sentences, and the events a `run until` or `goto` names."""
from __future__ import annotations

from .. import events as ev
from ..livepatch.transition import MOVED_HOW as HOW  # where a task moves, in the demo's words too
from ..livepatch.transition import PATCH_STATE_WORDS

IRQ = -1

# events too frequent for a story; `events all` shows them
NOISE = {"switch", "irq", "syscall", "kloop", "call", "transition-start"}


class Names:
    """Task names by tid, read when asked (a task's name can change: insmod reuses a slot)."""

    def __init__(self, system):
        self.system = system
        self.syscalls = system.image.syscall_names()

    def __call__(self, tid):
        if tid == IRQ:
            return "the interrupt context"
        try:
            return self.system.task(tid).name
        except Exception:       # a tid the kernel no longer has
            return f"task {tid}"


def tells(event):
    """Whether the story of a run shows this event."""
    if event.kind in NOISE:
        return False
    if event.kind == "console":
        return event.text.startswith(("livepatch", "BUG", "Oops", "Kernel panic", "WARNING"))
    return True


def sentence(event, name):
    """One line for an event, for a person; name(tid) gives a task's name."""
    k = event.kind
    if k == "migrated":
        who = name(event.tid)
        where = "the new universe (1)" if event.universe == 1 else f"universe {event.universe}"
        return f"{who} moved to {where} {HOW.get(event.by, event.by)}"
    if k == "signal":
        if event.fake:
            return f"fake signal delivered to {name(event.tid)}"
        if not event.sig:
            return f"wake-up of {name(event.tid)}"      # a kernel thread's fake signal, or kmodloader's work
        from ..kernel import SIGNAL_NAMES
        sig = SIGNAL_NAMES.get(event.sig, f"signal {event.sig}")
        return f"{sig} ({event.sig}) delivered to {name(event.tid)}"
    if k == "patch":
        said = PATCH_STATE_WORDS.get(event.state, f"is {event.state}")
        return f"patch '{event.name}' {said}" + (f" ({event.detail})" if event.detail else "")
    if k == "console":
        return f"console: {event.text.rstrip()}"
    if k == "oops":
        return f"oops in {name(event.tid)}: {event.reason} at {event.where}"
    if k == "exit":
        return f"{name(event.tid)} ({event.tid}) exited with {event.code}"
    if k == "task-new":
        return f"{name(event.tid)} ({event.tid}) started"
    if k == "panic":
        return f"kernel panic: {event.message}"
    if k == "preempt":
        return f"forced preemption of {name(event.tid)}"
    from ..viewer.state import describe
    return describe(event, name)


def matches(kind, arg, event, name):
    """Whether event is one `run until KIND ARG` or `goto KIND ARG` names."""
    if kind == "migrated":
        return isinstance(event, ev.Migrated) and _task(arg, event.tid, name)
    if kind == "signal":
        return isinstance(event, ev.Signal) and _task(arg, event.tid, name)
    if kind == "patch":
        return isinstance(event, ev.PatchEvent) and (arg is None or event.name == arg)
    if kind == "complete":
        return isinstance(event, ev.PatchEvent) and event.state in ("complete", "reverted")
    if kind == "console":
        return isinstance(event, ev.Console) and (arg is None or arg in event.text)
    if kind == "oops":
        return isinstance(event, ev.Oops) and _task(arg, event.tid, name)
    if kind == "exit":
        return isinstance(event, ev.TaskExit) and _task(arg, event.tid, name)
    if kind == "call":
        return isinstance(event, ev.FuncEntry) and event.function == arg
    return False


def _task(arg, tid, name):
    return arg is None or arg == str(tid) or arg == name(tid)
