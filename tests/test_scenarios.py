"""Live patching scenarios end to end, each with an exact expected outcome:
the eternal sleeper and the fake signal, the unannotated kthread, the
interrupt context's own universe, a prototype change that must never be
mixed, many tasks hammering a patched system call, bad inputs, the command
line, determinism."""
import collections
import json

import pytest

from lab import events as ev
from lab.livepatch import LivepatchError, PatchState
from lab.modules import ModuleError

from livepatch_helpers import build_patch  # noqa: F401  (the fixture)
from livepatch_helpers import (CAPABLE, CMDLINE, LIMIT, PATCH_AT, PIPE_WAIT, PROTO_PAIR, SETTLE, boot, body_entries,
                               completed, console_of, gcc_test, livepatch_lines, migrations, module_area, pad_bytes,
                               patched, run_cli, task_record, universe_bytes)

SIGUSR2 = 12
EINTR = 4


# ---- the eternal sleeper ----

def reader_lines(system):
    reader = system.task("pipe-reader")
    prefix = f"pipe-reader[{reader.tid}]: "
    return [text for text in console_of(system, reader.tid) if text.startswith(prefix)]


def test_the_sleeper_holds_the_transition_until_the_fake_signal_and_its_read_never_notices():
    signal_at = 3_000_000
    # the same program, unpatched, for comparison
    plain = boot()
    plain.run(signal_at)
    plain.send_signal("pipe-reader", SIGUSR2)
    plain.run(500_000)

    system, patch = patched(PIPE_WAIT)
    reader = system.task("pipe-reader")
    for _ in range(2):   # as long as one waits, only the sleeper is missing
        system.run(SETTLE)
        assert [(t.name, where) for t, where in system.livepatch.pending()] == [("pipe-reader", "pipe_wait_readable")]
        assert patch.state == PatchState.TRANSITION
    since = len(system.events)
    assert system.send_fake_signals() == [reader.tid]
    system.run_until_patched(LIMIT)
    assert patch.state == PatchState.COMPLETE
    signals = [e for e in system.events[since:] if isinstance(e, ev.Signal)]
    assert [(e.tid, e.sig, e.fake) for e in signals] == [(reader.tid, 0, True)]
    assert [(e.tid, e.by) for e in migrations(system, since)] == [(reader.tid, "fake-signal")]
    assert task_record(system.report(), "pipe-reader")["migrated_by"] == "fake-signal"
    # its restarted read() now waits in the new pipe_wait_readable()
    assert "kgr_pipe_wait: pipe-reader[3] waits in the patched pipe_wait_readable()" in console_of(system, reader.tid)
    assert reader.state.value == "sleeping"

    assert system.clock < signal_at
    system.run(signal_at - system.clock)
    system.send_signal("pipe-reader", SIGUSR2)
    system.run(500_000)
    expected = [f"pipe-reader[3]: caught signal {SIGUSR2}", f"pipe-reader[3]: read returned -{EINTR}"]
    assert reader_lines(plain) == expected
    assert reader_lines(system) == expected, "the fake signal restarted the read without a trace"


# ---- the unannotated kernel thread ----

def test_an_unannotated_kthread_keeps_the_transition_open_even_with_fake_signals():
    system, patch = patched(CAPABLE, workload="unannotated", signal_after=500_000)
    system.run(5_000_000)
    assert patch.state == PatchState.TRANSITION and system.transition is not None
    report = system.report()
    kun = system.task("kunannotated")
    assert report["transition"]["pending"] == [{"tid": kun.tid, "name": "kunannotated", "sleeps_in": "kunannotated_fn"}]
    wakeups = [e for e in report["signals"] if e["tid"] == kun.tid]
    assert len(wakeups) >= 5 and not any(e["fake"] for e in wakeups), "kthreads get plain wake-ups"
    by = {t["name"]: (t["universe"], t["migrated_by"]) for t in report["tasks"]}
    assert by["kunannotated"] == ("old", None)
    assert by["kannotated"] == ("new", "kgr-task-safe")
    assert by["kfreezerd"] == ("new", "freezer")
    assert by["kworker/stats"] == ("new", "kthread-worker")
    assert by["pipe-reader"] == ("new", "fake-signal")
    assert report["interrupts"]["migrated_by"] == "irq-exit"
    # only force ends it
    system.force()
    assert patch.state == PatchState.COMPLETE
    assert task_record(system.report(), "kunannotated")["migrated_by"] == "force"


