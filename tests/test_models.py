"""The consistency models side by side, and the checker: what each model
promises must hold on every schedule (tests/test_models.py mirrors
lab/livepatch/core.py's models and lab/checker.py)."""
import pathlib
import xml.etree.ElementTree as ET

import pytest

import lab
from lab import events as ev
from lab.checker import check
from lab.compare import chart_svg, compare, run_model
from lab.livepatch import PatchState

PATCHES = pathlib.Path(__file__).resolve().parent.parent / "patches"
# every bundled patch but the cumulative v2, which test_livepatch covers with its predecessor
BUNDLED = sorted(p.name for p in PATCHES.glob("*.o") if p.name != "kgr_capable_v2.o")
PAIR = PATCHES / "kgr_proto_pair.o"
SLEEPER = PATCHES / "kgr_pipe_wait.o"
SEEDS = range(50)


# ---- the checker on hand-made event streams ----

def _call(seq, at, tid, version, irq=False, fn="f"):
    return ev.FuncEntry(seq=seq, at=at, tid=tid, in_irq=irq, function=fn, version=version, patch="p")


def test_a_system_call_that_runs_old_and_new_code_of_one_patch_is_a_violation():
    events = [ev.SyscallEntry(seq=0, at=10, tid=1, nr=13), _call(1, 20, 1, "old", fn="caller"),
              _call(2, 30, 1, "new", fn="callee"), ev.SyscallEntry(seq=3, at=40, tid=1, nr=13)]
    (v,) = check(events)
    assert (v.tid, v.unit, v.start, v.end, v.patch, v.first_mixed_at) == (1, "syscall", 10, 40, "p", 30)
    assert v.to_dict({1: "cap-user"})["old"] == ["caller"] and v.to_dict()["new"] == ["callee"]


def test_old_and_new_code_in_different_system_calls_is_consistent():
    events = [ev.SyscallEntry(seq=0, at=10, tid=1, nr=13), _call(1, 20, 1, "old"),
              ev.SyscallEntry(seq=2, at=40, tid=1, nr=13), _call(3, 50, 1, "new")]
    assert check(events) == []


def test_an_interrupt_is_a_unit_of_its_own_and_does_not_mix_with_the_task_it_interrupted():
    events = [ev.SyscallEntry(seq=0, at=10, tid=1, nr=13), _call(1, 20, 1, "old"),
              ev.Interrupt(seq=2, at=25, tid=1, user=False, rip=0), _call(3, 26, 1, "new", irq=True),
              ev.Interrupt(seq=4, at=60, tid=1, user=False, rip=0), _call(5, 61, 1, "old", irq=True)]
    assert check(events) == []
    mixed = events[:4] + [_call(5, 30, 1, "old", irq=True)]
    (v,) = check(mixed)
    assert (v.tid, v.unit) == (-1, "irq")


def test_a_kernel_thread_iteration_is_the_unit_between_two_passes_of_its_loop_top():
    events = [ev.KthreadLoop(seq=0, at=5, tid=4, where="try_to_freeze"), _call(1, 6, 4, "old"),
              ev.KthreadLoop(seq=2, at=9, tid=4, where="try_to_freeze"), _call(3, 10, 4, "new"),
              _call(4, 11, 4, "old")]
    (v,) = check(events)
    assert (v.tid, v.unit, v.start, v.end) == (4, "kthread", 9, None)


# ---- the demonstrations ----

def test_the_prototype_change_under_immediate_mixes_and_the_user_sees_it():
    mixed = 0
    for seed in range(6):
        row = run_model(PAIR, "immediate", seed=seed)
        visible = bool(row["user_visible"])
        assert visible == (row["violations"] > 0), (seed, row)
        mixed += visible
    assert mixed > 0


def test_the_sleepers_function_stops_stop_machine_but_not_kgraft():
    rows = {r["model"]: r for r in compare(SLEEPER)}
    sm = rows["stop-machine"]
    assert not sm["completed"] and sm["state"] == "failed"
    assert "gave up after 5 attempts: pipe-reader:3 is sleeping on function pipe_wait_readable" == sm["why_not"]
    assert sm["stopped_instructions"] > 0 and sm["stop_attempts"] == 5
    kg = rows["kgraft"]
    assert kg["completed"] and kg["moved_by_fake_signal"] == 1 and kg["violations"] == 0
    assert kg["stopped_instructions"] == 0


