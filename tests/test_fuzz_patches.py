"""The patch fuzzer (lab.fuzz.patches): every bundled and bad patch, and a
bounded run of mutants, get an outcome Linux would give them; and the
fuzzer's own judge can tell each kind of failure when the lab commits it."""
import pathlib

import pytest

from lab import LabError
from lab.fuzz import patches as fuzz
from lab.modules import check_object

BAD = sorted(fuzz.BAD_DIR.glob("*.o"))
GOOD = sorted(fuzz.PATCHES_DIR.glob("*.o"))

# Bad patches the lab does not yet treat as Linux would (the lead's queue):
# today's outcome, then Linux's.
NOT_YET = {}      # bad patches whose outcome is known to differ from the verdict expected


@pytest.fixture(scope="module")
def runner():
    r = fuzz.CaseRunner()
    yield r
    r.close()


def judged(runner, path):
    return runner.run(("corpus", None, str(path)))


def verdict_line(result):
    return f"{result['outcome']}: {result['detail']}"


# ---- the corpus, one object at a time ----

@pytest.mark.parametrize("path", GOOD, ids=[p.name for p in GOOD])
def test_a_bundled_patch_applies_and_the_kernel_runs_on(runner, path):
    result = judged(runner, path)
    assert result["outcome"] == "applied", verdict_line(result)


def _bad_params():
    params = []
    for path in BAD:
        marks = [pytest.mark.xfail(reason=NOT_YET[path.stem], strict=False)] if path.stem in NOT_YET else []
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


@pytest.mark.parametrize("path", _bad_params())
def test_a_bad_patch_gets_the_outcome_linux_would_give_it(runner, path):
    result = judged(runner, path)
    assert result["outcome"] in fuzz.EXPECTED[path.stem], verdict_line(result)
    assert result["outcome"] not in fuzz.FAILURES, verdict_line(result)


def test_every_bad_patch_has_an_expected_outcome_and_a_line_saying_what_linux_does():
    assert len(BAD) >= 40
    assert {p.stem for p in BAD} <= set(fuzz.EXPECTED)
    for path in BAD:
        first = path.with_suffix(".c").read_text().splitlines()[0]
        assert first.startswith("/* ") and first.endswith(" */") and "Linux" in first, path.name
        check_object(path.read_bytes(), path.name)   # well-formed: what is wrong is what it does


# ---- mutants ----

def test_sixty_mutants_get_no_failure():
    report = fuzz.fuzz_patches(60, seed=0, corpus_cases=False)
    assert report["cases"] == 60
    assert sum(report["counts"][k] for k in fuzz.OUTCOMES) == 60, report["counts"]
    assert report["counts"]["refused"] > 0 and report["counts"]["applied"] > 0, report["counts"]
    assert report["failures"] == [], [verdict_line(r) for r in report["failures"]]


def test_a_mutant_is_a_function_of_seed_and_number():
    a = fuzz.mutant(7, 3)
    assert fuzz.mutant(7, 3) == a
    assert fuzz.mutant(8, 3)[2] != a[2] or fuzz.mutant(7, 4)[2] != a[2]
    assert a[2] != pathlib.Path(a[0]).read_bytes()


@pytest.mark.parametrize("kind", fuzz.MUTATIONS)
def test_each_kind_of_mutation_changes_the_object_in_its_part(kind):
    import random
    rng = random.Random(kind)
    base = fuzz._base(fuzz.GOOD)
    data, what = fuzz._mutate(rng, base, kind)
    assert data != base.data and len(data) == len(base.data), what
    assert what


def test_workers_in_other_processes_judge_exactly_as_this_one():
    specs = fuzz.cases(6, seed=5, corpus_cases=False)
    here = fuzz.fuzz_patches(0, specs=specs)["results"]
    there = fuzz.fuzz_patches(0, specs=specs, workers=2)["results"]
    keys = ("case", "outcome", "instructions", "mutation", "base")
    assert [{k: r[k] for k in keys} for r in there] == [{k: r[k] for k in keys} for r in here]


# ---- the judge can fail: each failure class, committed on purpose ----

class _Broken(Exception):
    pass


def _judge_with(monkeypatch, runner, apply_patch, path=fuzz.GOOD):
    import lab
    real_boot = lab.boot

    def boot(*args, **kwargs):
        system = real_boot(*args, **kwargs)
        monkeypatch.setattr(system, "apply_patch", apply_patch(system))
        return system
    monkeypatch.setattr(runner.lab, "boot", boot)
    return runner.run(("corpus", None, str(path)))


