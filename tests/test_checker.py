"""The checker's two rules: no unit of work mixes old and new code of a patch
(mixed), and no task switches universe with a function of the transition on
its stack (on-stack, upstream's klp_check_stack())."""
from __future__ import annotations

from lab import events as ev
from lab.checker import check
from lab.livepatch import PatchState

from livepatch_helpers import CAPABLE, LIMIT, PIPE_WAIT, PROTO_PAIR, completed, patched


def rules(violations):
    return sorted({(v.rule, v.patch) for v in violations})


def test_every_move_records_the_functions_on_the_stack_of_what_moved():
    system, _patch = completed(PIPE_WAIT, observe=True)
    moves = [e for e in system.events if isinstance(e, ev.Migrated)]
    reader = system.task("pipe-reader").tid
    (move,) = [e for e in moves if e.tid == reader]
    assert move.by == "fake-signal"
    assert "exit_to_user_mode_loop" in move.stack and "pipe_wait_readable" not in move.stack
    irq = [e for e in moves if e.tid == -1]
    assert irq and "do_IRQ" in irq[0].stack and irq[0].stack[-1] != "pipe_wait_readable"
    start = next(e for e in system.events if isinstance(e, ev.TransitionStart))
    assert set(start.functions) == {"pipe_wait_readable", "kgr_pipe_wait_readable"}
    assert system.violations() == []


def test_a_task_switched_while_sleeping_in_the_old_function_is_an_on_stack_violation(monkeypatch):
    # the klp model with its stack check broken: it switches the sleeper in place
    from lab.livepatch.core import Livepatch
    monkeypatch.setattr(Livepatch, "_blocker", lambda self, task, ranges, require_reliable: ([], None))
    system, patch = patched(PIPE_WAIT, model="klp", observe=True)
    system.run_until_patched(LIMIT)
    assert patch.state == PatchState.COMPLETE
    found = system.violations()
    assert ("on-stack", "kgr_pipe_wait") in rules(found)
    v = next(v for v in found if v.rule == "on-stack")
    assert v.tid == system.task("pipe-reader").tid and ("pipe_wait_readable", v.start) in v.old


def test_the_klp_model_with_its_stack_check_has_no_violation():
    system, patch = patched(PIPE_WAIT, model="klp", observe=True, signal_after=300_000)
    system.run_until_patched(LIMIT)
    assert patch.state == PatchState.COMPLETE and system.violations() == []


def test_forcing_a_sleeper_out_of_the_old_function_is_flagged():
    system, patch = patched(PIPE_WAIT, observe=True)
    system.run(600_000)
    assert [t.name for t, _ in system.livepatch.pending()] == ["pipe-reader"]
    system.force()
    assert ("on-stack", "kgr_pipe_wait") in rules(system.violations())


def test_the_immediate_model_mixes_the_prototype_pair():
    system, patch = patched(PROTO_PAIR, model="immediate", observe=True)
    system.run(3_000_000)
    assert ("mixed", "kgr_proto_pair") in rules(system.violations())


def test_the_rules_apply_to_a_transition_only_while_it_runs():
    events = [
        ev.TransitionStart(0, 10, patch="p", target=1, functions=("f", "new_f")),
        ev.Migrated(1, 20, tid=3, by="syscall-exit", universe=1, stack=("g", "f")),
        ev.PatchEvent(2, 30, name="p", state="complete"),
        ev.Migrated(3, 40, tid=4, by="syscall-exit", universe=1, stack=("f",)),
    ]
    (v,) = check(events)
    assert (v.rule, v.tid, v.old) == ("on-stack", 3, (("f", 20),))
    assert check(events[:1] + events[2:]) == []
    assert check([events[0], ev.Migrated(1, 20, tid=3, by="x", universe=1, stack=("g", "h"))]) == []


