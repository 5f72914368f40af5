"""Upstream's livepatch selftests (tools/testing/selftests/livepatch/),
played on the lab's kernel (lab.selftest, lab.selftest_scenarios): every
scenario's kernel log must be the script's expected text, word for word.
The README's table maps each scenario to its test id here."""
from __future__ import annotations

import pytest

from lab.selftest import Selftest, SelftestError
from lab.selftest_scenarios import DEMO, LP, SCENARIOS, TARGET, run


def _id(entry):
    script, title, _fn = entry
    return f"{script.removesuffix('.sh')}:{title}"


@pytest.mark.parametrize("entry", SCENARIOS, ids=[_id(e) for e in SCENARIOS])
def test_upstream_selftest_scenario(entry):
    script, title, _fn = entry
    expected, result = run(script, title)
    assert result == expected


def test_a_scenario_fails_when_the_kernel_does_otherwise():
    """The harness notices a kernel that does not do what the script waits
    for: under kGraft's model the quiet workload's pipe-reader never moves,
    so the transition never completes (functions.sh's loop_until gives up)."""
    with pytest.raises(SelftestError, match="failed to complete transition"):
        run("test-livepatch.sh", "basic function patching", model="kgraft")


def test_the_comparison_sees_a_callback_that_did_not_run(st):
    """A patch whose pre-unpatch callback is gone (cleared in guest memory)
    logs no pre_unpatch lines: the script's text no longer matches."""
    from lab.selftest_scenarios import STATE, state_disable, state_enable
    st.load_lp(STATE)
    module = next(p.module for p in st.system.patches if p.module.name == STATE)
    objs = module.symbols["objs"].address
    st.system.machine.set_u64(objs + 8 + 8 + 2 * 8, 0)     # objs[0].callbacks.pre_unpatch
    st.disable_lp(STATE)
    assert st.result() != "\n".join([state_enable(STATE), state_disable(STATE)])
    assert "pre_unpatch_callback" not in st.result() and "post_unpatch_callback" in st.result()


@pytest.fixture
def st():
    with Selftest() as shell:
        yield shell


def test_sysfs_a_wrong_value_or_mode_is_refused(st):
    """Not in the script: what sysfs refuses, through the same files."""
    st.load_lp(LP)
    enabled = f"/sys/kernel/livepatch/{LP}/enabled"
    assert st.system.write_file(enabled, "1") == -22           # already enabled: -EINVAL
    assert st.system.write_file(enabled, "maybe") == -22
    assert st.system.write_file(f"/sys/kernel/livepatch/{LP}/transition", "1") == -13   # read-only: -EACCES
    assert st.system.write_file(f"/sys/kernel/livepatch/{LP}/force", "1") == -22   # no transition: -EINVAL
    with pytest.raises(Exception, match="Permission denied"):
        st.system.read_file(f"/sys/kernel/livepatch/{LP}/force")
    with pytest.raises(Exception, match="in use"):
        st.system.rmmod(LP)




