"""The kGraft core: a patch's life (load, transition, complete, revert), the
universes of the tasks, the safe points they move at, replace, reverse, force,
patches applied at boot, and the operations it must refuse."""
import pytest

from lab import events as ev
from lab.ftrace import PadState
from lab.image import PAD_BYTES
from lab.livepatch import LivepatchError, PatchState

from livepatch_helpers import build_patch  # noqa: F401  (the fixture)
from livepatch_helpers import (CAPABLE, CAPABLE_V2, CMDLINE, LIMIT, PATCH_AT, PATCHES, PIPE_WAIT, SETTLE, boot, body_entries,
                               completed, gcc_test, livepatch_lines, migrations, pad_bytes, patched, task_record,
                               universe_bytes)

NAME = "sample_kgraft_patch"


def patch_states(system, name):
    return [e.state for e in system.events if isinstance(e, ev.PatchEvent) and e.name == name]


def only_the_sleeper_pending(system):
    """Run until every task that can move by itself has moved."""
    system.run(SETTLE)
    assert [(t.name, where) for t, where in system.livepatch.pending()] == [("pipe-reader", "pipe_wait_readable")]


# ---- a patch's life ----

def test_a_patch_loads_completes_and_reverts_with_the_kernels_log_lines_in_order():
    system, patch = completed(CAPABLE)
    assert patch.name == NAME and patch.state == PatchState.COMPLETE
    system.revert(NAME)
    system.run_until_patched(LIMIT)
    assert livepatch_lines(system) == [
        f"livepatch: enabling patch '{NAME}'",
        f"livepatch: '{NAME}': initializing patching transition",
        f"livepatch: '{NAME}': starting patching transition",
        f"livepatch: '{NAME}': completing patching transition",
        f"livepatch: '{NAME}': patching complete",
        f"livepatch: '{NAME}': initializing unpatching transition",
        f"livepatch: '{NAME}': starting unpatching transition",
        f"livepatch: '{NAME}': completing unpatching transition",
        f"livepatch: '{NAME}': unpatching complete",
    ]
    assert patch_states(system, NAME) == ["transition", "complete", "reverting", "reverted"]
    assert patch.state == PatchState.REVERTED
    assert system.ftrace.read_pad(system.image.pad("capable").address) == PAD_BYTES
    assert system.report()["taints"] == ["LIVEPATCH"]


def test_after_completion_every_task_is_in_the_new_universe_and_the_pad_is_a_jump():
    system, patch = completed(CAPABLE)
    report = system.report()
    assert report["transition"] is None
    # the idle task moves in its idle loop, which a busy CPU never runs;
    # kGraft does not wait for it, and the report says what the guest says
    live = [t for t in report["tasks"] if t["state"] != "dead" and t["tid"] != 0]
    assert {t["name"]: t["universe"] for t in live} == {t.name: "new" for t in system.tasks
                                                      if t.state.value != "dead" and t.tid != 0}
    universes = universe_bytes(system)
    idle = universes.pop(0)
    assert set(universes.values()) == {1}
    assert report["tasks"][0]["universe"] == ("new" if idle else "old")
    assert report["interrupts"]["migrated_by"] == "irq-exit"
    assert report["patches"] == [{
        "name": NAME, "module": "kgr_capable.o", "state": "complete",
        "started_at": patch.started_at, "completed_at": patch.completed_at,
        "functions": [{"old": "capable", "new": "kgr_new_capable"}], "skipped": [], "replace_all": False,
        "replaced_by": None, "forced": False, "reason": None}]
    assert patch.started_at < patch.completed_at
    assert system.ftrace.state(system.image.pad("capable").address)[0] == PadState.JMP


def test_every_task_moves_at_its_own_kind_of_safe_point():
    system, patch = completed(CAPABLE)
    report = system.report()
    by = {t["name"]: t["migrated_by"] for t in report["tasks"] if t["state"] != "dead"}
    # a user task leaves the kernel by a system call's exit or by an
    # interrupt's return to user mode, whichever comes first after the start
    assert by.pop("cat-cmdline") in ("syscall-exit", "irq-exit-to-user")
    assert by == {
        "swapper/0": None,            # the idle task is not waited for
        "cap-user": "syscall-exit",
        "pipe-reader": "fake-signal",
        "kfreezerd": "freezer",
        "kannotated": "kgr-task-safe",
        "kworker/stats": "kthread-worker",
        "kmodloader": "kgr-task-safe",
    }
    for t in report["tasks"][1:]:
        if t["state"] == "dead":
            continue
        assert patch.started_at <= t["migrated_at"] <= patch.completed_at
    irq = [e for e in migrations(system) if e.tid == -1]
    assert [(e.by, e.universe) for e in irq] == [("irq-exit", 1)]