# ---- the interrupt context ----

def test_the_interrupt_context_moves_once_at_interrupt_exit_with_its_own_flag():
    system, patch = completed(CAPABLE)
    irq = [e for e in migrations(system) if e.tid == -1]
    assert [(e.by, e.universe) for e in irq] == [("irq-exit", 1)]
    interrupts = [e for e in system.events if isinstance(e, ev.Interrupt) and e.at <= irq[0].at]
    assert interrupts and patch.started_at <= interrupts[-1].at, "it moved on the way out of an interrupt"
    assert system.report()["interrupts"] == {"migrated_at": irq[0].at, "migrated_by": "irq-exit"}


@gcc_test
def test_code_run_by_the_timer_interrupt_follows_the_interrupts_universe_not_the_tasks(build_patch):
    system = boot(signal_after=300_000)
    system.run(PATCH_AT)
    old = body_entries(system, "timer_interrupt")
    patch = system.apply_patch(build_patch("kgr_timer"))
    new = []
    system.ftrace.register_tracer("kgr_timer_interrupt", new.append)
    system.run_until_patched(LIMIT)
    assert patch.state == PatchState.COMPLETE
    moved = {e.tid: e.at for e in migrations(system)}
    irq_moved = moved[-1]
    old_during = [(at, tid) for at, tid, in_irq in old if at >= patch.started_at]
    assert all(in_irq for _, _, in_irq in old) and all(c.in_irq for c in new)
    assert all(at < irq_moved for at, _ in old_during)
    assert new and all(c.at > irq_moved for c in new)
    # a tick that hit a task already in the new universe still ran the old code
    assert any(tid in moved and moved[tid] < at for at, tid in old_during)
    system.run(200_000)
    assert len(old) == len([x for x in old if x[0] < irq_moved])


# ---- a prototype change: never mixed ----

def gethostname_pairs(seed):
    """Run the proto pair patch on one schedule; per task, the versions of
    each (do_gethostname, uts_copy_nodename) pair, told apart by whether the
    replacement was entered right after the kernel function's pad."""
    system = boot(seed=seed, signal_after=500_000)
    seq = collections.defaultdict(list)
    record = lambda call: seq[call.tid].append((call.function, call.at))  # noqa: E731
    system.ftrace.register_tracer("do_gethostname", record)
    system.ftrace.register_tracer("uts_copy_nodename", record)
    system.run(PATCH_AT + 7919 * seed)
    patch = system.apply_patch(PROTO_PAIR)
    assert system.clock == patch.started_at, "no instruction ran before the new functions are traced"
    system.ftrace.register_tracer("kgr_do_gethostname", record)
    system.ftrace.register_tracer("kgr_uts_copy_nodename", record)
    system.run_until_patched(LIMIT)
    system.run(200_000)
    assert patch.state == PatchState.COMPLETE
    pairs = []
    for tid, calls in seq.items():
        caller, i = None, 0
        while i < len(calls):
            function, at = calls[i]
            nxt = calls[i + 1][0] if i + 1 < len(calls) else None
            assert function in ("do_gethostname", "uts_copy_nodename"), (tid, calls[i - 1:i + 2])
            new = nxt == "kgr_" + function
            if function == "do_gethostname":
                caller = ("new" if new else "old", at)
            else:
                assert caller is not None, "a callee without a caller"
                pairs.append((tid, caller[0], "new" if new else "old", caller[1], at))
            i += 2 if new else 1
    return system, patch, pairs


def test_the_prototype_changing_pair_is_never_mixed_on_any_schedule():
    straddling = 0
    for seed in range(10):
        system, patch, pairs = gethostname_pairs(seed)
        assert pairs
        for tid, caller, callee, caller_at, callee_at in pairs:
            assert caller == callee, f"seed {seed}: task {tid} ran an {caller} caller with an {callee} callee"
            straddling += caller_at < patch.started_at < callee_at
        versions = [caller for tid, caller, *_ in pairs]
        assert versions == sorted(versions, key=lambda v: v == "new"), "a task never goes back to old"
        assert not any("hostname mismatch" in line for line in system.console)
        assert not system.report()["oopses"]
    assert straddling > 0, "on some schedule a call was in flight when the transition began"


