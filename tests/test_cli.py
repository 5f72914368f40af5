"""Tests for the `lab` command (lab.cli): outputs, JSON, determinism across processes, and errors."""
import json
import os
import subprocess
import sys

import pytest
from elftools.elf.elffile import ELFFile

import lab
from lab.image import DEFAULT_IMAGE

COMMANDS = ("demo", "run", "workloads", "symbols", "pads", "disasm")
CAPABLE = DEFAULT_IMAGE.parent.parent / "patches" / "kgr_capable.o"


# ---- determinism across processes ----

def lab_json(argv, hashseed):
    env = dict(os.environ, PYTHONHASHSEED=str(hashseed))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_lab_run_json_gives_the_same_digest_in_separate_processes(lab_script, image):
    args = ["run", "--json", "--instructions", "400000", "--seed", "5"]
    first = lab_json([str(lab_script), *args], hashseed=1)
    second = lab_json([sys.executable, "-m", "lab", *args], hashseed=2)
    in_process = lab.boot(image, seed=5)
    in_process.run(400_000 - in_process.clock)
    assert first["digest"] == second["digest"] == in_process.digest
    assert first == second


def test_lab_run_json_gives_different_digests_for_different_seeds(run_lab):
    digests = {run_lab("run", "--json", "--instructions", "400000", "--seed", seed).json["digest"]
               for seed in (0, 1)}
    assert len(digests) == 2


# ---- run and demo ----

def test_lab_run_json_is_the_report_of_the_run(run_lab, image):
    result = run_lab("run", "--json", "--instructions", "5e5", "--quantum", "10_000", "--seed", "2")
    assert result.status == 0 and result.err == ""
    report = result.json
    system = lab.boot(image, seed=2, quantum=10_000, observe=True)   # as `lab run` does
    system.run(500_000 - system.clock)
    assert report == json.loads(json.dumps(system.report()))
    assert (report["schema"], report["instructions"], report["quantum"], report["seed"]) == (1, 500_000, 10_000, 2)
    for key in ("model", "digest", "tasks", "patches", "signals", "violations", "console"):
        assert key in report, key


def test_lab_run_shows_the_digest_the_tasks_and_the_console(run_lab, image):
    result = run_lab("run", "--instructions", "400000")
    assert result.status == 0
    system = lab.boot(image)
    system.run(400_000 - system.clock)
    assert system.digest in result.out
    for name in ("cap-user", "cat-cmdline", "pipe-reader", "kworker/stats", "pipe_wait_readable",
                 "Lab kernel booting"):
        assert name in result.out, name


def test_lab_run_workload_boots_that_workload(run_lab):
    report = run_lab("run", "--json", "--workload", "unannotated", "--instructions", "400000").json
    assert report["workload"] == "unannotated"
    assert "kunannotated" in [t["name"] for t in report["tasks"]]


def test_lab_demo_json_is_a_schema_1_report_that_stops_at_its_instructions(run_lab):
    result = run_lab("demo", "--json", "--instructions", "1.2e6")
    assert result.status == 0, result.err
    report = result.json
    assert report["schema"] == 1 and report["digest"] and report["tasks"]
    assert report["instructions"] == 1_200_000
    assert [p["name"] for p in report["patches"]] == ["sample_kgraft_patch"]


@pytest.mark.parametrize("task", ["cap-user", "1"])
def test_lab_run_inject_fault_oopses_that_task_and_the_others_run_on(run_lab, task):
    result = run_lab("run", "--json", "--instructions", "1000000", "--inject-fault", task)
    assert result.status == 0, result.err
    report = result.json
    assert [o["tid"] for o in report["oopses"]] == [1]
    assert report["oopses"][0]["where"].startswith("fault_inject_crash")
    states = {t["name"]: t["state"] for t in report["tasks"]}
    assert states["cap-user"] == "oopsed" and states["cat-cmdline"] == "running"
    assert "BUG: unable to handle page fault for address: 0000000000000010" in report["console"]


# ---- image commands ----