def test_while_the_transition_runs_the_pending_tasks_are_in_the_old_universe_in_guest_memory():
    system, patch = patched(CAPABLE)
    only_the_sleeper_pending(system)
    reader = system.task("pipe-reader")
    universes = universe_bytes(system)
    assert universes.pop(reader.tid) == 0
    universes.pop(0)            # the idle task: only its own loop moves it
    assert set(universes.values()) == {1}
    assert system.report()["transition"]["pending"] == [
        {"tid": reader.tid, "name": "pipe-reader", "sleeps_in": "pipe_wait_readable"}]
    assert patch.state == PatchState.TRANSITION


def test_no_task_runs_the_new_function_before_it_moved_nor_the_old_one_after():
    """kGraft's per-task consistency, checked on every call of capable() by
    eight hammer tasks, schedule after schedule until a call of the old
    capable() was caught inside a transition (a task preempted in its system
    call when the transition began)."""
    old_during, new_during, schedules = 0, 0, 0
    for seed in range(20):
        system = boot(workload="hammer", cmdline="nr_hammer=8", seed=seed, signal_after=300_000)
        system.run(PATCH_AT + 7919 * seed)
        old = body_entries(system, "capable")
        patch = system.apply_patch(CAPABLE)
        new = []
        system.ftrace.register_tracer("kgr_new_capable", new.append)
        system.run_until_patched(LIMIT)
        assert patch.state == PatchState.COMPLETE
        moved = {e.tid: e.at for e in migrations(system)}
        start, end = patch.started_at, patch.completed_at
        for at, tid, _ in old:
            if at >= start:
                assert at < end and tid in moved and at < moved[tid], (seed, at, tid)
                old_during += 1
        for call in new:
            assert call.tid in moved and moved[call.tid] < call.at, (seed, call)
            new_during += call.at < end
        schedules += 1
        if schedules >= 3 and old_during and new_during:
            break
    assert old_during > 0 and new_during > 0, "both universes were seen during the transitions"


# ---- refusals ----

def test_a_patch_loaded_during_a_transition_is_refused_and_nothing_changes():
    system, first = patched(CAPABLE)
    only_the_sleeper_pending(system)
    pads, universes = pad_bytes(system), universe_bytes(system)
    since = len(system.events)
    with pytest.raises(LivepatchError, match="still in progress"):
        system.apply_patch(CMDLINE)
    refused = system.patches[-1]
    assert refused.name == "livepatch_sample" and refused.state == PatchState.REFUSED
    assert "sample_kgraft_patch" in refused.reason
    assert pad_bytes(system) == pads
    assert universe_bytes(system) == universes
    assert system.transition.patch is first and first.state == PatchState.TRANSITION
    assert livepatch_lines(system, since) == [
        "livepatch: 'livepatch_sample': refused: the transition of 'sample_kgraft_patch' is still in progress"]
    assert not refused.module.loaded


def test_the_same_patch_applied_twice_is_refused_the_second_time():
    system, first = completed(CAPABLE)
    pads = pad_bytes(system)
    with pytest.raises(LivepatchError, match="already applied"):
        system.apply_patch(CAPABLE)
    assert [p.state for p in system.patches] == [PatchState.COMPLETE, PatchState.REFUSED]
    assert pad_bytes(system) == pads


def test_a_refused_duplicate_does_not_hide_the_applied_patch_from_revert():
    system, first = completed(CAPABLE)
    with pytest.raises(LivepatchError):
        system.apply_patch(CAPABLE)
    system.revert(NAME)
    system.run_until_patched(LIMIT)
    assert first.state == PatchState.REVERTED


@gcc_test
def test_a_refused_patchs_init_runs_to_its_end_and_the_loader_survives(build_patch):
    system, first = patched(CAPABLE, signal_after=1_000_000)
    only_the_sleeper_pending(system)
    with pytest.raises(LivepatchError, match="still in progress"):
        system.apply_patch(build_patch("kgr_init_reports"))
    system.run(300_000)
    assert system.report()["oopses"] == []
    assert "kgr_init_reports: kgr_patch_kernel() returned -16" in system.console
    system.run_until_patched(LIMIT)
    assert system.apply_patch(CMDLINE).state == PatchState.TRANSITION


