"""Snapshots of a whole system (lab/snapshot.py, Machine.snapshot/restore): restored, a system runs as a fresh boot does."""
import pathlib

import pytest

import lab
from lab.errors import UsageError
from lab.events import Console
from lab.machine import RAM_BASE
from lab.snapshot import restore, snapshot

PATCHES = pathlib.Path(__file__).resolve().parent.parent / "patches"
CAPABLE = PATCHES / "kgr_capable.o"
PAIR = PATCHES / "kgr_proto_pair.o"
SLEEPER = PATCHES / "kgr_pipe_wait.o"
CMDLINE = PATCHES / "livepatch_cmdline.o"


def _run(system, patch, preempt=(), patch_at=600_000, signal_after=None):
    """A patch run as lab run makes it; what a run is compared on."""
    system.livepatch.signal_after = signal_after
    if preempt:
        system.kernel.preempt_at(list(preempt))
    system.run(patch_at - system.clock)
    system.apply_patch(patch)
    system.run(900_000, until=lambda s: s.livepatch.busy is None)
    system.run(200_000)
    return {
        "digest": system.digest,
        "events": [e.to_dict() for e in system.events],
        "state": system.state_digest(),
        "clock": system.clock,
        "violations": [v.to_dict() for v in system.violations()],
        "report": system.report(),
    }


def _fresh(patch, model, **kwargs):
    with lab.boot(observe=True, seed=1, model=model) as system:
        return _run(system, patch, **kwargs)


def _page_protections(system):
    """The CPU's access rights of every RAM page, as Unicorn holds them."""
    perms = {}
    for begin, end, prot in system.machine._uc.mem_regions():
        for page in range(begin, end + 1, 4096):
            perms[page] = prot
    return perms


SCHEDULES = {     # several in a row on one system, some of them twice
    "kgraft": [(CAPABLE, {"signal_after": 150_000}), (SLEEPER, {"signal_after": 150_000, "preempt": (605_000,)}),
               (PAIR, {"preempt": (612_345, 640_000)}), (CMDLINE, {"patch_at": 700_000, "signal_after": 100_000}),
               (CAPABLE, {"signal_after": 150_000})],
    "immediate": [(PAIR, {"preempt": (612_345, 640_000)}), (CAPABLE, {}), (PAIR, {})],
    "klp": [(SLEEPER, {"signal_after": 150_000}), (CMDLINE, {"patch_at": 700_000}), (SLEEPER, {"signal_after": 150_000})],
    # the stop IPI's return hook and the attribute that remembers it come after the snapshot: both must go
    "stop-machine": [(CAPABLE, {}), (SLEEPER, {}), (CAPABLE, {})],
}


@pytest.mark.parametrize("model", sorted(SCHEDULES))
def test_schedule_after_schedule_a_restored_system_runs_as_a_freshly_booted_one(model):
    with lab.boot(observe=True, seed=1, model=model) as system:
        snap = snapshot(system)
        for patch, kwargs in SCHEDULES[model]:
            restore(system, snap)
            got = _run(system, patch, **kwargs)
            want = _fresh(patch, model, **kwargs)
            assert got["clock"] == want["clock"]
            assert got["events"] == want["events"], patch.name
            assert got["digest"] == want["digest"], patch.name
            assert got["state"] == want["state"], patch.name
            assert got["report"] == want["report"], patch.name


def test_restoring_brings_back_the_clock_the_events_and_the_running_digest():
    with lab.boot(observe=True) as system:
        system.run(100_000)
        snap = snapshot(system)
        at, digest, events = system.clock, system.digest, list(system.events)
        system.apply_patch(CAPABLE)
        system.run(300_000)
        assert system.digest != digest
        snap.restore()
        assert system.clock == at == snap.at
        assert list(system.events) == events
        assert system.digest == digest
        assert [p.name for p in system.patches] == [] and system.modules.modules == []


