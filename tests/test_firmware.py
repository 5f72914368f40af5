"""Tests for firmware/: the committed kernel.elf matches its sources, is built for ftrace,
and (where gcc exists) rebuilds from them into a kernel that boots and runs."""
import re
import shutil
import subprocess
import sys

import pytest

import lab

FTRACE_FLAGS = ("-pg", "-mfentry", "-mnop-mcount", "-mrecord-mcount")
WORKER_KTHREADS = ("kfreezerd", "kannotated", "kworker/stats")


def copy_firmware(firmware_dir, dest):
    """The firmware sources without build products."""
    shutil.copytree(firmware_dir, dest, ignore=shutil.ignore_patterns("build", "kernel.elf"))
    # the module image a user program carries is built from patches/samples
    samples = dest.parent / "patches" / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    for name in ("livepatch_sample.c", "Makefile"):
        shutil.copy(firmware_dir.parent / "patches" / "samples" / name, samples / name)
    return dest


# ---- the committed image ----

def test_the_committed_image_was_built_from_the_sources_as_they_are(image, srchash):
    assert image.source_hash == srchash.source_hash(), (
        "firmware/kernel.elf is stale: rebuild it with `make -C firmware` and commit it")


def test_the_source_hash_covers_every_source_and_no_build_product(srchash, firmware_dir):
    files = {p.as_posix() for p in srchash.source_files(firmware_dir)}
    assert {"Makefile", "kernel.ld", "entry.S", "capability.c", "include/kernel.h", "user/programs.c"} <= files
    assert not any(f.startswith("build/") for f in files)
    assert "kernel.elf" not in files


def test_the_source_hash_changes_when_a_source_changes(srchash, firmware_dir, tmp_path):
    root = copy_firmware(firmware_dir, tmp_path / "firmware")
    before = srchash.source_hash(root)
    assert before == srchash.source_hash(firmware_dir)
    (root / "capability.c").write_text((root / "capability.c").read_text() + "\n")
    assert srchash.source_hash(root) != before


def test_the_image_has_at_least_30_traceable_functions(image):
    assert len(image.pads) >= 30


def test_the_makefile_compiles_the_kernel_with_the_ftrace_flags(firmware_dir):
    text = (firmware_dir / "Makefile").read_text().replace("\\\n", " ")
    variables = dict(re.findall(r"^(\w+)\s*:?=\s*(.*)$", text, re.M))
    assert variables["FTRACE_CFLAGS"].split() == list(FTRACE_FLAGS)
    assert "$(FTRACE_CFLAGS)" in variables["KCFLAGS"]
    assert "$(FTRACE_CFLAGS)" not in variables["UCFLAGS"]   # user programs get no pads


# ---- rebuilding it ----

@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory, firmware_dir):
    """firmware/ copied without build products and built with make: (directory, make's output)."""
    if not (shutil.which("gcc") and shutil.which("make")):
        pytest.skip("needs gcc and make")
    root = copy_firmware(firmware_dir, tmp_path_factory.mktemp("rebuild") / "firmware")
    proc = subprocess.run(["make", "-C", str(root), f"PYTHON={sys.executable}"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, proc.stdout


@pytest.mark.gcc
def test_the_rebuilt_kernel_boots_and_every_task_makes_progress(rebuilt):
    root, _ = rebuilt
    system = lab.boot(image=root / "kernel.elf")
    system.run(1_000_000)
    assert "Lab kernel booting" in system.console
    tasks = {t.name: t for t in system.tasks}
    for name in ("cap-user", "cat-cmdline", "pipe-reader"):
        assert tasks[name].syscalls > 0, name
    for name in WORKER_KTHREADS:
        assert tasks[name].iterations > 0, name
    assert tasks["pipe-reader"].sleeps_in() == "pipe_wait_readable"


@pytest.mark.gcc
def test_the_rebuilt_kernel_carries_the_hash_of_its_sources(rebuilt, srchash, image):
    root, _ = rebuilt
    rebuilt_image = lab.Image.load(root / "kernel.elf")
    assert rebuilt_image.source_hash == srchash.source_hash(root) == image.source_hash
    assert len(rebuilt_image.pads) >= 30
    assert rebuilt_image.pad("capable") is not None and rebuilt_image.pad("schedule") is None


@pytest.mark.gcc
def test_make_compiles_kernel_objects_with_the_ftrace_flags_and_user_programs_without(rebuilt):
    _, output = rebuilt
    compiles = [line for line in output.splitlines() if re.search(r" -c -o \S+ \S+\.c$", line)]
    kernel = [line for line in compiles if "build/user/" not in line]
    user = [line for line in compiles if "build/user/" in line]
    assert kernel and user
    for line in kernel:
        assert all(flag in line.split() for flag in FTRACE_FLAGS), line
    for line in user:
        assert "-pg" not in line.split(), line