def test_operations_that_need_a_transition_or_a_patch_are_refused_with_a_reason():
    system = boot()
    system.run(PATCH_AT)
    with pytest.raises(LivepatchError, match="no transition is in progress"):
        system.force()
    with pytest.raises(LivepatchError, match="no transition is in progress"):
        system.send_fake_signals()
    with pytest.raises(LivepatchError, match="no patch 'nope'"):
        system.revert("nope")
    patch = system.apply_patch(CAPABLE)
    only_the_sleeper_pending(system)
    with pytest.raises(LivepatchError, match="sample_kgraft_patch"):
        system.apply_patch(CMDLINE)
    with pytest.raises(LivepatchError, match="in transition"):
        system.revert("livepatch_sample")
    assert patch.state == PatchState.TRANSITION and system.transition.patch is patch


# ---- replace, reverse, force ----

def test_a_replace_all_patch_replaces_the_one_before_it():
    system, v1 = completed(CAPABLE)
    v2 = system.apply_patch(CAPABLE_V2)
    system.run_until_patched(LIMIT)
    assert v2.state == PatchState.COMPLETE
    assert v1.state == PatchState.REVERTED and v1.replaced_by == "sample_kgraft_patch_v2"
    pad = system.image.pad("capable").address
    new = v2.module.symbols["kgr_new_capable_v2"].address
    assert system.ftrace.state(pad) == (PadState.JMP, new)
    assert system.ftrace.disassemble_pad(pad).text == f"jmp {new:#x}"
    system.run(300_000)
    assert "capable() patched again (v2)" in system.console
    # the replaced module is freed once nothing reaches it: its code is gone
    assert not v1.module.loaded
    assert system.machine.read(v1.module.base, v1.module.size) == bytes(v1.module.size) or \
        system.modules.module_at(v1.module.base) is not None
    assert [p["state"] for p in system.report()["patches"]] == ["reverted", "complete"]


def test_reversing_a_replace_leaves_the_older_patch_in_place():
    system, v1 = completed(CAPABLE)
    system.livepatch.signal_after = None
    v2 = system.apply_patch(CAPABLE_V2)
    only_the_sleeper_pending(system)
    system.revert(v2.name)
    system.run(SETTLE)
    system.send_fake_signals()
    system.run_until_patched(LIMIT)
    assert v2.state == PatchState.REVERTED and v2.replaced_by is None
    assert v1.state == PatchState.COMPLETE and v1.replaced_by is None
    pad = system.image.pad("capable").address
    assert system.ftrace.state(pad) == (PadState.JMP, v1.module.symbols["kgr_new_capable"].address)
    # and v1 can still be reverted as usual
    system.revert(v1.name)
    system.run(SETTLE)
    system.send_fake_signals()
    system.run_until_patched(LIMIT)
    assert v1.state == PatchState.REVERTED
    assert system.ftrace.read_pad(pad) == PAD_BYTES


@gcc_test
def test_a_second_patch_of_the_same_function_stacks_on_the_first_and_reverts_back_to_it(build_patch):
    system, first = completed(CAPABLE)
    second = system.apply_patch(build_patch("kgr_capable_stacked"))
    system.run_until_patched(LIMIT)
    pad = system.image.pad("capable").address
    stacked = second.module.symbols["kgr_stacked_capable"].address
    assert system.ftrace.state(pad) == (PadState.JMP, stacked)
    assert (first.state, second.state) == (PatchState.COMPLETE, PatchState.COMPLETE)
    system.run(200_000)
    assert "capable() patched on top" in system.console
    with pytest.raises(LivepatchError, match="patched again by 'kgr_capable_stacked'; revert that one first"):
        system.revert(first.name)
    system.revert(second.name)
    system.run_until_patched(LIMIT)
    assert system.ftrace.state(pad) == (PadState.JMP, first.module.symbols["kgr_new_capable"].address)
    calls = []
    system.ftrace.register_tracer("kgr_stacked_capable", calls.append)
    system.run(200_000)
    assert calls == []
    system.revert(first.name)
    system.run_until_patched(LIMIT)
    assert system.ftrace.read_pad(pad) == PAD_BYTES


