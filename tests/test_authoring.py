"""Tests for lab.authoring: the hazards gcc makes in the firmware, `lab patch analyze`,
the object comparison, and `lab patch create` over the corpus in patches/diffs/."""
from __future__ import annotations

import argparse
import io
import json
import pathlib
import shutil
import subprocess
import tomllib

import pytest
from rich.console import Console

import lab
from lab.authoring import AuthoringError, analyze, cli
from lab.authoring.compiled import CompiledKernel, base_name, clone_kinds
from lab.authoring.objdiff import correlate
from lab.authoring.objfile import ObjectView, normalized
from lab.image import FIRMWARE_DIR

ROOT = FIRMWARE_DIR.parent
DIFFS = ROOT / "patches" / "diffs"
CORPUS = tomllib.loads((DIFFS / "corpus.toml").read_text())
HAVE_GCC = bool(shutil.which("gcc") and shutil.which("make") and shutil.which("patch"))


# ---- the hazards: what gcc does to firmware/writeback.c ----

def _hazards_in_image(image):
    """{hazard: evidence or None} read from the image's symbols, DWARF and code."""
    kernel = CompiledKernel.of(image)
    found = {}
    limit, bandwidth, writeout, report, target, throttle = analyze(
        image, ["wb_dirty_limit", "wb_bandwidth", "wb_writeout_add", "wb_report", "wb_do_writeback", "wb_throttle"])
    hosts = {h for h, _f, _l in limit.inlined_into}
    found["inlining: wb_dirty_limit() inlined into both its callers and kept out of line with a pad"] = \
        limit.pad and {"wb_over_bg_thresh", "balance_dirty_pages_ratelimited"} <= hosts
    found["an .isra clone of wb_bandwidth() that does not pass wb"] = any(
        c.kinds == ("isra",) and any(p.name == "wb" and p.how == "dropped" for p in c.params)
        for c in bandwidth.clones)
    found["a .constprop clone of wb_writeout_add() with the reason fixed"] = any(
        "constprop" in c.kinds and any(p.name == "reason" and p.how == "fixed" for p in c.params)
        for c in writeout.clones)
    found["a .part split of wb_report()"] = any(c.kinds == ("part",) for c in report.clones)
    found["a tail jmp from wb_workfn() to wb_do_writeback()"] = "wb_workfn" in target.tail_called_from
    found["the static local wb_report_last of wb_report() with a symbol of its own"] = any(
        n == "wb_report_last" and s and s.startswith("wb_report_last.") for n, s in report.static_locals)
    found["the static, out-of-line wb_throttle() with a pad"] = throttle.static and throttle.pad
    assert kernel.symbol("wb_dirty_limit") is not None
    return found


def test_gcc_made_every_hazard_in_the_committed_kernel(image):
    found = _hazards_in_image(image)
    missing = [h for h, ok in found.items() if not ok]
    assert not missing, f"gcc no longer makes these in firmware/kernel.elf: {'; '.join(missing)}"


@pytest.mark.gcc
def test_gcc_still_makes_every_hazard_when_writeback_c_is_compiled_now(tmp_path):
    from lab.authoring.tree import compile_units
    obj = ObjectView(compile_units(FIRMWARE_DIR, ["writeback.c"], tmp_path)["writeback.c"])
    funcs = obj.functions
    found = {}

    def calls(name, target):
        return any(k[1] == target for _o, _t, k, _a in funcs[name].relocations)
    found["inlining: wb_dirty_limit() inlined into wb_over_bg_thresh() and balance_dirty_pages_ratelimited()"] = \
        "wb_dirty_limit" in funcs and not calls("wb_over_bg_thresh", "wb_dirty_limit") \
        and not calls("balance_dirty_pages_ratelimited", "wb_dirty_limit")
    for kind, name in (("isra", "wb_bandwidth"), ("constprop", "wb_writeout_add"), ("part", "wb_report")):
        found[f"a .{kind} clone of {name}()"] = any(base_name(f) == name and kind in clone_kinds(f) for f in funcs)
    last = funcs["wb_workfn"]
    found["a tail jmp from wb_workfn() to wb_do_writeback()"] = any(
        k[1] == "wb_do_writeback" and last.code[o - 1] == 0xE9 for o, _t, k, _a in last.relocations)
    found["the static local wb_report_last"] = any(normalized(v) == "wb_report_last" for v in obj.variables)
    missing = [h for h, ok in found.items() if not ok]
    assert not missing, f"gcc {subprocess.run(['gcc', '-dumpfullversion'], capture_output=True, text=True).stdout.strip()} " \
                        f"no longer makes: {'; '.join(missing)}"


