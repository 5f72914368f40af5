"""Trampolines as ftrace's: the decision runs with preemption disabled, and a
transition starts only after a grace period in which no task can still be
inside an earlier transition's trampoline (upstream's klp_synchronize_transition()).

The race this guards against: a task preempted at the first instruction of
patch A's trampoline, resumed after A completed and patch B started, would
decide with B's meaning of universe 0 in A's trampoline and run the original
body, which under B is nobody's.
"""
from __future__ import annotations

import lab
from lab.livepatch import PatchState

from livepatch_helpers import CAPABLE, CAPABLE_V2, body_entries


def _trampoline_entries(seed):
    """Boot, load A, and return (A's trampoline, the first instant cap-user enters it)."""
    with lab.boot(seed=seed) as system:
        system.run(1_000_000)
        system.apply_patch(CAPABLE)
        pad = system.image.pad("capable").address
        _kind, tramp = system.ftrace.state(pad)
        cap = system.task("cap-user").tid
        hits = []
        system.machine.add_code_hook(
            tramp, lambda _a: hits.append(system.clock) if system.kernel.current == cap else None)
        system.run(2_000_000, until=lambda s: hits)
        return tramp, hits[0]


def _preempted_inside(at, offset):
    """A system where cap-user was preempted `offset` instructions into A's trampoline."""
    system = lab.boot(seed=0)
    system.run(1_000_000)
    a = system.apply_patch(CAPABLE)
    pad = system.image.pad("capable").address
    _kind, tramp = system.ftrace.state(pad)
    cap = system.task("cap-user")
    system.kernel.preempt_at([at + offset])
    system.run(at + offset - system.clock + 1)
    system.run(200_000, until=lambda s: s.kernel.current != cap.tid)
    return system, a, tramp, cap


def test_a_task_preempted_before_the_decision_keeps_the_next_transition_waiting():
    tramp, at = _trampoline_entries(seed=0)
    system, a, tramp, cap = _preempted_inside(at, 0)
    with system:
        assert tramp in cap.unwind()[0]                # switched out on the trampoline's first instruction
        system.force()                                # A completes; its trampoline is retired
        assert a.state == PatchState.COMPLETE and tramp in system.ftrace.retired
        originals = body_entries(system, "capable")
        b = system.apply_patch(CAPABLE_V2)
        # B's init has run, but its transition waits until no task can be in A's trampoline
        assert system.transition is None and system.livepatch.busy is b
        system.run(6_000_000, until=lambda s: s.transition is not None)
        assert system.transition.patch is b and tramp not in system.ftrace.retired   # freed (and reused)
        system.run(1_000_000)
        # cap-user left A's trampoline with A's meaning: it never ran the original body
        assert [e for e in originals if e[1] == cap.tid] == []
        assert b.state in (PatchState.TRANSITION, PatchState.COMPLETE)


def test_a_tick_inside_the_decision_does_not_preempt_it():
    tramp, at = _trampoline_entries(seed=0)
    system, _a, tramp, cap = _preempted_inside(at, 2)   # after `inc dword ptr [preempt_count]`
    with system:
        frames = cap.unwind()[0]
        assert not any(tramp <= f < tramp + 128 for f in frames), "switched out inside the decision"
        assert system.machine.i32(system.image.address("preempt_count")) == 0