def test_reverting_a_running_transition_moves_the_tasks_that_had_moved_back():
    system, patch = patched(CAPABLE)
    only_the_sleeper_pending(system)
    moved = {e.tid for e in migrations(system)}
    assert system.task("pipe-reader").tid not in moved
    since = len(system.events)
    system.revert(NAME)
    assert livepatch_lines(system, since) == [
        f"livepatch: '{NAME}': reversing transition from patching to unpatching",
        f"livepatch: '{NAME}': starting unpatching transition"]      # klp_reverse_transition() starts it again
    assert patch.state == PatchState.REVERTING
    system.run(SETTLE)
    # kmodloader had moved and now sleeps: the kthread needs the wake-up too
    assert [(t.name, where) for t, where in system.livepatch.pending()] == [("kmodloader", "kmodloader_fn")]
    system.send_fake_signals()
    system.run_until_patched(LIMIT)
    back = migrations(system, since)
    assert {e.tid for e in back} == moved
    assert all(e.universe == 0 for e in back)
    assert patch.state == PatchState.REVERTED
    assert patch_states(system, NAME) == ["transition", "reverting", "reverted"]
    assert livepatch_lines(system, since)[2:] == [
        f"livepatch: '{NAME}': completing unpatching transition",
        f"livepatch: '{NAME}': unpatching complete"]
    universes = universe_bytes(system)
    del universes[0]   # the idle task is not part of the transition
    assert set(universes.values()) == {0}
    assert system.ftrace.read_pad(system.image.pad("capable").address) == PAD_BYTES


def test_forcing_moves_the_sleeper_now_and_taints_the_kernel():
    system, patch = patched(CAPABLE)
    only_the_sleeper_pending(system)
    since = len(system.events)
    system.force()
    assert livepatch_lines(system, since) == [
        "livepatch: forcing remaining tasks to the patched state",
        f"livepatch: '{NAME}': completing patching transition",
        f"livepatch: '{NAME}': patching complete"]
    warning = next(e for e in system.events[since:] if isinstance(e, ev.Console))
    assert warning.level == 4
    report = system.report()
    assert report["taints"] == ["LIVEPATCH"]          # upstream has no taint for forcing
    assert patch.forced and report["patches"][0]["forced"] is True
    assert task_record(report, "pipe-reader")["migrated_by"] == "force"
    assert patch.state == PatchState.COMPLETE and system.transition is None
    assert [(e.tid, e.by) for e in migrations(system, since)] == [(system.task("pipe-reader").tid, "force")]


# ---- a reboot with patches ----

def test_a_patch_applied_at_boot_is_complete_before_the_first_task_runs():
    system = boot(patches=[CAPABLE])
    old_body = body_entries(system, "capable")
    system.run(until=lambda s: s.kernel.booted)
    kinds = [type(e) for e in system.events]
    assert ev.ContextSwitch not in kinds, "no task has run yet"
    assert [e.state for e in system.events if isinstance(e, ev.PatchEvent)] == ["transition", "complete"]
    assert livepatch_lines(system) == [
        f"livepatch: enabling patch '{NAME}'",
        f"livepatch: '{NAME}': initializing patching transition",
        f"livepatch: '{NAME}': starting patching transition",
        f"livepatch: '{NAME}': completing patching transition",
        f"livepatch: '{NAME}': patching complete"]
    patch = system.patches[0]
    assert patch.state == PatchState.COMPLETE and system.transition is None
    pad = system.image.pad("capable").address
    assert system.ftrace.disassemble_pad(pad).text == f"jmp {patch.module.symbols['kgr_new_capable'].address:#x}"
    system.run(500_000)
    report = system.report()
    for t in report["tasks"][1:]:
        if t["state"] == "dead":
            continue
        assert (t["universe"], t["migrated_by"]) == ("new", "boot"), t["name"]
    assert set(universe_bytes(system).values()) == {1}
    assert old_body == [], "the original capable() never ran"
    assert "we added a printk to capable()" in system.console
    assert report["signals"] == [] and report["patches"][0]["state"] == "complete"


# ---- reports ----

def test_a_task_sleeping_in_a_replacement_function_is_reported_sleeping_in_it():
    system, patch = completed(PIPE_WAIT)
    system.livepatch.signal_after = None
    system.run(300_000)
    system.revert("kgr_pipe_wait")
    system.run(SETTLE)
    pending = {t.name: where for t, where in system.livepatch.pending()}
    assert pending["pipe-reader"] is not None and "kgr_pipe_wait_readable" in pending["pipe-reader"]


