"""Upstream's livepatch samples (samples/livepatch/), rewritten for the lab's
kernel in patches/samples/: the klp sample patch, and the shadow variable
demo (a module that leaks, a fix that stops the leak with a shadow variable,
a second fix that adds a counter to every object)."""
from __future__ import annotations

import pytest

import lab

SAMPLES = "patches/samples"
LEAK_BYTES = 16          # one int, as the kernel's kmalloc() rounds it


@pytest.fixture
def system():
    with lab.boot(workload="quiet", model="upstream") as s:
        yield s


def heap(s):
    return s.machine.u64(s.image.address("kmalloc_bytes"))


def test_the_klp_sample_patches_proc_cmdline_and_goes_again(system):
    system.insmod(f"{SAMPLES}/livepatch_sample.o")
    system.run_until_patched(60_000_000)
    assert system.read_file("/proc/cmdline") == "this has been live patched\n"
    assert system.write_file("/sys/kernel/livepatch/livepatch_sample/enabled", "0") == 1
    system.run_until_patched(60_000_000)
    system.rmmod("livepatch_sample")
    assert system.read_file("/proc/cmdline") == "workload=quiet\n"


def test_the_shadow_fixes_stop_the_leak_and_count_the_checks(system):
    s = system
    mark = len(s.console)
    s.insmod(f"{SAMPLES}/livepatch_shadow_mod.o")
    s.run(20_000_000)                      # ten seconds of the buggy module
    buggy = [line for line in s.console[mark:] if "livepatch_shadow_mod: dummy_alloc:" in line]
    assert len(buggy) >= 9 and heap(s) > 0
    s.insmod(f"{SAMPLES}/livepatch_shadow_fix1.o")
    s.run_until_patched(60_000_000)
    s.run(30_000_000)
    s.insmod(f"{SAMPLES}/livepatch_shadow_fix2.o")
    s.run_until_patched(60_000_000)
    s.run(30_000_000)
    log = s.console[mark:]
    assert any("livepatch_fix1_dummy_free" in line and "leaked!" in line for line in log)
    assert any("prevented leak" in line for line in log)
    assert any("check counter" in line for line in log)
    # undo it all: every leak the fixes kept is freed with its dummy; only the
    # ones the unpatched dummy_alloc() made (before the first fix, and after
    # it is disabled) stay lost
    for p in ("livepatch_shadow_fix2", "livepatch_shadow_fix1"):
        assert s.write_file(f"/sys/kernel/livepatch/{p}/enabled", "0") == 1
        s.run_until_patched(60_000_000)
    for m in ("livepatch_shadow_fix2", "livepatch_shadow_fix1", "livepatch_shadow_mod"):
        s.rmmod(m)
    unpatched = [line for line in s.console[mark:] if "livepatch_shadow_mod: dummy_alloc:" in line]
    assert heap(s) == len(unpatched) * LEAK_BYTES
    assert [p.state.value for p in s.patches] == ["removed"] * 3


def test_a_user_program_loads_and_removes_the_sample_through_the_system_calls(system):
    """init_module() and delete_module() from user programs: the image comes
    from the program's memory, the init runs in its task, removal is refused
    while the patch is enabled (-EWOULDBLOCK, rmmod's "in use")."""
    s = system
    mark = len(s.console)
    loader = s.spawn("insmod-sample")
    s.run_until_patched(60_000_000)
    s.run(3_000_000)
    patch = s.patches[-1]
    assert patch.loader_tid == loader and patch.state.value == "complete"
    assert s.read_file("/proc/cmdline") == "this has been live patched\n"
    s.spawn("rmmod-sample")
    s.run(3_000_000)
    assert s.write_file("/sys/kernel/livepatch/livepatch_sample/enabled", "0") == 1
    s.run_until_patched(60_000_000)
    s.run(3_000_000)
    s.spawn("rmmod-sample")
    s.run(3_000_000)
    said = [line.split(": ", 1)[1] for line in s.console[mark:] if "_module(livepatch_sample)" in line]
    assert said == ["init_module(livepatch_sample) returned 0", "delete_module(livepatch_sample) returned -11",
                    "delete_module(livepatch_sample) returned 0"]
    assert patch.state.value == "removed" and not patch.module.loaded
