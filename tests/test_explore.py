"""Exploring schedules (lab/explore/): schedules, probes, the plan, shrinking, `lab explore`, `lab run
--preempt-at`, Dask workers and the pytest plugin."""
import itertools
import json
import os
import pathlib
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import entry_points

import pytest

import lab
from lab import events as ev
from lab.errors import UsageError
from lab.explore import Instant, Outcome, Plan, Schedule, explore, run_schedule, shrink
from lab.explore import worker
from lab.explore.plan import choose_instants, schedules_after, systematic
from lab.explore.runner import LocalRunner
from lab.explore.shrink import simpler
from lab.snapshot import snapshot
from lab.trace import Trace

pytest_plugins = ["pytester"]

PATCHES = pathlib.Path(__file__).resolve().parent.parent / "patches"
BUNDLED = sorted(PATCHES.glob("*.o"))
PAIR = PATCHES / "kgr_proto_pair.o"
CAPABLE = PATCHES / "kgr_capable.o"
SLEEPER = PATCHES / "kgr_pipe_wait.o"
# a bounded exploration the suite can afford: three boots per model, the rest bounded preemptions and samples
SMALL = {"seeds": (0, 1, 2), "quanta": (20_000,), "patch_ats": (1_000_000,), "signal_afters": (200_000,)}


@pytest.fixture(scope="module", autouse=True)
def _close_cached_systems():
    """The systems this process booted to run schedules are kept for the next ones; not past this module."""
    yield
    worker.forget()


def _plan(patch, model="kgraft", **options):
    return Plan(str(patch), model=model, shown=str(patch), **options)


# ---- schedules ----

def test_a_schedules_forced_preemptions_are_kept_in_order_and_once():
    s = Schedule(preemptions=(1_300_000, 1_100_000, 1_300_000))
    assert s.preemptions == (1_100_000, 1_300_000)
    assert s.replace(seed=4).preemptions == s.preemptions


@pytest.mark.parametrize("fields", [{"seed": -1}, {"quantum": 2.5}, {"signal_after": 0}, {"preemptions": ("x",)},
                                    {"preemptions": tuple(range(2_000_000, 2_000_065))}])
def test_a_schedule_refuses_what_is_not_an_instruction_count(fields):
    with pytest.raises(UsageError):
        Schedule(**fields)


def test_a_schedule_run_from_a_snapshot_ends_as_on_a_freshly_booted_system():
    schedule = Schedule(1, 20_000, 1_000_000, 200_000, (1_050_000,))
    fresh = run_schedule(None, schedule, SLEEPER, "kgraft")
    with lab.boot(observe=True, seed=1) as system:
        snap = snapshot(system)
        for _ in range(2):
            again = run_schedule(snap, schedule, SLEEPER, "kgraft")
            assert (again.digest, again.instructions, again.state) == (fresh.digest, fresh.instructions, "complete")


def test_a_system_booted_otherwise_than_the_schedule_says_is_refused():
    with lab.boot(observe=True, seed=2) as system:
        with pytest.raises(UsageError, match="seed 2"):
            run_schedule(system, Schedule(seed=1), CAPABLE, "kgraft")
    with lab.boot(observe=True, model="immediate") as system:
        with pytest.raises(UsageError, match="never sends"):
            run_schedule(system, Schedule(signal_after=100_000), CAPABLE, "immediate")


def test_a_probe_runs_the_schedule_as_it_is_and_names_the_instants_that_matter():
    schedule = Schedule(0, 20_000, 1_000_000, 200_000)
    plain = run_schedule(None, schedule, SLEEPER, "kgraft")
    probe = run_schedule(None, schedule, SLEEPER, "kgraft", probe=True)
    assert probe.digest == plain.digest and plain.instants == ()
    kinds = {i.kind for i in probe.instants}
    assert kinds == {"pad", "trampoline", "old", "new", "safe-point"}
    assert all(schedule.patch_at < i.at <= probe.instructions for i in probe.instants)
    assert len({i.at for i in probe.instants}) == len(probe.instants)
    pad = next(i for i in probe.instants if i.kind == "pad")
    assert pad.where == "pipe_wait_readable"