def test_a_snapshot_taken_before_the_patch_later_than_boot_serves_too():
    want = _fresh(SLEEPER, "kgraft", signal_after=150_000, preempt=(650_000,))
    with lab.boot(observe=True, seed=1) as system:
        system.run(600_000 - system.clock)
        snap = snapshot(system)
        for _ in range(2):
            snap.restore()
            assert _run(system, SLEEPER, signal_after=150_000, preempt=(650_000,)) == want


def test_memory_protections_are_as_they_were_after_a_module_was_loaded_and_restored():
    with lab.boot(observe=True) as system:
        snap = snapshot(system)
        before = _page_protections(system)
        system.apply_patch(CAPABLE)
        system.run_until_patched(2_000_000)
        loaded = system.modules.history[-1]
        assert _page_protections(system)[loaded.base] != before[loaded.base]   # its text is read-only now
        snap.restore()
        assert system.machine.read_only_ranges == snap.machine["state"]["read_only_ranges"]
        assert _page_protections(system) == before


def test_a_code_hook_added_after_the_snapshot_is_gone_and_one_from_before_still_fires():
    with lab.boot(observe=True) as system:
        before, after = [], []
        system.ftrace.register_tracer("do_gethostname", before.append)
        snap = snapshot(system)
        system.ftrace.register_tracer("capable", after.append)
        system.run(300_000)
        assert before and after
        snap.restore()
        before.clear()
        after.clear()
        system.run(300_000)
        assert before and not after


def test_restored_ram_is_the_snapshots_byte_for_byte_and_the_cpu_runs_from_its_registers():
    with lab.boot() as system:
        snap = snapshot(system)
        ram, regs = bytes(system.machine.ram), system.machine.regs()
        system.run(500_000)
        system.machine.write(0x5F0000, b"scribbled over by a test")
        snap.restore()
        assert bytes(system.machine.ram) == ram
        assert system.machine.regs() == regs


def test_a_page_first_touched_after_the_snapshot_is_zero_again_after_a_restore():
    """A snapshot copies, and a restore compares, only the RAM pages the host
    has backed (/proc/self/pagemap): a page backed since the snapshot must be
    compared too, and comes back as the zeros it was."""
    with lab.boot() as system:
        m = system.machine
        snap = snapshot(system)
        _runs, backed = m._touched.read()
        page = max(i for i in range(len(backed)) if not backed[i] and i * 4096 < 0x5F0000 - RAM_BASE)
        address = RAM_BASE + page * 4096 + 100
        system.run(300_000)
        m.write(address, b"written after the snapshot")
        snap.restore()
        assert m.read(address, 26) == bytes(26)
        assert bytes(m.ram) == bytes(snap.machine["ram"])


def test_a_snapshot_is_refused_while_a_module_is_loaded():
    with lab.boot(observe=True) as system:
        system.apply_patch(CAPABLE)
        with pytest.raises(UsageError, match="kgr_capable is loaded"):
            snapshot(system)


def test_a_recording_system_and_a_closed_one_are_refused():
    with lab.boot(record=True) as system:
        with pytest.raises(UsageError, match="records a trace"):
            snapshot(system)
    system = lab.boot()
    snap = snapshot(system)
    system.close()
    with pytest.raises(UsageError, match="closed"):
        snapshot(system)
    with pytest.raises(UsageError, match="closed"):
        snap.restore()


def test_a_snapshot_restores_only_the_system_it_was_taken_of():
    with lab.boot() as a, lab.boot() as b:
        snap = snapshot(a)
        with pytest.raises(UsageError, match="the system it was taken of"):
            restore(b, snap)


def test_a_hook_of_the_snapshot_removed_since_is_back_after_the_restore_under_its_handle():
    """A restore to an earlier snapshot removes the hooks added since; a
    later snapshot that had them must get them back, or a run restored to
    it would miss events (the explorer restores to either, in any order)."""
    with lab.boot(observe=True) as system:
        early = snapshot(system)
        calls = []
        handle = system.ftrace.register_tracer("capable", calls.append)
        late = snapshot(system)
        system.run(300_000)
        seen = len(calls)
        assert seen
        early.restore()                       # the hook goes
        system.run(300_000)
        assert len(calls) == seen
        late.restore()                        # and comes back
        system.run(300_000)
        assert len(calls) == 2 * seen         # the same run from the same state: the same calls again
        system.ftrace.unregister_tracer(handle)
        system.run(300_000)
        assert len(calls) == 2 * seen