def test_a_module_function_that_joined_the_transition_counts_on_a_stack_that_moves():
    """A module that came during the transition added its functions to it
    (TransitionJoin): a task that moves with one of them on its stack moved
    too early, as with the transition's own; a join for a patch not in
    transition changes nothing."""
    start = ev.TransitionStart(0, 10, patch="p", target=1, functions=("f", "new_f"))
    join = ev.TransitionJoin(1, 20, patch="p", module="m", functions=("g", "new_g"))
    moved = ev.Migrated(2, 30, tid=3, by="syscall-exit", universe=1, stack=("h", "g"))
    (v,) = check([start, join, moved])
    assert (v.rule, v.tid, v.old) == ("on-stack", 3, (("g", 30),))
    assert check([start, moved]) == []
    assert check([start, ev.TransitionJoin(1, 20, patch="q", module="m", functions=("g",)), moved]) == []


def test_kgraft_on_every_bundled_patch_has_no_violation():
    for path in (CAPABLE, PIPE_WAIT, PROTO_PAIR):
        system, patch = completed(path, observe=True)
        system.run(500_000)
        assert system.violations() == [], path.name


def test_entering_a_version_a_completed_transition_left_is_a_stale_decision():
    events = [
        ev.TransitionStart(0, 10, patch="p", target=1, functions=("f", "new_f")),
        ev.FuncEntry(1, 20, tid=3, in_irq=False, function="f", version="old", patch="p"),
        ev.PatchEvent(2, 30, name="p", state="complete"),
        ev.FuncEntry(3, 40, tid=3, in_irq=False, function="f", version="new", patch="p"),
        ev.FuncEntry(4, 50, tid=4, in_irq=False, function="f", version="old", patch="p"),
    ]
    (v,) = [v for v in check(events) if v.rule == "stale"]
    assert (v.rule, v.tid, v.start, v.old) == ("stale", 4, 50, (("f", 50),))
    # after the patch is reverted it is the new version nobody may enter
    reverted = events[:4] + [ev.TransitionStart(5, 60, patch="p", target=0, functions=("f", "new_f")),
                             ev.PatchEvent(6, 70, name="p", state="reverted"),
                             ev.FuncEntry(7, 80, tid=3, in_irq=False, function="f", version="old", patch="p"),
                             ev.FuncEntry(8, 90, tid=3, in_irq=False, function="f", version="new", patch="p")]
    (v,) = [v for v in check(reverted) if v.rule == "stale"]
    assert (v.rule, v.start) == ("stale", 90)


def test_a_stale_trampoline_without_the_grace_period_is_caught(monkeypatch):
    """The race the grace period prevents, let happen: the checker names it."""
    import lab
    from livepatch_helpers import CAPABLE_V2
    from test_grace_period import _trampoline_entries
    from livepatch_helpers import without_grace_period
    tramp, at = _trampoline_entries(seed=0)
    with lab.boot(seed=0, observe=True) as system:
        system.run(1_000_000)
        system.apply_patch(CAPABLE)
        system.kernel.preempt_at([at])
        system.run(at - system.clock + 1)
        system.run(200_000, until=lambda s: s.kernel.current != s.task("cap-user").tid)
        system.force()
        without_grace_period(monkeypatch)
        system.apply_patch(CAPABLE_V2)
        system.run(1_000_000)
        stale = [v for v in system.violations() if v.rule == "stale"]
        assert stale and stale[0].tid == system.task("cap-user").tid
        assert stale[0].patch == "sample_kgraft_patch"


def test_during_an_unpatching_transition_the_original_body_is_not_stale():
    events = [
        ev.TransitionStart(0, 10, patch="p", target=1, functions=("f", "new_f")),
        ev.PatchEvent(1, 20, name="p", state="complete"),
        ev.TransitionStart(2, 30, patch="p", target=0, functions=("f", "new_f")),
        ev.Migrated(3, 35, tid=3, by="syscall-exit", universe=0, stack=()),
        ev.FuncEntry(4, 40, tid=3, in_irq=False, function="f", version="old", patch="p"),
        ev.FuncEntry(5, 50, tid=-1, in_irq=True, function="f", version="old", patch="p"),
    ]
    assert check(events) == []
    stale = check(events[:2] + [ev.FuncEntry(3, 40, tid=3, in_irq=True, function="f", version="old", patch="p")])
    assert [(v.rule, v.tid) for v in stale] == [("stale", -1)]