# ---- lab patch analyze ----

def test_analyze_lists_the_callers_an_inlined_function_lives_in_with_their_call_sites(image):
    (a,) = analyze(image, ["wb_dirty_limit"])
    assert {(h, f) for h, f, _line in a.inlined_into} >= {("wb_over_bg_thresh", "writeback.c"),
                                                          ("balance_dirty_pages_ratelimited", "writeback.c")}
    source = (FIRMWARE_DIR / "writeback.c").read_text().splitlines()
    for host, _f, line in a.inlined_into:
        assert "wb_dirty_limit(" in source[line - 1], (host, line)
    assert [r.function for r in a.must_replace] == ["wb_dirty_limit", "balance_dirty_pages_ratelimited",
                                                    "wb_do_writeback", "wb_over_bg_thresh"]


def test_analyze_says_what_each_clone_dropped_or_fixed_and_replaces_its_callers(image):
    bandwidth, writeout = analyze(image, ["wb_bandwidth", "wb_writeout_add"])
    (isra,) = bandwidth.clones
    assert isra.symbol.startswith("wb_bandwidth.isra.") and isra.changes() == ["wb not passed"]
    (cp,) = writeout.clones
    assert cp.changes() == ["reason fixed to 1"]          # WB_REASON_BACKGROUND
    for a in (bandwidth, writeout):
        assert a.symbol is None and [r.function for r in a.must_replace] == ["wb_do_writeback"]
        assert "calls the clone" in a.must_replace[0].why


def test_analyze_of_a_clone_symbol_answers_for_its_source_function(image):
    kernel = CompiledKernel.of(image)
    (clone,) = kernel.clones("wb_report")
    (a,) = analyze(image, [clone.name])
    assert a.name == "wb_report" and a.static_locals[0][0] == "wb_report_last"


def test_analyze_finds_tail_calls_static_functions_and_notrace(image):
    target, throttle, sched = analyze(image, ["wb_do_writeback", "wb_throttle", "schedule"])
    assert target.tail_called_from == ("wb_workfn",) and "tail call" in " ".join(target.notes)
    assert throttle.static and 'kallsyms_lookup_name("wb_throttle")' in " ".join(throttle.notes)
    assert not sched.pad and not sched.patchable and "notrace" in sched.must_replace[0].why


def test_analyze_refuses_an_unknown_function_naming_close_matches(image):
    with pytest.raises(AuthoringError, match="wb_dirty_limit"):
        analyze(image, ["wb_dirty_limi"])