def test_under_an_instant_switch_the_probe_sees_the_old_functions_entered_before_it():
    probe = run_schedule(None, Schedule(0), PAIR, "immediate", probe=True)
    pads = [i for i in probe.instants if i.kind == "pad"]
    assert {i.where for i in pads} <= {"do_gethostname", "uts_copy_nodename"} and pads


# ---- the plan ----

def test_the_bases_are_every_combination_of_the_plans_lists_with_the_seeds_varying_fastest():
    plan = _plan(CAPABLE, seeds=(0, 5), quanta=(20_000, 7_000), patch_ats=(1_000_000,), signal_afters=(1, 2))
    bases = plan.bases()
    assert len(bases) == 8 and len(set(bases)) == 8
    assert [b.seed for b in bases[:4]] == [0, 5, 0, 5]
    assert {b.signal_after for b in _plan(CAPABLE, model="immediate").bases()} == {None}


def _probe_outcome(schedule, instants):
    return Outcome(schedule, (), "complete", True, None, None, "0" * 64, 3_000_000, tuple(instants))


def test_bounded_preemptions_are_every_set_of_at_most_k_of_the_first_m_instants_taken_in_turn_from_each_kind():
    base = Schedule()
    hot = [Instant(1_000_100 + 10 * i, "pad", "capable") for i in range(30)]
    rare = [Instant(1_500_000, "safe-point", "cap-user by syscall-exit"), Instant(1_600_000, "new", "capable")]
    chosen = choose_instants(hot + rare, 6)
    assert [i.kind for i in chosen].count("pad") == 4 and rare[0] in chosen and rare[1] in chosen
    got = list(systematic(_probe_outcome(base, hot + rare), 2, 6))
    assert len(got) == 6 + 15 and len(set(got)) == len(got)
    assert [len(s.preemptions) for s in got] == sorted(len(s.preemptions) for s in got)
    assert {p for s in got for p in s.preemptions} == {i.at for i in chosen}


def test_the_schedules_after_the_probes_fill_the_budget_and_depend_on_the_sample_seed_alone():
    probes = [_probe_outcome(Schedule(seed), [Instant(1_000_000 + 1000 * i + seed, "pad", "f") for i in range(10)])
              for seed in range(3)]
    plan = _plan(CAPABLE, schedules=43)
    systematic_, random_ = schedules_after(plan, probes)
    assert len(systematic_) + len(random_) == 40 and len(random_) == 10
    assert len(set(systematic_ + random_)) == 40
    assert {s.seed for s in systematic_} == {0, 1, 2}
    assert schedules_after(plan, probes) == (systematic_, random_)
    other = schedules_after(Plan(plan.patch, sample_seed=9, schedules=43), probes)
    assert other[0] == systematic_ and other[1] != random_
    assert schedules_after(_plan(CAPABLE, schedules=3), probes) == ([], [])


# ---- shrinking ----

def test_shrinking_proposes_only_simpler_schedules_and_ends():
    s = Schedule(3, 7_000, 1_234_567, 200_000, (1_300_000, 1_400_000, 1_500_000))
    steps = 0
    while True:
        options = simpler(s)
        if not options:
            break
        for o in options:
            assert (len(o.preemptions), o.patch_at != 1_000_000, o.signal_after is not None, o.seed != 0,
                    o.quantum != 20_000) != (len(s.preemptions), s.patch_at != 1_000_000, s.signal_after is not None,
                                             s.seed != 0, s.quantum != 20_000)
            assert len(o.preemptions) <= len(s.preemptions)
        s = options[-1]
        steps += 1
    assert s == Schedule(preemptions=()) and steps < 10


@pytest.fixture(scope="module")
def mixing():
    """The prototype pair under immediate, explored from seeds whose runs
    without a forced preemption are clean: a failure found there needed one."""
    clean = [seed for seed in range(12) if not run_schedule(None, Schedule(seed), PAIR, "immediate").failed]
    assert clean, "every seed mixes without a preemption; the test needs one that does not"
    plan = _plan(PAIR, "immediate", schedules=60, seeds=tuple(clean[:2]), quanta=(20_000,), patch_ats=(1_000_000,))
    return plan, explore(plan)