def test_a_kernel_thread_round_that_mixed_is_reported_when_the_next_round_starts():
    events = [ev.KthreadLoop(seq=0, at=5, tid=4, where="kthread_iteration_done"),
              ev.FuncEntry(1, 6, tid=4, in_irq=False, function="f", version="old", patch="p"),
              ev.FuncEntry(2, 7, tid=4, in_irq=False, function="g", version="new", patch="p"),
              ev.KthreadLoop(seq=3, at=9, tid=4, where="kthread_iteration_done")]
    (v,) = check(events)
    assert (v.unit, v.start, v.end) == ("kthread", 5, 9)


def test_the_checker_fed_in_pieces_and_across_a_snapshot_gives_the_verdict_of_one_pass():
    """A System keeps its checker between calls and a restored system goes on
    from the snapshot's; each verdict must be check() of the whole log."""
    from lab import boot
    from lab.checker import Checker
    from lab.snapshot import snapshot
    with boot(model="immediate", observe=True) as system:
        system.run(900_000)
        assert system.violations() == []
        snap = snapshot(system)
        verdicts = []
        for extra in (0, 40_000):
            snap.restore()
            assert system.violations() == []        # nothing of the run before survives the restore
            system.run(100_000 + extra)
            system.apply_patch(PROTO_PAIR)
            for _ in range(6):
                system.run(500_000)
                assert system.violations() == check(system.events)
            verdicts.append(system.violations())
        assert verdicts[0] and verdicts[1]
        assert ("mixed", "kgr_proto_pair") in rules(verdicts[0])
        pieces = Checker()
        for n in range(0, len(system.events) + 997, 997):
            pieces.feed(system.events[:n])
        assert pieces.verdict() == check(system.events)


def test_a_copied_checker_goes_on_alone():
    """A snapshot holds a copy of the checker: what the run after it feeds
    must not reach the copy, whose next restore starts from it again."""
    import copy
    from lab.checker import Checker

    def call(seq, at, tid, version):
        return ev.FuncEntry(seq, at, tid=tid, function=f"{version}_f", version=version, patch="p", in_irq=False)
    base = [ev.SyscallEntry(0, 10, tid=3, nr=1), call(1, 11, 3, "old")]
    saved = Checker().feed(base)
    again = copy.deepcopy(saved)
    again.feed(base + [call(2, 12, 3, "new"), ev.TaskExit(3, 13, tid=3, code=0)])
    assert rules(again.verdict()) == [("mixed", "p")]
    assert saved.verdict() == [] and saved.seen == 2
    assert list(saved.open_units[3].calls) == [base[1]]
    assert copy.deepcopy(saved).feed(base + [call(2, 12, 3, "old")]).verdict() == []
    # the universes of a transition in progress too, copied as deepcopy and as a snapshot's pickle copy it
    import pickle
    start = [ev.TransitionStart(0, 10, patch="p", target=1, functions=("old_f", "new_f"))]
    saved = Checker().feed(start)
    for twin in (copy.deepcopy(saved), pickle.loads(pickle.dumps(saved))):
        twin.feed(start + [ev.Migrated(1, 20, tid=3, by="syscall-exit", universe=1, stack=()), call(2, 21, 3, "new")])
        assert twin.verdict() == []
        assert rules(saved.feed(start + [call(1, 21, 3, "new")]).verdict()) == [("decision", "p")]
        saved = Checker().feed(start)


def test_the_upstream_worker_checks_and_switches_a_task_in_one_step():
    """klp_try_switch_task() runs with interrupts off, as upstream's
    task_call_func() holds the task's locks: a reschedule forced just
    before a switch is recorded is taken only after it, so no task runs
    between its stack check and its switch.  (A preemption there once let
    cap-user run the new do_gethostname() before its switch was recorded,
    which the checker's stack rule then flagged.)"""
    from lab import boot
    from lab.snapshot import snapshot
    with boot(model="upstream", seed=2, quantum=20_000, observe=True) as system:
        system.run(1_000_000 - system.clock)
        snap = snapshot(system)
        system.apply_patch(PROTO_PAIR)
        system.run(300_000)
        checked = [e for e in system.events if isinstance(e, ev.Migrated) and e.by == "stack-check"
                   and e.tid not in (0, -1)]
        assert len(checked) >= 3
        for moved in checked[:3]:
            for before in (2, 12):
                snap.restore()
                system.kernel.preempt_at([moved.at - before])
                system.apply_patch(PROTO_PAIR)
                system.run(300_000)
                taken = next(e for e in system.events if isinstance(e, ev.Preemption))
                again = next(e for e in system.events if isinstance(e, ev.Migrated) and e.tid == moved.tid
                             and e.at > 1_000_000)
                assert again.at < taken.at, (moved, before, taken)
                assert system.violations() == []