# ---- many tasks hammering a patched system call ----

def test_eight_tasks_hammering_sethostname_all_move_on_their_way_back_to_user_mode():
    system, patch = patched(CAPABLE, workload="hammer", cmdline="nr_hammer=8", signal_after=500_000)
    system.run_until_patched(LIMIT)
    assert patch.state == PatchState.COMPLETE
    report = system.report()
    hammers = [t for t in report["tasks"] if t["name"] == "hammer"]
    assert len(hammers) == 8
    # the guest tells the two ways back apart: most hammers are preempted in
    # user mode and move on the interrupt's return, the others at syscall exit
    ways = [t["migrated_by"] for t in hammers]
    assert {t["universe"] for t in hammers} == {"new"}
    assert set(ways) == {"syscall-exit", "irq-exit-to-user"}, ways
    assert task_record(report, "pipe-reader")["migrated_by"] == "fake-signal"
    assert task_record(report, "kfreezerd")["migrated_by"] == "freezer"
    assert not any("sethostname failed" in line for line in report["console"])


# ---- what user space sees ----

def test_cat_cmdline_sees_the_patched_proc_cmdline_and_the_original_after_revert():
    system, patch = completed(CMDLINE)
    system.run(300_000)
    cat = system.task("cat-cmdline")
    assert console_of(system, cat.tid)[-1] == "cat-cmdline[2]: /proc/cmdline: this has been live patched"
    system.revert("livepatch_sample")
    system.run_until_patched(LIMIT)
    system.run(300_000)
    lines = [t for t in console_of(system, cat.tid) if t.startswith("cat-cmdline[2]: ")]
    assert lines == ["cat-cmdline[2]: /proc/cmdline: workload=default",
                     "cat-cmdline[2]: /proc/cmdline: this has been live patched",
                     "cat-cmdline[2]: /proc/cmdline: workload=default"]


# ---- bad inputs: one clear error, nothing changed ----

def _truncated(tmp_path, _build):
    path = tmp_path / "truncated.o"
    path.write_bytes(CAPABLE.read_bytes()[:3000])
    return path


def _missing(tmp_path, _build):
    return tmp_path / "missing.o"


def _gcc(name):
    return lambda _tmp, build: build(name)


BAD_PATCHES = [
    pytest.param(_truncated, ModuleError, None, id="malformed-object"),
    pytest.param(_missing, ModuleError, None, id="missing-file"),
    pytest.param(_gcc("kgr_missing_abort"), LivepatchError, "function no_such_function not resolved",
                 id="missing-symbol-abort", marks=[pytest.mark.gcc]),
    pytest.param(_gcc("kgr_notrace"), LivepatchError, "schedule has no fentry pad (it is notrace)",
                 id="notrace-target", marks=[pytest.mark.gcc]),
    pytest.param(_gcc("kgr_init_fails"), LivepatchError, "init of kgr_init_fails returned -22",
                 id="init-fails", marks=[pytest.mark.gcc]),
]


@pytest.mark.parametrize("make, error, message", BAD_PATCHES)
def test_a_bad_patch_gives_one_clear_error_and_leaves_pads_and_universes_as_they_were(
        tmp_path, request, make, error, message):
    if request.node.get_closest_marker("gcc"):
        from livepatch_helpers import HAVE_GCC
        if not HAVE_GCC:
            pytest.skip("needs gcc and make to build a patch")
        build = request.getfixturevalue("build_patch")
    else:
        build = None
    path = make(tmp_path, build)
    system, applied = completed(CAPABLE)   # pads and universes that are not the boot ones
    pads, universes, ram = pad_bytes(system), universe_bytes(system), module_area(system)
    since = len(system.events)
    with pytest.raises(error) as info:
        system.apply_patch(path)
    if message:
        assert message in str(info.value)
        lines = livepatch_lines(system, since)
        assert len(lines) == 1 and message in lines[0]
        assert system.patches[-1].state in (PatchState.REFUSED, PatchState.FAILED)
        assert system.patches[-1].reason == str(info.value)
    else:
        assert path.name in str(info.value)
        assert livepatch_lines(system, since) == []
        assert system.patches == [applied]
    assert pad_bytes(system) == pads
    assert universe_bytes(system) == universes
    assert module_area(system) == ram
    assert system.transition is None and applied.state == PatchState.COMPLETE
    system.run(300_000)   # and the kernel runs on, untouched
    assert system.report()["oopses"] == [] and pad_bytes(system) == pads


