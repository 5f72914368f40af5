"""demo - the bundled scenario: the default workload, the capable() patch, the sleeper moved by the fake signal."""
from __future__ import annotations

from . import events as ev
from .errors import UsageError
from .image import FIRMWARE_DIR
from .livepatch.transition import MOVED_HOW, PATCH_STATE_WORDS

PATCH = FIRMWARE_DIR.parent / "patches" / "kgr_capable.o"
PATCH_AT = 1_000_000
SIGNAL_AFTER = 1_500_000
STEP = 100_000


def describe(event, system):
    """One line of the story for the events a person should notice, else None."""
    name = lambda tid: "interrupts" if tid == -1 else system.task(tid).name  # noqa: E731
    if isinstance(event, ev.Migrated):
        return f"{name(event.tid)} moved to the new universe {MOVED_HOW.get(event.by, event.by)}"
    if isinstance(event, ev.Signal) and event.fake:
        kind = "fake signal" if system.task(event.tid).kind == "user" else "wake-up"
        return f"{kind} sent to {name(event.tid)}"
    if isinstance(event, ev.PatchEvent):
        said = PATCH_STATE_WORDS.get(event.state, f"is {event.state}")
        return f"patch '{event.name}' {said}" + (f" ({event.detail})" if event.detail else "")
    return None


def run_demo(instructions=8_000_000, seed=0, quantum=None, image=None, on_step=None, record=False):
    """Run the scenario; on_step(system, new story lines) after each step.  Returns the system.
    It stops at `instructions` at the latest, which must come after PATCH_AT (the patch's load)."""
    from .system import boot
    if instructions <= PATCH_AT:
        raise UsageError(f"the demo loads its patch at {PATCH_AT:,}; give more than {PATCH_AT:,} instructions")
    kwargs = {"seed": seed, "signal_after": SIGNAL_AFTER, "record": record}
    if quantum:
        kwargs["quantum"] = quantum
    system = boot(image, **kwargs)
    seen = 0
    story = []

    def step(n):
        nonlocal seen
        system.run(n)
        lines = []
        for e in system.events[seen:]:
            text = describe(e, system)
            if text:
                lines.append((e.at, text))
        seen = len(system.events)
        story.extend(lines)
        if on_step:
            on_step(system, lines)

    def pad_line(when, at=None):
        ft = system.ftrace
        address = system.image.pad("capable").address
        insn = ft.disassemble_pad(address)
        target = ft.state(address)[1]
        where = f" ({ft.symbolize(target)})" if target is not None else ""
        # stamped when the pad was rewritten, not when the demo looked at it
        line = (system.clock if at is None else at, f"{when}: capable's pad is `{insn.text}`{where}")
        story.append(line)
        if on_step:
            on_step(system, [line])

    pad_line("before the patch")
    while system.clock < PATCH_AT:
        step(min(STEP, PATCH_AT - system.clock))
    patch = system.apply_patch(PATCH)
    step(1)
    pad_line("transition started", patch.started_at)
    while system.clock < instructions and (system.transition is not None or system.clock < PATCH_AT + SIGNAL_AFTER):
        step(min(STEP, instructions - system.clock))
    if system.transition is None:
        pad_line("transition complete", patch.completed_at)
    if system.clock < instructions:
        step(min(500_000, instructions - system.clock))
    system.story = story
    return system