def test_a_failure_that_needs_a_forced_preemption_is_found_and_shrunk_to_the_ones_it_needs(mixing):
    plan, result = mixing
    assert not result.clean and result.first.schedule.preemptions
    minimal = result.minimal
    assert minimal.failed and minimal.signature() & result.first.signature()
    assert set(minimal.schedule.preemptions) <= set(result.first.schedule.preemptions)
    # minimal: taking away any forced preemption loses the failure
    runner = LocalRunner()
    for fewer in simpler(minimal.schedule):
        assert not (worker.run_one(plan, fewer).signature() & minimal.signature()), fewer
    again, runs = shrink(plan, runner, minimal)
    assert again.schedule == minimal.schedule and runs == len(simpler(minimal.schedule))


def test_an_unneeded_preemption_is_dropped_by_the_shrinker(mixing):
    plan, result = mixing
    first = result.first
    extra = first.schedule.replace(preemptions=first.schedule.preemptions + (first.instructions - 1000,))
    padded = worker.run_one(plan, extra)
    assert padded.failed
    minimal, _ = shrink(plan, LocalRunner(), padded)
    assert first.instructions - 1000 not in minimal.schedule.preemptions


# ---- the proof ----

def test_the_explorer_finds_the_prototype_pair_mixing_under_immediate_and_its_reproducer_shows_it(tmp_path, run_lab):
    result = explore(_plan(PAIR, "immediate", schedules=50), trace_dir=tmp_path)
    assert not result.clean
    v = result.minimal.violations[0]
    assert v["patch"] == "kgr_proto_pair" and set(v["old"] + v["new"]) <= {"do_gethostname", "uts_copy_nodename"}
    argv = shlex.split(result.reproducer)
    assert argv[:2] == ["lab", "run"] and "--instructions" in argv
    shown = run_lab(*argv[1:], "--json")
    assert shown.status == 1
    assert shown.json["violations"] == list(result.minimal.violations)
    assert shown.json["digest"] == result.minimal.digest
    trace = Trace.load(result.trace)
    assert trace.header["digest"] == result.minimal.digest
    assert any(isinstance(e, ev.FuncEntry) for e in trace.events)


@pytest.mark.parametrize("model", ["kgraft", "klp"])
@pytest.mark.parametrize("patch", BUNDLED, ids=lambda p: p.name)
def test_a_bounded_exploration_of_a_bundled_patch_under_kgraft_and_klp_finds_no_violation(patch, model):
    result = explore(_plan(patch, model, schedules=30, **SMALL))
    assert result.clean, result.reproducer
    assert (result.probes, result.schedules) == (3, 30)
    assert result.systematic > 0 and result.random > 0
    assert result.completed == 30 and result.panics == 0


def test_schedules_the_patch_could_not_be_applied_in_are_listed_with_a_line_that_shows_it(run_lab):
    refused = PATCHES / "bad" / "empty_patch.o"
    result = explore(_plan(refused, schedules=4, **SMALL))
    assert result.clean and result.refused == 4 == len(result.refusals)
    assert "no function to patch" in result.refusals[0].refused
    shown = run_lab(*shlex.split(result.refusal_reproducer)[1:])
    assert shown.status == 1 and "was refused by the kernel" in shown.err + shown.out


# ---- the command line ----

def test_lab_explore_exits_1_with_the_reproducer_a_trace_and_a_junit_failure(run_lab, tmp_path):
    junit = tmp_path / "explore.xml"
    res = run_lab("explore", "--patch", PAIR, "--model", "immediate", "--workers", "0", "--schedules", "40",
                  "--trace-dir", tmp_path / "traces", "--junit", junit)
    assert res.status == 1, res.err
    lines = res.out.splitlines()
    reproducer = next(line for line in lines if line.startswith("reproduce: "))
    assert reproducer.startswith(f"reproduce: lab run --patch {PAIR} --model immediate")
    assert any(line.startswith("trace: ") for line in lines)
    assert len(list((tmp_path / "traces").glob("*.trace"))) == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    (case,) = suite.findall("testcase")
    assert suite.get("failures") == "1" and case.get("name") == f"{PAIR} under immediate"
    assert reproducer[len("reproduce: "):] in case.find("failure").get("message")