def test_lab_selftest_plays_a_script_and_says_ok_per_scenario(capsys):
    from lab.cli import main
    assert main(["selftest", "test-state.sh"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"test-state.sh: TEST: {t} ... ok" for t in (
        "system state modification", "taking over system state modification",
        "compatible cumulative livepatches", "incompatible cumulative livepatches")]


def test_lab_selftest_exits_1_naming_what_went_wrong_and_2_on_an_unknown_script(capsys):
    from lab.cli import main
    assert main(["selftest", "test-shadow-vars.sh", "--model", "kgraft"]) == 0   # no transition in it
    assert main(["selftest", "test-sysfs.sh", "--model", "kgraft"]) == 1
    assert "ERROR: failed to complete transition" in capsys.readouterr().out
    assert main(["selftest", "test-nothing.sh"]) == 2
    assert "no selftest script 'test-nothing.sh'" in capsys.readouterr().err


KLP_LP = "patches/test_modules/test_klp_livepatch.o"


def test_lab_run_writes_and_removes_at_given_instants(capsys):
    import json

    from lab.cli import main
    enabled = "/sys/kernel/livepatch/test_klp_livepatch/enabled"
    status = main(["run", "--patch", KLP_LP, "--model", "upstream", "--workload", "quiet", "--instructions", "6e6",
                   "--write-at", "4e6", f"{enabled}=0", "--rmmod-at", "5e6", "test_klp_livepatch", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0
    assert [p["state"] for p in report["patches"]] == ["removed"]
    assert "livepatch: 'test_klp_livepatch': unpatching complete" in report["console"]


def test_lab_run_says_what_the_kernel_refused(capsys):
    from lab.cli import main
    status = main(["run", "--patch", KLP_LP, "--model", "upstream", "--workload", "quiet", "--instructions", "6e6",
                   "--rmmod-at", "4e6", "test_klp_livepatch",
                   "--write-at", "5e6", "/sys/kernel/livepatch/test_klp_livepatch/enabled=1"])
    out = capsys.readouterr().out
    assert status == 1
    assert "rmmod: ERROR: Module test_klp_livepatch is in use" in out
    assert "write error: Invalid argument" in out


def test_lab_run_loads_a_module_at_an_instant(capsys):
    """--insmod-at: the target module, loaded while the patch's transition
    is held open by the eternal sleeper (tests/test_livepatch.py shows it
    joining); the report lists the patch's functions in the module once it
    is there."""
    import json

    from lab.cli import main
    status = main(["run", "--patch", "patches/test_modules/test_klp_join.o", "--instructions", "3e6",
                   "--insmod-at", "1.2e6", "patches/test_modules/test_klp_join_mod.o", "--signal-after", "3e5",
                   "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0
    assert [(p["name"], p["state"]) for p in report["patches"]] == [("test_klp_join", "complete"),
                                                                     ("test_klp_join_mod", "loaded")]
    assert {"old": "join_mod_pre", "new": "livepatch_join_mod_pre"} in report["patches"][0]["functions"]
    assert "livepatch: applying patch 'test_klp_join' to loading module 'test_klp_join_mod'" in report["console"]


@pytest.mark.parametrize("argv, message", [
    (["--insmod-at", "4e6", "patches/no_such.o"], "--insmod-at patches/no_such.o: no such module object"),
    (["--insmod-at", "9e6", "patches/test_modules/test_klp_join_mod.o"], "is not before the end of the run"),
    (["--write-at", "4e6", "enabled=0"], "give PATH=VALUE with an absolute path"),
    (["--write-at", "4e6", "/sys/x="], "give PATH=VALUE"),
    (["--write-at", "9e6", "/sys/x=1"], "is not before the end of the run"),
    (["--write-at", "1", "/sys/x=1"], "comes before the end of boot"),
    (["--rmmod-at", "4e6", "no such"], "is not a module name"),
])
def test_lab_run_refuses_a_bad_write_or_rmmod_in_one_line(capsys, argv, message):
    from lab.cli import main
    assert main(["run", "--instructions", "6e6", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_patch_state_and_kgrafts_in_progress_follow_the_transition():
    """/proc/<pid>/patch_state (upstream) and /sys/kernel/kgraft/in_progress
    (kGraft), read through the kernel: -1 and 0 with no transition; during
    one, each task's universe, until it completes."""
    import lab
    with lab.boot() as s:
        assert (s.read_file("/sys/kernel/kgraft/in_progress"), s.read_file("/proc/3/patch_state")) == ("0\n", "-1\n")
        s.run(1_000_000)
        s.apply_patch("patches/kgr_capable.o")
        assert s.read_file("/sys/kernel/kgraft/in_progress") == "1\n"
        reader = s.task("pipe-reader")
        assert s.read_file(f"/proc/{reader.tid}/patch_state") == "0\n"      # the sleeper has not moved
        s.send_fake_signals()
        s.run_until_patched(10_000_000)
        assert s.read_file("/sys/kernel/kgraft/in_progress") == "0\n"
        assert s.read_file(f"/proc/{reader.tid}/patch_state") == "-1\n"
        with pytest.raises(Exception, match="No such file"):
            s.read_file("/proc/99/patch_state")


def test_a_klp_patch_with_callbacks_completes_under_every_model_with_no_violation():
    """One core for both APIs: the klp callback demo under kGraft's model,
    immediate, stop-machine, the lab's klp hybrid and upstream's own, each
    with its post-patch callback run (by the kernel) once it completed."""
    import lab
    from lab.compare import compare
    from lab.livepatch.core import MODELS
    demo = "patches/test_modules/test_klp_callbacks_demo.o"
    rows = compare(demo)
    assert [r["model"] for r in rows] == list(MODELS)
    for r in rows:
        assert r["completed"] and r["violations"] == 0, r
    for model in MODELS:
        with lab.boot(model=model, signal_after=1_000_000) as s:
            s.insmod(demo)
            s.run_until_patched(40_000_000)
            log = [line.split(": ", 1)[1] for line in s.console if line.startswith("test_klp_callbacks_demo:")]
            assert log == ["pre_patch_callback: vmlinux", "post_patch_callback: vmlinux"], model


def test_stack_order_and_replace_say_where_a_patch_is_and_what_it_does(st):
    """The newer sysfs attributes: stack_order (1 the oldest registered
    patch) and replace, read-only."""
    st.load_lp(LP)
    st.load_lp("test_klp_atomic_replace", replace=0)
    assert [st.cat(f"/sys/kernel/livepatch/{m}/stack_order") for m in (LP, "test_klp_atomic_replace")] == ["1", "2"]
    assert st.cat("/sys/kernel/livepatch/test_klp_atomic_replace/replace") == "0"
    st.check_sysfs_rights(LP, "stack_order", "-r--r--r--")
    st.check_sysfs_rights(LP, "replace", "-r--r--r--")
    st.disable_lp(LP)
    assert st.cat("/sys/kernel/livepatch/test_klp_atomic_replace/stack_order") == "1"