# ---- the interrupt context and the idle task move at their own safe points ----

def test_the_transition_does_not_complete_while_the_interrupt_context_is_in_the_old_universe():
    system, patch = patched(CAPABLE)
    t = system.transition
    for task in t.pending():              # every task moved, the interrupt context not yet
        t.switch(task, "force", system.clock)
    assert t.pending() == [] and t.irq_universe() != t.target
    assert not t.complete()
    system.run(200_000)                   # the next interrupt exit moves it
    assert patch.state == PatchState.COMPLETE
    assert system.report()["interrupts"]["migrated_by"] == "irq-exit"


def test_the_idle_task_moves_in_its_own_idle_loop():
    system, patch = patched(CAPABLE, workload="quiet", signal_after=300_000)
    system.run_until_patched(LIMIT)
    idle = system.report()["tasks"][0]
    assert (idle["name"], idle["universe"], idle["migrated_by"]) == ("swapper/0", "new", "kgr-task-safe")
    assert patch.started_at <= idle["migrated_at"] <= patch.completed_at


def test_the_fake_signal_is_sent_once_per_interval_not_on_every_slice():
    # kunannotated never moves, so it is woken again every interval
    system, patch = patched(CAPABLE, workload="unannotated", signal_after=300_000)
    system.run(2_000_000)
    tid = system.task("kunannotated").tid
    kicks = [e.at for e in system.events if e.kind == "signal" and e.tid == tid]
    assert len(kicks) >= 3
    assert all(b - a >= 300_000 for a, b in zip(kicks, kicks[1:])), kicks


def test_force_moves_the_interrupt_context_too():
    system, patch = patched(CAPABLE)
    t = system.transition
    assert t.irq_universe() != t.target
    system.force()
    assert t.irq_universe() == t.target and patch.state == PatchState.COMPLETE


# ---- a module that comes while its patch's transition runs ----

JOIN = PATCHES / "test_modules" / "test_klp_join.o"            # busymod_work_func() and the module's handler
JOIN_MOD = PATCHES / "test_modules" / "test_klp_join_mod.o"    # a kprobe whose handler is join_mod_pre()
BUSY = PATCHES / "test_modules" / "test_klp_callbacks_busy.o"  # its worker sleeps in busymod_work_func()


def _check_ranges(system):
    """The ranges the guest's upstream transition work checks stacks against."""
    m, img = system.machine, system.image
    base = img.address("klp_check_ranges")
    return [(m.u64(base + 16 * i), m.u64(base + 16 * i + 8)) for i in range(m.u32(img.address("klp_nr_check_ranges")))]


@pytest.mark.parametrize("model", ["kgraft", "klp", "upstream"])
def test_a_module_loaded_during_its_patchs_transition_joins_it(model):
    """klp_module_coming() while the patch that replaces a function of the
    module is in transition: the function joins the transition, as
    upstream's func->transition (set for every object of the patch,
    loaded or not) and kGraft's slow stub for a loading module have it.
    Its pad calls the transition's trampoline (each task runs the version
    of its universe), the observer watches both versions, the checker's
    stack rule and the guest's stack check know it; once every task has
    moved, the pad jumps straight to the new version."""
    from lab.image import PAD_SIZE
    with boot(observe=True, model=model) as system:
        system.run(PATCH_AT)
        system.insmod(BUSY, {"sleep_secs": 10})        # holds the transition open while it sleeps
        system.insmod(JOIN)
        t = system.livepatch.transition
        assert t is not None and t.patch.name == "test_klp_join"
        system.insmod(JOIN_MOD)
        mod = next(m for m in system.modules.modules if m.name == "test_klp_join_mod" and m.loaded)
        pad = mod.symbols["join_mod_pre"].address
        new = system.modules.lookup("livepatch_join_mod_pre")
        assert system.livepatch.transition is t and t.funcs[pad] == (None, new)
        state, target = system.ftrace.state(pad)
        assert state is PadState.CALL and system.ftrace.is_trampoline(target)
        joined = [e for e in system.events if isinstance(e, ev.TransitionJoin)]
        assert [(e.patch, e.module) for e in joined] == [("test_klp_join", "test_klp_join_mod")]
        assert {"join_mod_pre", "livepatch_join_mod_pre"} <= {n.split(" [")[0] for n in joined[0].functions}
        if model == "upstream":      # the guest's stack check: the old handler's body is a range tasks leave
            assert any(lo <= pad + PAD_SIZE < hi for lo, hi in _check_ranges(system))
        system.run(SETTLE)
        calls = [e for e in system.events if isinstance(e, ev.FuncEntry) and e.function.startswith("join_mod_pre")]
        assert calls and all(e.patch == "test_klp_join" for e in calls)
        system.livepatch.signal_after = 200_000        # for the eternal sleeper; the busy worker sleeps its 10 s
        system.run_until_patched(8 * LIMIT)
        assert system.livepatch.transition is None and system.ftrace.state(pad) == (PadState.JMP, new)
        assert not system.violations()