def test_a_task_that_runs_the_version_of_the_other_universe_is_a_wrong_decision():
    """The decision rule: while a transition runs, a task that has not
    moved enters the version it leaves and one that has moved (or was born
    since) the one it goes to; a reversal keeps where each task is; the
    interrupt context is judged by its own universe once it has moved."""
    def entry(seq, at, tid, version, irq=False):
        return ev.FuncEntry(seq, at, tid=tid, in_irq=irq, function="f" if version == "old" else "new_f",
                            version=version, patch="p")
    start = ev.TransitionStart(0, 10, patch="p", target=1, functions=("f", "new_f"))
    moved = ev.Migrated(1, 20, tid=3, by="syscall-exit", universe=1, stack=())
    born = ev.TaskNew(2, 25, tid=7)
    good = [start, entry(3, 15, 3, "old"), moved, entry(4, 30, 3, "new"), born, entry(5, 35, 7, "new"),
            entry(6, 36, 4, "old"), entry(7, 37, -1, "new", irq=True)]
    assert [v for v in check(good) if v.rule == "decision"] == []
    for wrong in (entry(9, 40, 4, "new"), entry(9, 40, 3, "old"), entry(9, 40, 7, "old")):
        (v,) = [v for v in check(good + [wrong]) if v.rule == "decision"]
        assert (v.tid, v.first_mixed_at) == (wrong.tid, 40)
        assert (v.old, v.new) == (((wrong.function, 40),), ()) if wrong.version == "old" else \
            ((), ((wrong.function, 40),))

    def decisions(events):
        return [(v.tid, v.first_mixed_at) for v in check(events) if v.rule == "decision"]
    # a reversal keeps where each task is; one born after it starts where the reversal leads
    reverse = ev.TransitionStart(9, 50, patch="p", target=0, functions=("f", "new_f"))
    born_after = ev.TaskNew(10, 55, tid=8)
    assert decisions(good + [reverse, entry(11, 60, 3, "new"), entry(12, 61, 4, "old"), born_after,
                             entry(13, 62, 8, "old")]) == []
    assert decisions(good + [reverse, born_after, entry(11, 62, 8, "new")]) == [(8, 62)]
    # the interrupt context is judged once it has moved (kGraft's flag of its
    # own); before, or where it never moves (upstream's follows the task), not
    irq_moved = ev.Migrated(9, 40, tid=-1, by="irq-exit", universe=1, stack=())
    assert decisions(good + [irq_moved, entry(10, 45, -1, "new", irq=True)]) == []
    assert decisions(good + [irq_moved, entry(10, 45, -1, "old", irq=True)]) == [(-1, 45)]
    assert decisions(good + [entry(9, 45, -1, "old", irq=True)]) == []
    # once the transition is over the rule is too: every pad leads to one version
    done = ev.PatchEvent(9, 50, name="p", state="complete")
    assert decisions(good + [done, entry(10, 60, 4, "new")]) == []


def test_a_trampoline_that_decides_backwards_is_caught_where_no_unit_mixes(monkeypatch):
    """kgr_capable replaces one function, called once per system call:
    with the trampoline's versions swapped no unit of work ever mixes, and
    only the decision rule sees that tasks run the other universe's code."""
    from lab.livepatch.core import Livepatch
    right, _ = completed(CAPABLE, observe=True)
    assert right.violations() == []
    build = Livepatch._transition_trampoline
    monkeypatch.setattr(Livepatch, "_transition_trampoline", lambda self, pad, old, new: build(self, pad, new, old))
    system, _ = patched(CAPABLE, observe=True)
    system.run(600_000)
    rules = {v.rule for v in system.violations()}
    assert "decision" in rules and "mixed" not in rules