def test_under_kgraft_no_task_is_ever_stopped():
    """kGraft's point: nothing stands still.  The stop IPI's handler never
    runs, and every user task that can run makes system calls throughout the
    transition; under stop-machine the same handler runs and stops them all."""
    for model, expect_stops in (("kgraft", False), ("stop-machine", True)):
        with lab.boot(seed=3, model=model, signal_after=400_000 if model == "kgraft" else None) as system:
            stops = []
            system.machine.add_code_hook(system.image.address("do_stop_cpu"), lambda _a: stops.append(system.clock))
            system.run(1_000_000)
            system.apply_patch(PATCHES / "kgr_capable.o")
            start = system.clock
            calls = {t.name: t.syscalls for t in system.tasks if t.kind == "user"}
            system.run_until_patched(6_000_000)
            system.run(100_000)       # a stop IPI delivered at the switch runs after it
            assert system.livepatch.busy is None
            assert bool(stops) == expect_stops, model
            if not expect_stops:
                for name in ("cap-user", "cat-cmdline"):
                    assert system.task(name).syscalls > calls[name], (model, name)
                assert system.clock > start


def test_klp_moves_the_unannotated_kthread_that_kgraft_never_moves():
    kg = run_model(PATCHES / "kgr_capable.o", "kgraft", workload="unannotated", limit=6_000_000)
    klp = run_model(PATCHES / "kgr_capable.o", "klp", workload="unannotated", limit=6_000_000)
    assert not kg["completed"] and "kunannotated in kunannotated_fn" in kg["why_not"]
    assert klp["completed"] and klp["violations"] == 0


def test_lab_compare_draws_one_group_of_bars_per_model():
    rows = compare(SLEEPER, models=("kgraft", "stop-machine"))
    root = ET.fromstring(chart_svg(rows))
    bars = [e for e in root.iter() if e.get("class") == "bar"]
    assert {b.get("data-model") for b in bars} == {"kgraft", "stop-machine"}
    assert {b.get("data-metric") for b in bars} == {"instructions_to_complete", "stopped_instructions",
                                                     "violations"}


def test_lab_run_exits_1_and_names_the_violation(tmp_path):
    from lab.cli import main
    import contextlib
    import io
    import json
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["run", "--model", "immediate", "--patch", str(PAIR), "--seed", "1",
                       "--instructions", "4e6", "--json"])
    report = json.loads(out.getvalue())
    assert status == 1 and report["model"] == "immediate"
    v = report["violations"][0]
    assert (v["task"], v["unit"], v["old"], v["new"]) == ("cap-user", "syscall", ["do_gethostname"],
                                                          ["uts_copy_nodename"])


# ---- the schedule matters: every bundled patch, every model, 50 seeds ----

@pytest.mark.slow
@pytest.mark.parametrize("patch", BUNDLED)
def test_the_checkers_verdicts_stay_what_the_models_promise_over_50_seeds(patch):
    mixes = {}
    for model in ("kgraft", "klp", "stop-machine", "immediate"):
        for seed in SEEDS:
            system = lab.boot(seed=seed, model=model, observe=True,
                              signal_after=400_000 if model in ("kgraft", "klp") else None)
            system.run(300_000)
            p = system.apply_patch(PATCHES / patch)
            system.run_until_patched(3_000_000)
            system.run(200_000)
            violations = system.violations()
            where = (patch, model, seed)
            if model in ("kgraft", "klp"):
                assert p.state == PatchState.COMPLETE and violations == [], where
            elif model == "stop-machine":
                # consistent whenever it switches; the sleeper's function makes it give up
                assert violations == [], where
                # (a caller that holds a patched function long can make it give up too)
                expected = {PatchState.FAILED} if patch == "kgr_pipe_wait.o" else \
                    {PatchState.COMPLETE, PatchState.FAILED}
                assert p.state in expected and system.livepatch.busy is None, where
            else:
                # immediate promises nothing: only the prototype pair can go wrong,
                # and whenever the user sees it the checker names a mixed unit (a
                # unit can mix without the user noticing: old and new copies of
                # the same function, each with its own callee)
                seen = any("mismatch" in line for line in system.console)
                mixed = [v for v in violations if v.rule == "mixed"]
                assert p.state == PatchState.COMPLETE, where
                if patch == PAIR.name:
                    assert mixed or not seen, where
                    mixes[patch] = mixes.get(patch, 0) + seen
                else:
                    assert not seen and not mixed, where
            system.close()
    if patch == PAIR.name:
        assert mixes.get(patch, 0) > 0, "the user never saw immediate mix the prototype pair in 50 seeds"