def _patch_cli(*argv):
    parser = argparse.ArgumentParser(prog="lab patch")
    cli.add_subcommands(parser.add_subparsers(dest="patch_command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    buf = io.StringIO()
    status = cli.run(args, Console(file=buf, width=100))
    return status, buf.getvalue()


def test_lab_patch_analyze_json_has_the_must_replace_list(capsys):
    status, _ = _patch_cli("analyze", "wb_report", "capable", "--json")
    data = json.loads(capsys.readouterr().out)
    assert status == 0 and data["schema"] == 1
    report, capable = data["functions"]
    assert report["clones"][0]["kinds"] == ["part"]
    assert {r["function"] for r in report["must_replace"]} == {"balance_dirty_pages_ratelimited", "wb_do_writeback"}
    assert capable["must_replace"] == [{"function": "capable", "why": "itself", "patchable": True}]


def test_lab_patch_analyze_prints_one_record_per_line():
    status, text = _patch_cli("analyze", "wb_dirty_limit")
    assert status == 0
    assert "a patch of it must replace:" in text
    assert any(line.split()[:2] == ["wb_over_bg_thresh", "holds"] for line in text.splitlines())


# ---- comparing objects ----

def test_clones_and_static_locals_are_correlated_without_gcc_numbering():
    assert normalized("wb_bandwidth.isra.0") == "wb_bandwidth.isra"
    assert normalized("wb_writeout_add.constprop.0.isra.1") == "wb_writeout_add.constprop.isra"
    assert normalized("wb_report_last.3") == "wb_report_last"
    pairs = correlate(["a.isra.0", "b.constprop.1", "c", "said.0"], ["a.isra.1", "b.constprop.0", "c", "said.4", "d"])
    assert pairs == {"c": "c", "a.isra.0": "a.isra.1", "b.constprop.1": "b.constprop.0", "said.0": "said.4"}


# ---- lab patch create over the corpus ----

needs_gcc = pytest.mark.skipif(not HAVE_GCC, reason="needs gcc, make and patch")


@pytest.fixture(scope="module")
def created(tmp_path_factory):
    """create() of each corpus diff, made once: name -> Creation."""
    from lab.authoring.create import create
    out = tmp_path_factory.mktemp("created")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = create(DIFFS / f"{name}.diff", out / f"{name}.o",
                                 workload=CORPUS[name].get("workload"))
        return cache[name]
    return get


def test_every_diff_in_the_corpus_has_an_expectation_and_the_list_covers_the_hazards():
    diffs = {p.stem for p in DIFFS.glob("*.diff")}
    assert diffs == set(CORPUS)
    hazards = " ".join(e["hazard"] for e in CORPUS.values())
    for word in ("inlined into its two callers", "static function", ".isra", ".constprop", "prototype change",
                 "layout", "notrace", "string constant", "new static local"):
        assert word in hazards, word


@needs_gcc
@pytest.mark.gcc
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_diff_gets_its_function_set_and_verdict(name, created):
    expect = CORPUS[name]
    c = created(name)
    assert c.changed_functions() == sorted(expect["changed"])
    assert c.verdict == expect["verdict"], [str(r) for r in c.refusals] + (c.check.problems if c.check else [])
    if "refused" in expect:
        assert sorted({r.rule for r in c.refusals}) == expect["refused"]
        assert c.module is None and all(r.way_out for r in c.refusals)
    if "replaced" in expect:
        assert c.replaced() == sorted(expect["replaced"])


@needs_gcc
@pytest.mark.gcc
@pytest.mark.parametrize("name", sorted(n for n, e in CORPUS.items() if e["verdict"] == "patchable"))
def test_a_generated_patch_loads_replaces_its_functions_passes_the_explorer_and_shows(name, created):
    expect = CORPUS[name]
    k = created(name).check
    assert k.loaded and k.state == "complete"
    assert sorted(old for old, _new in k.functions) == sorted(expect["replaced"])
    assert k.exploration["clean"] and k.exploration["schedules"] >= 4
    assert k.ran
    assert any(line.endswith(expect["console"]) or expect["console"] in line for line in k.console_new), \
        k.console_new
    assert not any(expect["console"] in line for line in k.console_gone)


@needs_gcc
@pytest.mark.gcc
def test_a_patch_of_a_kernel_threads_loop_fails_its_check_saying_why(created):
    expect = CORPUS["loop_account_page_dirtied"]
    c = created("loop_account_page_dirtied")
    assert c.check.loaded and c.check.state == "complete"
    for words in expect["problems"]:
        assert any(words in p for p in c.check.problems), (words, c.check.problems)


@needs_gcc
@pytest.mark.gcc
def test_refusals_name_the_way_out(created):
    layout = {r.rule: r for r in created("layout_bdi_writeback").refusals}
    assert "shadow variable" in layout["layout"].way_out and "struct bdi_writeback" in layout["layout"].what
    (notrace,) = created("notrace_schedule").refusals
    assert notrace.what == "schedule()" and "fentry pad" in notrace.why
    (new_global,) = created("new_global_variable").refusals
    assert "wb_rounds_idle" in new_global.what and "static" in new_global.way_out


@needs_gcc
@pytest.mark.gcc
def test_the_generated_module_finds_static_symbols_through_kallsyms_in_its_init(created, image):
    c = created("inlined_wb_dirty_limit")
    text = (c.sources / "writeback.c").read_text()
    assert 'kallsyms_lookup_name("wb_report_last.0")' in text
    assert 'kallsyms_lookup_name("wb_throttle")' in text
    undefined = ObjectView(c.module).undefined()
    assert undefined and all(not image.lookup(s).local for s in undefined), undefined
    assert "wb_throttle" not in undefined and "wb_report_last.0" not in undefined


@needs_gcc
@pytest.mark.gcc
def test_the_new_code_uses_the_kernels_static_local_not_a_copy(created, image):
    """wb_report_last is the kernel's rate limit: once the patch is complete only
    the new code reports, and the kernel's variable keeps moving."""
    c = created("inlined_wb_dirty_limit")
    address = image.address("wb_report_last.0")
    with lab.boot(image, workload="writeback", signal_after=200_000) as system:
        system.run(1_000_000 - system.clock)
        system.apply_patch(c.module)
        system.run_until_patched(8_000_000)
        before = system.machine.u64(address)
        system.run(2_000_000)
        after = system.machine.u64(address)
    assert after > before


@needs_gcc
@pytest.mark.gcc
def test_a_diff_that_moves_only_lines_changes_no_function(tmp_path):
    from lab.authoring.create import create
    diff = tmp_path / "comment.diff"
    diff.write_text("--- a/firmware/writeback.c\n+++ b/firmware/writeback.c\n@@ -23,2 +23,4 @@\n"
                    ' #include "kernel.h"\n+\n+/* one more comment, and every line below moves */\n \n')
    c = create(diff, tmp_path / "comment.o")
    assert c.units == ["writeback.c"] and c.changes == [] and c.verdict == "nothing to patch"


def test_a_diff_that_does_not_apply_is_an_input_error(tmp_path):
    from lab.authoring.create import create
    diff = tmp_path / "stale.diff"
    diff.write_text("--- a/firmware/writeback.c\n+++ b/firmware/writeback.c\n@@ -1,1 +1,1 @@\n-no such line\n"
                    "+another\n")
    with pytest.raises(AuthoringError, match="does not apply"):
        create(diff, tmp_path / "stale.o", check=False)


@needs_gcc
@pytest.mark.gcc
def test_lab_patch_create_exits_1_on_a_refusal_and_prints_the_way_out(tmp_path):
    shutil.copy(DIFFS / "data_bdi_wb.diff", tmp_path)
    status, text = _patch_cli("create", tmp_path / "data_bdi_wb.diff")
    assert status == 1
    assert "refused:" in text and "way out:" in text and "bdi_wb" in text
    assert not (tmp_path / "data_bdi_wb.o").exists()


@needs_gcc
@pytest.mark.gcc
def test_lab_patch_create_json_names_the_module_and_its_sources(tmp_path, capsys):
    shutil.copy(DIFFS / "string_cmdline_proc_show.diff", tmp_path)
    status, _ = _patch_cli("create", tmp_path / "string_cmdline_proc_show.diff", "-o", tmp_path / "s.o",
                           "--no-check", "--json")
    data = json.loads(capsys.readouterr().out)
    assert status == 0 and data["verdict"] == "patchable" and data["check"] is None
    assert data["module"] == str(tmp_path / "s.o") and pathlib.Path(data["sources"], "patch.c").is_file()
    assert data["replaced"] == [{"function": "cmdline_proc_show", "unit": "fs.c", "why": "changed"}]
    assert any("string" in c.get("detail", "") for c in data["changed"])


def test_lab_patch_create_refuses_options_that_would_be_ignored(tmp_path):
    diff = tmp_path / "x.diff"
    diff.write_text("--- a/firmware/fs.c\n+++ b/firmware/fs.c\n")
    with pytest.raises(lab.UsageError, match="--no-check"):
        _patch_cli("create", diff, "--no-check", "--workload", "writeback")
    with pytest.raises(lab.UsageError, match="ending in .o"):
        _patch_cli("create", diff, "-o", tmp_path / "x.ko")


def test_lab_patch_create_leaves_a_directory_it_did_not_make_alone(tmp_path):
    diff = tmp_path / "fix.diff"
    shutil.copy(DIFFS / "string_cmdline_proc_show.diff", diff)
    (tmp_path / "fix.src").mkdir()
    (tmp_path / "fix.src" / "notes.txt").write_text("mine\n")
    with pytest.raises(lab.UsageError, match="was not made by lab patch create"):
        _patch_cli("create", diff, "--no-check")
    assert (tmp_path / "fix.src" / "notes.txt").read_text() == "mine\n"