def test_an_exception_that_is_not_a_lab_error_is_a_crash(monkeypatch, runner):
    def apply_patch(system):
        def broken(path):
            raise _Broken("the lab broke")
        return broken
    result = _judge_with(monkeypatch, runner, apply_patch)
    assert result["outcome"] == "crash" and "_Broken: the lab broke" in result["detail"]


def test_a_refusal_on_two_lines_is_multi_line(monkeypatch, runner):
    def apply_patch(system):
        def refuse(path):
            raise LabError(f"{pathlib.Path(path).name}: refused\nand a second line")
        return refuse
    assert _judge_with(monkeypatch, runner, apply_patch)["outcome"] == "multi-line"


def test_a_refusal_that_does_not_name_the_object_is_vague(monkeypatch, runner):
    def apply_patch(system):
        def refuse(path):
            raise LabError("something went wrong")
        return refuse
    assert _judge_with(monkeypatch, runner, apply_patch)["outcome"] == "vague-refusal"


def test_a_refusal_that_changed_the_kernel_is_dirty(monkeypatch, runner):
    def apply_patch(system):
        def refuse(path):
            address = system.image.pad("capable").address
            system.ftrace.set_jmp(address, system.image.address("ns_capable"))
            raise LabError(f"{pathlib.Path(path).name}: refused")
        return refuse
    assert _judge_with(monkeypatch, runner, apply_patch)["outcome"] == "dirty-refusal"


def test_a_clean_refusal_after_which_nothing_loads_is_stuck(monkeypatch, runner):
    def apply_patch(system):
        def refuse(path):
            raise LabError(f"{pathlib.Path(path).name}: refused")
        return refuse
    result = _judge_with(monkeypatch, runner, apply_patch)
    assert result["outcome"] == "stuck" and "the good patch was refused" in result["detail"]


def test_a_patch_reported_live_whose_pad_jumps_into_freed_memory_is_a_lie(monkeypatch, runner):
    def apply_patch(system):
        real = system.apply_patch

        def apply_then_free(path):
            patch = real(path)
            system.run_until_patched(fuzz.GOOD_LIMIT)
            system.modules.unload(patch.module)   # what a lab that frees too early would do
            return patch
        return apply_then_free
    result = _judge_with(monkeypatch, runner, apply_patch)
    assert result["outcome"] == "lie" and "no loaded module's nor the kernel's" in result["detail"]


def test_a_case_that_retires_more_than_its_bound_is_a_hang(monkeypatch, runner):
    def apply_patch(system):
        real = system.apply_patch

        def apply_and_overrun(path):
            patch = real(path)
            system.run(3 * runner.budget + 10_000_000)
            return patch
        return apply_and_overrun
    result = _judge_with(monkeypatch, runner, apply_patch)
    assert result["outcome"] == "hang" and "bound" in result["detail"]


def test_a_bad_patch_with_an_outcome_linux_would_not_give_is_a_wrong_verdict(monkeypatch, runner):
    monkeypatch.setitem(fuzz.EXPECTED, "missing_abort", {"applied"})
    result = judged(runner, fuzz.BAD_DIR / "missing_abort.o")
    assert result["outcome"] == "verdict" and "Linux would give: applied" in result["detail"]


# ---- the command line ----

def test_the_command_line_prints_one_line_per_outcome_and_exits_0_without_failures(capsys):
    status = fuzz.main(["--cases", "4", "--seed", "0", "--workers", "0", "--no-corpus"])
    out = capsys.readouterr().out
    assert status == 0, out
    for outcome in fuzz.OUTCOMES:
        assert any(line.split()[0] == outcome for line in out.splitlines() if line.strip()), out
    assert "4 cases in" in out and "FAIL" not in out


def test_the_command_line_exits_1_and_saves_the_object_of_a_failure(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(fuzz.EXPECTED, "missing_abort", {"applied"})
    status = fuzz.main(["--object", str(fuzz.BAD_DIR / "missing_abort.o"), "--workers", "0", "--no-corpus",
                        "--cases", "0", "--save-failures", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 1, out
    assert "FAIL verdict: bad/missing_abort.o" in out and "--object" in out
    assert (tmp_path / "missing_abort.o").read_bytes() == (fuzz.BAD_DIR / "missing_abort.o").read_bytes()