def test_lab_disasm_shows_the_five_byte_nop_at_the_entry_of_a_traceable_function(run_lab, image):
    listing = run_lab("disasm", "capable", "--json").json
    capable = image.function("capable")
    assert listing["function"] == "capable"
    assert listing["address"] == listing["pad"] == capable.address
    first = listing["instructions"][0]
    assert (first["address"], first["bytes"]) == (capable.address, "0f1f440000")
    assert first["text"].startswith("nop")
    assert sum(len(x["bytes"]) // 2 for x in listing["instructions"]) == capable.size

    text = run_lab("disasm", "capable").out
    assert "fentry pad: 5-byte NOP" in text
    assert "0f 1f 44 00 00" in text


@pytest.mark.parametrize("name", ["schedule", "do_syscall_64"])
def test_lab_disasm_of_a_notrace_function_shows_no_pad(run_lab, name):
    listing = run_lab("disasm", name, "--json").json
    assert listing["pad"] is None
    assert listing["instructions"][0]["bytes"] != "0f1f440000"
    assert "notrace" in run_lab("disasm", name).out


def test_lab_pads_lists_every_entry_of_mcount_loc(run_lab):
    pads = run_lab("pads", "--json").json
    with open(DEFAULT_IMAGE, "rb") as f:   # read the section with a second ELF reader
        section = ELFFile(f).get_section_by_name("__mcount_loc")
        listed = sorted(int.from_bytes(section.data()[i:i + 8], "little")
                        for i in range(0, section.data_size, 8))
    assert [p["address"] for p in pads] == listed
    assert len(pads) >= 30
    assert all(p["bytes"] == "0f1f440000" for p in pads)
    assert len({p["function"] for p in pads}) == len(pads)

    symbols = run_lab("symbols", "--json").json
    padded = {s["name"] for s in symbols if s["pad"]}
    assert padded == {p["function"] for p in pads}
    assert f"{len(pads)} fentry pads" in run_lab("pads").out


def test_lab_symbols_filters_by_name_and_tells_kernel_from_user(run_lab):
    rows = run_lab("symbols", "capable", "--json").json
    assert rows and all("capable" in r["name"] for r in rows)
    capable = next(r for r in rows if r["name"] == "capable")
    assert (capable["kind"], capable["region"], capable["pad"]) == ("func", "kernel", True)
    (user,) = run_lab("symbols", "user_cap_main", "--json").json
    assert (user["region"], user["pad"]) == ("user", False)


def test_lab_workloads_lists_the_images_workloads(run_lab):
    rows = run_lab("workloads", "--json").json
    assert [w["name"] for w in rows] == ["default", "unannotated", "quiet", "hammer", "writeback"]
    assert "hammer" in run_lab("workloads").out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(run_lab, command):
    result = run_lab(command, "--help")
    assert result.status == 0
    assert f"usage: lab {command}" in result.out


def test_python_m_lab_is_the_lab_command():
    proc = subprocess.run([sys.executable, "-m", "lab", "workloads", "--json"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["name"] == "default"


# ---- errors: one line, exit status 2 ----

BAD_INPUTS = [
    # (argv, what the error line must name); "{name}" is replaced by a fixture's path
    (["run", "--image", "{text_file}"], "{text_file}"),
    (["run", "--image", "{program_elf}"], "{program_elf}"),
    (["run", "--image", "{no_mcount_elf}"], "__mcount_loc"),
    (["run", "--image", "{truncated_elf}"], "{truncated_elf}"),
    (["pads", "--image", "{missing}"], "{missing}"),
    (["disasm", "no_such_function"], "'no_such_function'"),
    (["disasm", "jiffies"], "'jiffies'"),
    (["run", "--instructions", "-5"], "--instructions -5"),
    (["run", "--instructions", "0"], "--instructions 0"),
    (["run", "--instructions", "lots"], "'lots'"),
    (["run", "--workload", "nope"], "'nope'"),
    (["run", "--seed", "abc"], "'abc'"),
    (["run", "--seed", "-1"], "--seed"),
    (["run", "--quantum", "999"], "--quantum 999"),
    (["run", "--instructions", "100000", "--inject-fault", "nobody"], "'nobody'"),
    (["frob"], "'frob'"),
]


@pytest.mark.parametrize("argv,names", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_a_bad_input_gives_one_error_line_naming_it_and_exit_status_2(run_lab, request, tmp_path, argv, names):
    paths = {"missing": tmp_path / "missing.elf"}
    for fixture in ("text_file", "program_elf", "no_mcount_elf", "truncated_elf"):
        if any(f"{{{fixture}}}" in a for a in argv):
            paths[fixture] = request.getfixturevalue(fixture)
    argv = [a.format(**paths) for a in argv]
    result = run_lab(*argv)
    assert result.status == 2
    assert result.out == ""
    assert "Traceback" not in result.err
    (line,) = result.error_lines
    assert names.format(**paths) in line


def test_the_lab_command_exits_2_with_one_line_on_stderr_for_a_bad_image(lab_script, text_file):
    proc = subprocess.run([str(lab_script), "run", "--image", str(text_file)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [f"lab: error: {text_file}: not an ELF file; "
                                        "pass the kernel image built in firmware/ (kernel.elf)"]


@pytest.mark.parametrize("option", ["--instructions", "--quantum"])
def test_an_instruction_count_too_large_for_a_float_is_a_usage_error(run_lab, option):
    try:
        result = run_lab("run", option, "1e400")
    except OverflowError:
        pytest.fail("OverflowError escaped from lab.cli.main")
    assert result.status == 2
    (line,) = result.error_lines
    assert "1e400" in line


def test_lab_run_says_who_holds_a_transition_open_and_what_would_help(run_lab):
    result = run_lab("run", "--patch", CAPABLE, "--instructions", "3e6")
    assert result.status == 0
    line = result.out.strip().splitlines()[-1]
    assert "still in progress" in line and "pipe-reader (pipe_wait_readable)" in line and "--signal-after" in line


def test_lab_run_names_each_violation_in_a_line(run_lab):
    result = run_lab("run", "--model", "immediate", "--patch", CAPABLE.parent / "kgr_proto_pair.o", "--seed", "1",
                     "--instructions", "4e6")
    assert result.status == 1
    assert "cap-user (1): one syscall from" in result.out
    assert "ran old do_gethostname and new uts_copy_nodename of 'kgr_proto_pair'" in result.out


def test_lab_disasm_piped_gives_one_whole_instruction_a_line(run_lab):
    result = run_lab("disasm", "capable")
    assert result.status == 0
    pad = [line for line in result.out.splitlines() if "<capable>" in line]
    assert len(pad) == 1 and pad[0].endswith("nop dword ptr [rax + rax]")