@gcc_test
def test_a_missing_symbol_without_abort_is_skipped_with_a_warning_and_the_rest_applied(build_patch):
    system, patch = completed(build_patch("kgr_missing_skip"))
    assert livepatch_lines(system)[0] == \
        "livepatch: 'kgr_missing_skip': function no_such_function not resolved, skipping it"
    warning = next(e for e in system.events if isinstance(e, ev.Console) and "skipping" in e.text)
    assert warning.level == 4
    assert patch.description.skipped == ("no_such_function",)
    assert [f.old_name for f in patch.description.functions] == ["capable"]
    system.run(200_000)
    assert "kgr_missing_skip: capable() replaced" in system.console
    assert system.report()["patches"][0]["skipped"] == ["no_such_function"]


@pytest.mark.parametrize("bad", ["missing", "malformed"])
def test_lab_run_with_a_bad_patch_exits_2_with_one_error_line(capsys, tmp_path, bad):
    path = tmp_path / f"{bad}.o"
    if bad == "malformed":
        path.write_bytes(CAPABLE.read_bytes()[:3000])
    status, out, err = run_cli(capsys, "run", "--patch", path, "--instructions", "2000000")
    assert status == 2
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("lab: error:")]
    assert len(errors) == 1 and len(err.splitlines()) == 1
    assert path.name in errors[0]


# ---- the command line ----

def test_lab_demo_json_reports_the_whole_story(capsys):
    status, out, _ = run_cli(capsys, "demo", "--json")
    assert status == 0
    report = json.loads(out)
    assert [(p["name"], p["state"]) for p in report["patches"]] == [("sample_kgraft_patch", "complete")]
    assert report["transition"] is None
    assert {t["universe"] for t in report["tasks"] if t["state"] != "dead" and t["tid"] != 0} == {"new"}
    assert task_record(report, "pipe-reader")["migrated_by"] == "fake-signal"
    assert "we added a printk to capable()" in report["console"]
    assert "livepatch: 'sample_kgraft_patch': patching complete" in report["console"]


def test_lab_run_with_a_patch_gives_the_same_digest_twice(capsys):
    argv = ["run", "--patch", CAPABLE, "--patch-at", "1000000", "--signal-after", "1000000",
            "--instructions", "6000000", "--json"]
    first, second = (run_cli(capsys, *argv) for _ in range(2))
    assert first[0] == second[0] == 0
    a, b = json.loads(first[1]), json.loads(second[1])
    assert a["digest"] == b["digest"]
    assert a == b
    assert a["patches"][0]["state"] == "complete" and a["instructions"] == 6_000_000


# ---- determinism ----

def patched_run(seed):
    system, patch = patched(CAPABLE, seed=seed, signal_after=400_000)
    system.run_until_patched(LIMIT)
    system.revert(patch.name)
    system.run(1_500_000)
    return system


def test_two_identical_patched_runs_give_identical_events_and_digests():
    a, b = patched_run(3), patched_run(3)
    assert [e.to_dict() for e in a.events] == [e.to_dict() for e in b.events]
    assert a.digest == b.digest == a.report()["digest"]
    assert patched_run(4).digest != a.digest, "the digest depends on the run"


def test_the_demo_stamps_each_pad_line_when_the_pad_was_rewritten_and_says_states_in_words():
    from lab.demo import run_demo
    with run_demo(4_000_000) as system:
        story = system.story
    patch = system.patches[0]
    complete = next(at for at, text in story if text.startswith("transition complete"))
    started = next(at for at, text in story if text.startswith("transition started"))
    assert (started, complete) == (patch.started_at, patch.completed_at)
    assert [at for at, _ in story] == sorted(at for at, _ in story)
    assert not any("is now transition" in text for _, text in story)
    assert any(text.endswith("is applied: its transition is complete") for _, text in story)
