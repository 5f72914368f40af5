"""Shared helpers of the live patching tests (test_ftrace, test_modules,
test_livepatch, test_scenarios): booting and patching, reading the guest
state a refused operation must leave alone, the gcc-built test patches."""
from __future__ import annotations

import pathlib
import shutil

import pytest

import lab
from lab import cli
from lab import events as ev
from lab.image import FIRMWARE_DIR, PAD_SIZE
from lab.modules import MODULE_AREA

PATCHES = FIRMWARE_DIR.parent / "patches"
CAPABLE = PATCHES / "kgr_capable.o"            # 'sample_kgraft_patch': capable()
CAPABLE_V2 = PATCHES / "kgr_capable_v2.o"      # 'sample_kgraft_patch_v2': capable(), replace_all
CMDLINE = PATCHES / "livepatch_cmdline.o"      # 'livepatch_sample': cmdline_proc_show()
PROTO_PAIR = PATCHES / "kgr_proto_pair.o"      # 'kgr_proto_pair': do_gethostname() + uts_copy_nodename()
PIPE_WAIT = PATCHES / "kgr_pipe_wait.o"        # 'kgr_pipe_wait': pipe_wait_readable()
KALLSYMS = PATCHES / "kgr_kallsyms.o"          # 'kgr_kallsyms': process_annotated_work()
DATA = pathlib.Path(__file__).resolve().parent / "data"

PATCH_AT = 1_000_000      # every task has started and the pipe reader sleeps in its read()
SETTLE = 600_000          # long enough for every task that can move by itself to move
LIMIT = 6_000_000         # more than any transition here needs when fake signals are sent

_image = None


def image():
    """The committed kernel image, parsed once for all these tests."""
    global _image
    if _image is None:
        _image = lab.Image.load()
    return _image


def boot(**kwargs):
    return lab.boot(image(), **kwargs)


def patched(path=CAPABLE, *, at=PATCH_AT, **kwargs):
    """Boot, run to `at`, apply the patch at path: (system, patch), the
    transition just started and not one instruction run since."""
    system = boot(**kwargs)
    system.run(at)
    patch = system.apply_patch(path)
    return system, patch


def completed(path=CAPABLE, **kwargs):
    """A patch applied and its transition completed (fake signals every 300k)."""
    kwargs.setdefault("signal_after", 300_000)
    system, patch = patched(path, **kwargs)
    system.run_until_patched(LIMIT)
    assert system.transition is None, f"{patch.name} did not complete: {system.livepatch.pending()}"
    return system, patch


# ---- what a run printed and did ----

def livepatch_lines(system, since=0):
    """The kernel's 'livepatch: ...' console lines, from event index since."""
    return [e.text for e in system.events[since:] if isinstance(e, ev.Console) and e.text.startswith("livepatch: ")]


def console_of(system, tid):
    return [e.text for e in system.events if isinstance(e, ev.Console) and e.tid == tid]


def migrations(system, since=0):
    return [e for e in system.events[since:] if isinstance(e, ev.Migrated)]


def task_record(report, name):
    matches = [t for t in report["tasks"] if t["name"] == name]
    assert len(matches) == 1, f"expected one task {name!r} in the report"
    return matches[0]


# ---- guest state that a refused operation must not touch ----

def pad_bytes(system):
    """Every pad of the image, as guest RAM holds it now."""
    return {p.function: system.machine.read(p.address, PAD_SIZE) for p in system.image.pads}


def universe_bytes(system):
    """Every live task's kgr_universe byte, and the interrupt context's flag
    (an exited task, such as a finished insmod, waits for nothing)."""
    off = system.kernel.c["TASK_kgr_universe"]
    state = {t.tid: system.machine.u8(t.base + off) for t in system.tasks
             if t.state.value not in ("dead", "unused")}
    state["irq"] = system.machine.u8(system.image.address("kgr_irq_universe"))
    return state


def module_area(system):
    """The module area, with the writable data of loaded modules (which
    their code changes as it runs) left out."""
    ram = bytearray(system.machine.read(MODULE_AREA[0], MODULE_AREA[1] - MODULE_AREA[0]))
    for mod in system.modules.modules:
        for address, size in mod.writable():
            ram[address - MODULE_AREA[0]:address - MODULE_AREA[0] + size] = bytes(size)
    return bytes(ram)


def body_entries(system, function):
    """Record every time the original body of a kernel function runs (the
    instruction after its pad: reached when the pad is the NOP, or when the
    trampoline returned to it).  A list of (at, tid, in_irq), kept up to date."""
    seen = []
    address = system.image.pad(function).address + PAD_SIZE
    system.machine.add_code_hook(
        address, lambda _a: seen.append((system.clock, system.kernel.current, system.kernel.in_interrupt)))
    return seen


# ---- the command line, in this process ----

def run_cli(capsys, *argv):
    """(status, stdout, stderr) of `lab ARGV...`."""
    capsys.readouterr()
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


# ---- patches built with gcc for a test ----

HAVE_GCC = shutil.which("gcc") is not None and shutil.which("make") is not None


def gcc_test(fn):
    """Mark a test that builds a patch with gcc; it is skipped without gcc."""
    fn = pytest.mark.skipif(not HAVE_GCC, reason="needs gcc and make to build a patch")(fn)
    return pytest.mark.gcc(fn)


@pytest.fixture(scope="session")
def build_patch(tmp_path_factory):
    """build_patch(name) compiles tests/data/patches/NAME.c with `lab patch
    build`'s flags into a temporary directory (once per session); the path of
    the object."""
    from lab.patchbuild import build_patch as build
    out_dir = tmp_path_factory.mktemp("patches")
    built = {}

    def get(name):
        if name not in built:
            built[name] = build(DATA / "patches" / f"{name}.c", out_dir / f"{name}.o")
        return built[name]

    return get


def without_grace_period(monkeypatch):
    """Undo the trampolines' grace period: a transition starts at once, even
    while a task may still be inside an earlier transition's trampoline (the
    stale-trampoline race the grace period prevents)."""
    from lab.livepatch.core import Livepatch
    original = Livepatch._begin

    def no_grace(self, patch, funcs, target, verb, quiet=False):
        retired, self.ftrace.retired = self.ftrace.retired, {}
        try:
            return original(self, patch, funcs, target, verb, quiet)
        finally:
            self.ftrace.retired.update(retired)
    monkeypatch.setattr(Livepatch, "_begin", no_grace)