def test_the_console_of_a_restored_run_starts_from_the_snapshots():
    with lab.boot(observe=True) as system:
        snap = snapshot(system)
        lines = len(system.kernel.log.of(Console))
        system.apply_patch(CAPABLE)
        system.run(500_000)
        assert len(system.kernel.log.of(Console)) > lines
        snap.restore()
        assert len(system.kernel.log.of(Console)) == lines


def test_a_snapshot_with_a_module_loaded_brings_the_module_back_as_it_was():
    """snapshot(loaded=True), the explorer's after a load: what the run
    after it does to the module (rmmod) must not reach the snapshot."""
    mod = PATCHES / "test_modules" / "test_klp_callbacks_mod.o"
    with lab.boot(observe=True) as system:
        system.run(600_000)
        system.insmod(mod)
        snap = snapshot(system, loaded=True)
        ends = []
        for _ in range(2):
            snap.restore()
            module = next(m for m in system.modules.modules if m.name == "test_klp_callbacks_mod")
            assert module.loaded
            system.rmmod("test_klp_callbacks_mod")
            assert not module.loaded
            system.run(200_000)
            ends.append((system.clock, system.digest, bytes(system.machine.ram)))
        assert ends[0] == ends[1]
        system.insmod(mod)
        with pytest.raises(UsageError, match="is loaded"):
            snapshot(system)          # without loaded=True: refused, as before


def test_a_restore_copies_what_runs_change_and_shares_what_nothing_changes():
    """Each restore reads a fresh copy of the layers' state: lists, dicts
    and objects are new ones (what one run does to them cannot reach the
    next), references between layers stay references to the layers, and
    frozen records (the events, a module's symbols) and paths are the
    snapshot's own objects, which nothing can change."""
    with lab.boot(observe=True) as system:
        system.run(600_000)
        system.apply_patch(CAPABLE)
        snap = snapshot(system, loaded=True)
        snap.restore()
        first_events, first_module = system.kernel.log.events, system.modules.modules[0]
        first_symbol = next(iter(first_module.symbols.values()))
        first_events.append("scribbled by a test")
        first_module.symbols.clear()
        snap.restore()
        log, module = system.kernel.log, system.modules.modules[0]
        assert log.events is not first_events and "scribbled by a test" not in log.events
        assert module is not first_module and module.symbols
        assert next(iter(module.symbols.values())) is first_symbol         # frozen: shared
        assert log.events[0] is first_events[0]                           # frozen: shared
        assert module.path is first_module.path
        assert system.livepatch.kernel is system.kernel and system.ftrace.machine is system.machine
        assert system.kernel.log is log and system.livepatch.modules is system.modules


def test_an_attribute_no_snapshot_can_copy_is_named_with_what_to_do():
    import threading
    with lab.boot() as system:
        system.kernel.guard_lock = threading.Lock()
        with pytest.raises(UsageError, match=r"cannot snapshot Kernel\.guard_lock: .*lock.*__snapshot__"):
            snapshot(system)


def test_a_frozen_record_that_holds_a_list_is_copied_and_one_of_immutable_values_shared():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Holder:
        name: str
        items: object

    with lab.boot() as system:
        plain, nested, holding = Holder("a", (1, "x", None)), Holder("b", (Holder("c", ()),)), Holder("d", [1])
        system.kernel.records = (plain, nested, holding)
        snap = snapshot(system)
        holding.items.append("after the snapshot")
        snap.restore()
        got = system.kernel.records
        assert got[0] is plain and got[1] is nested
        assert got[2] is not holding and got[2].items == [1]