def test_a_module_that_goes_during_the_transition_it_joined_leaves_it():
    with boot(observe=True) as system:
        system.run(PATCH_AT)
        system.insmod(BUSY, {"sleep_secs": 10})
        system.insmod(JOIN)
        system.insmod(JOIN_MOD)
        t = system.livepatch.transition
        mod = next(m for m in system.modules.modules if m.name == "test_klp_join_mod" and m.loaded)
        pad = mod.symbols["join_mod_pre"].address
        assert pad in t.funcs
        system.rmmod("test_klp_join_mod")
        system.run(SETTLE)
        assert system.livepatch.transition is t and pad not in t.funcs
        system.livepatch.signal_after = 200_000
        system.run_until_patched(8 * LIMIT)
        assert system.livepatch.transition is None and not system.violations()


@pytest.mark.parametrize("sleep_secs, applied", [(1, True), (10, False)])
def test_under_stop_machine_a_module_that_comes_before_the_stop_is_patched_with_it(sleep_secs, applied):
    """stop_machine() patches everything at once: a module that comes while
    the stop waits (its busy worker sleeps in a patched function) is
    patched at the stop with the rest, and not at all if the stop gives up."""
    with boot(observe=True, model="stop-machine") as system:
        system.run(PATCH_AT)
        system.insmod(BUSY, {"sleep_secs": sleep_secs})
        system.insmod(JOIN)
        system.insmod(JOIN_MOD)
        mod = next(m for m in system.modules.modules if m.name == "test_klp_join_mod" and m.loaded)
        pad = mod.symbols["join_mod_pre"].address
        assert system.ftrace.state(pad) == (PadState.NOP, None)        # the stop has not happened yet
        system.run_until_patched(8 * LIMIT)
        patch = next(p for p in system.patches if p.name == "test_klp_join")
        new = system.modules.lookup("livepatch_join_mod_pre")
        if applied:
            assert patch.state is PatchState.COMPLETE and system.ftrace.state(pad) == (PadState.JMP, new)
        else:
            assert patch.state is PatchState.FAILED and system.ftrace.state(pad) == (PadState.NOP, None)
        assert not system.violations()


def test_a_module_that_cannot_join_for_want_of_trampolines_stays_unpatched(monkeypatch):
    """The trampoline area runs out: the module's function keeps its pad,
    the patch is said to cover nothing of it, a warning names both, and
    the transition of the rest completes without a violation."""
    from lab.ftrace import FtraceError
    from lab.livepatch.core import Livepatch
    with boot(observe=True) as system:
        system.run(PATCH_AT)
        system.insmod(BUSY, {"sleep_secs": 1})
        system.insmod(JOIN)

        def full(self, funcs):
            raise FtraceError("no room for another trampoline")
        monkeypatch.setattr(Livepatch, "_trampolines", full)
        system.insmod(JOIN_MOD)
        mod = next(m for m in system.modules.modules if m.name == "test_klp_join_mod" and m.loaded)
        pad = mod.symbols["join_mod_pre"].address
        patch = next(p for p in system.patches if p.name == "test_klp_join")
        assert system.ftrace.state(pad) == (PadState.NOP, None) and pad not in system.livepatch.transition.funcs
        assert "join_mod_pre" not in {f.old_name for f in patch.functions()}
        assert any("failed to apply patch 'test_klp_join' to module 'test_klp_join_mod'" in line
                   for line in system.console)
        system.livepatch.signal_after = 200_000
        system.run_until_patched(8 * LIMIT)
        assert patch.state is PatchState.COMPLETE and system.ftrace.state(pad) == (PadState.NOP, None)
        assert not system.violations()