def test_lab_explore_json_gives_schema_1_one_result_per_patch_and_model_and_exits_0_when_clean(run_lab, tmp_path):
    junit = tmp_path / "explore.xml"
    res = run_lab("explore", "--patch", CAPABLE, "--patch", SLEEPER, "--model", "kgraft", "--model", "klp",
                  "--workers", "1", "--schedules", "8", "--seeds", "0", "--quanta", "20000", "--patch-at", "1e6",
                  "--signal-after", "200000", "--json", "--junit", junit)
    assert res.status == 0, res.err
    doc = res.json
    assert doc["schema"] == 1 and doc["clean"] is True
    assert [(r["patch"], r["model"]) for r in doc["results"]] == \
        [(str(p), m) for p in (CAPABLE, SLEEPER) for m in ("kgraft", "klp")]
    r = doc["results"][0]
    assert r["schedules_run"] == 8 and r["violations"] == [] and r["reproducer"] is None
    assert r["figures"]["probes"] == 1 and r["figures"]["schedules"] == 8
    assert doc["figures"]["schedules"] == 32
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "4" and suite.get("failures") == "0"


@pytest.mark.parametrize("argv, words", [
    ((), ["needs --patch"]),
    (("--patch", CAPABLE, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"), ["conflict"]),
    (("--patch", CAPABLE, "--scheduler", "127.0.0.1:8786"), ["tcp://HOST:PORT"]),
    (("--patch", CAPABLE, "--model", "immediate", "--signal-after", "1e5"), ["--signal-after", "immediate"]),
    (("--patch", CAPABLE, "--seeds", "1,000,000"), ["--seeds 1,000,000", "given twice"]),
    (("--patch", CAPABLE, "--quanta", "500"), ["--quanta 500", "1,000 .. 10,000,000"]),
    (("--patch", CAPABLE, "--preemptions", "9"), ["--preemptions 9", "0 .. 8"]),
    (("--patch", CAPABLE, "--schedules", "0"), ["--schedules 0"]),
    (("--patch", CAPABLE, "--patch", CAPABLE), ["given twice"]),
    (("--patch", CAPABLE, "--model", "klp", "--model", "klp"), ["--model klp is given twice"]),
    (("--patch", CAPABLE, "--trace-dir", CAPABLE), ["--trace-dir", "not a directory"]),
    (("--patch", PATCHES / "missing.o"), ["no such patch object"]),
])
def test_lab_explore_refuses_a_bad_command_line_in_one_line_before_any_work(run_lab, argv, words):
    res = run_lab("explore", *argv)
    assert res.status == 2 and res.out == ""
    (line,) = res.err.splitlines()
    assert line.startswith("lab: error: ")
    for word in words:
        assert str(word) in line


def test_lab_explore_refuses_a_patch_instant_before_the_end_of_boot(run_lab):
    res = run_lab("explore", "--patch", CAPABLE, "--patch-at", "1000", "--workers", "0")
    assert res.status == 2 and res.err.startswith("lab: error: --patch-at 1,000 is not after the end of boot")


def test_lab_run_preempt_at_forces_a_preemption_at_that_instruction(run_lab, tmp_path):
    at = 700_000
    res = run_lab("run", "--instructions", "800000", "--preempt-at", f"{at},7.5e5", "--trace", tmp_path / "t.trace")
    assert res.status == 0, res.err
    forced = [e for e in Trace.load(tmp_path / "t.trace").events if isinstance(e, ev.Preemption)]
    # delivered there, or, while interrupts are off, retried about every 128
    # instructions (at irregular offsets, as the tick is) until they are on
    assert len(forced) == 2 and at <= forced[0].at < at + 20 * 256 and forced[1].at >= 750_000
    plain = run_lab("run", "--instructions", "800000", "--json").json["digest"]
    assert run_lab("run", "--instructions", "800000", "--preempt-at", str(at), "--json").json["digest"] != plain


@pytest.mark.parametrize("argv, words", [
    (("--preempt-at", "1,000,000"), ["--preempt-at 1,000,000", "without thousands separators"]),
    (("--preempt-at", "9e6"), ["not before the end of the run"]),
    (("--preempt-at", "1200000,1200000"), ["given twice"]),
    (("--preempt-at", "soon"), ["'soon'"]),
    (("--preempt-at", ""), ["empty"]),
    (("--preempt-at", ",".join(str(1_000_000 + i) for i in range(65))), ["at most 64"]),
])
def test_lab_run_refuses_a_bad_preempt_at_before_boot(run_lab, argv, words):
    res = run_lab("run", "--instructions", "2e6", *argv)
    assert res.status == 2, res.err
    (line,) = res.err.splitlines()
    for word in words:
        assert word in line


def test_lab_run_refuses_a_preemption_before_the_end_of_boot(run_lab):
    res = run_lab("run", "--preempt-at", "1000")
    assert res.status == 2 and "not after the end of boot" in res.err


# ---- Dask: a real scheduler and two worker processes ----

@pytest.fixture
def dask_cluster(tmp_path):
    """`dask scheduler` and two `dask worker` processes on localhost (the port chosen by the scheduler, found in
    its scheduler file); shut down through the scheduler at the end, and waited for."""
    dask = pathlib.Path(sys.executable).parent / "dask"
    if not dask.exists():
        pytest.skip("the dask command is not installed next to this Python")
    file = tmp_path / "scheduler.json"
    common = ["--scheduler-file", str(file), "--no-dashboard"]
    procs, client = [], None
    log = open(tmp_path / "dask.log", "w")
    try:
        procs.append(subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", "0", *common],
                                      stdout=log, stderr=log, cwd=tmp_path))
        for name in ("w1", "w2"):
            procs.append(subprocess.Popen([str(dask), "worker", "--nworkers", "1", "--nthreads", "1", "--name", name,
                                           "--host", "127.0.0.1", *common], stdout=log, stderr=log, cwd=tmp_path))
        from dask.distributed import Client
        client = Client(scheduler_file=str(file), timeout="60s")
        client.wait_for_workers(2, timeout=120)
        yield client
    finally:
        if client is not None:
            client.shutdown()      # the scheduler and its workers close at once
        for p in procs:
            try:
                p.wait(timeout=30 if client is not None else 0.1)
            except subprocess.TimeoutExpired:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        log.close()


@pytest.mark.slow
def test_exploring_on_a_dask_scheduler_with_two_worker_processes_gives_the_in_process_verdict(dask_cluster, run_lab):
    address = dask_cluster.scheduler.address
    # --all: every failing schedule is listed, in the plan's order, whatever order the workers finished in
    args = ["explore", "--patch", PAIR, "--model", "immediate", "--model", "kgraft", "--schedules", "24", "--all",
            "--seeds", "0,1,2,3", "--quanta", "20000", "--patch-at", "1e6", "--signal-after", "2e5", "--json"]
    there = run_lab(*args, "--scheduler", address)
    here = run_lab(*args, "--workers", "0")
    assert there.status == here.status == 1, there.err

    def verdict(doc):
        return [{k: v for k, v in r.items() if k != "figures"} for r in doc["results"]]
    assert verdict(there.json) == verdict(here.json)
    assert [r["figures"]["workers"] for r in there.json["results"]] == [2, 2]
    done = dask_cluster.run(lambda: dict(worker.stats))
    assert len(done) == 2
    for stats in done.values():      # both worked, and each booted far less often than it ran a schedule
        assert 0 < stats["boots"] < stats["schedules"]


# ---- the pytest plugin ----

def test_the_plugin_is_registered_as_a_pytest11_entry_point():
    assert "lab.pytest_plugin" in [e.value for e in entry_points(group="pytest11") if e.name == "lab"]


def test_the_lab_explore_fixture_passes_a_clean_patch_and_fails_a_mixing_one_with_its_reproducer(pytester):
    pytester.makepyfile(f"""
        def test_capable_is_consistent(lab_explore):
            result = lab_explore({str(CAPABLE)!r}, schedules=6, seeds=(0,), quanta=(20000,),
                                 patch_ats=(1000000,), signal_afters=(200000,))
            assert result.clean, result.reproducer
            assert result.schedules == 6

        def test_proto_pair_is_consistent_under_immediate(lab_explore):
            result = lab_explore({str(PAIR)!r}, model="immediate", schedules=40)
            assert result.clean, result.reproducer
    """)
    # the inner session runs in this process: without the snapshot plugin,
    # which would take over (and at its end remove) this session's directory
    res = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:textual-snapshot")
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines([f"*AssertionError: lab run --patch {PAIR} --model immediate *--instructions *"])


# ---- the planted problem: the stale-trampoline race, with the grace period undone ----

def _stacked_plan():
    return Plan(str(CAPABLE), then=(str(PATCHES / "kgr_capable_v2.o"),), model="kgraft",
                seeds=(0,), quanta=(20_000,), patch_ats=(1_000_000,), signal_afters=(200_000,),
                schedules=80, preemptions=1, instants=60, shown=str(CAPABLE))


def test_with_the_grace_period_undone_the_explorer_finds_the_stale_trampoline_race(monkeypatch):
    """A task preempted at the first instruction of patch A's trampoline,
    resumed after A completed and a stacked B started, decides with B's
    meaning of its universe flag in A's trampoline and runs the original
    body.  Without the grace period the explorer finds it by itself, shrinks
    it, and the `lab run` line it prints shows the same stale entry."""
    from lab.cli import main
    from livepatch_helpers import without_grace_period
    without_grace_period(monkeypatch)
    result = explore(_stacked_plan(), LocalRunner())
    assert not result.clean
    (v,) = [v for v in result.minimal.violations if v["rule"] == "stale"][:1]
    assert (v["task"], v["patch"]) == ("cap-user", "sample_kgraft_patch")
    assert len(result.minimal.schedule.preemptions) == 1
    argv = shlex.split(result.reproducer)
    assert argv[:2] == ["lab", "run"] and argv.count("--patch") == 2
    assert main(argv[1:] + ["--json"]) == 1


def test_with_the_grace_period_the_same_schedules_are_clean():
    result = explore(_stacked_plan(), LocalRunner())
    assert result.clean, result.reproducer


@pytest.mark.parametrize("patch, model", [(CAPABLE, "kgraft"), (SLEEPER, "klp"), (PAIR, "immediate")])
def test_a_schedule_started_after_the_shared_load_ends_as_the_whole_run_does(patch, model):
    """The worker shares a patch's load between schedules that differ only
    after it (a snapshot right after apply_patch); each must end exactly as
    when run from the patch instant: the same digest, verdict and end."""
    plan = _plan(patch, model, schedules=40, seeds=(0,), quanta=(20_000,), patch_ats=(1_000_000,),
                 signal_afters=(200_000,) if model != "immediate" else None)
    probe = worker.run_one(plan, plan.bases()[0], probe=True)
    systematic_, randomly = schedules_after(plan, [probe])
    schedules = (systematic_ + randomly)[:30]
    worker.forget()
    loads = worker.stats["loads"]
    shared = [worker.run_one(plan, s) for s in schedules]
    assert worker.stats["loads"] > loads          # the shared load was taken...
    entry = worker._booted(plan, schedules[0])
    assert any(post is not None for post, _gap in entry.loads.values())
    whole = []
    for s in schedules:
        start = worker._start(entry, s)
        whole.append(run_schedule(start, s, plan.stack, plan.model, plan.limit, tail=plan.tail))
    for a, b in zip(shared, whole):
        assert a.to_dict() == b.to_dict(), a.schedule
    if model == "immediate":
        assert any(o.violations for o in whole)
    worker.forget()
