"""Traces: the state replayed at any step is the state the run had there; files are written atomically and
refused, naming the file, when they come from another image or schema or are damaged; recording is deterministic."""
from __future__ import annotations

import json
import pathlib
import random
import zipfile
import zlib

import pytest
from unicorn import UC_HOOK_CODE

import lab
from lab.trace import TRACE_SCHEMA, Trace, TraceError, settle
from trace_helpers import boot, drive, record, recorded, rewrite


@pytest.fixture(scope="module")
def trace():
    path, _ = recorded()
    return Trace.load(path)


def _chosen_steps(trace):
    """About 30 steps across several tasks: around the patch load, the fake signal,
    the pipe reader's safe point, context switches, ticks, calls, and random ones."""
    events = trace.events
    first = next(e.at for e in events if e.kind == "booted") + 1000
    started = next(e for e in events if e.kind == "patch" and e.state == "transition")
    fake = next(e for e in events if e.kind == "signal" and e.fake)
    reader = next(e for e in events if e.kind == "migrated" and e.by == "fake-signal")
    call = next(e for e in events if e.kind == "call")
    steps = {started.at - 1, started.at, started.at + 1, started.at + 7,
             fake.at - 1, fake.at, fake.at + 1, reader.at - 1, reader.at, reader.at + 1, call.at}
    switches = [e for e in events if e.kind == "switch" and e.at > first]
    rng = random.Random(4)
    for sw in rng.sample(switches, 5):
        steps |= {sw.at, sw.at + 1}
    ticks = [e for e in events if e.kind == "irq" and e.at > first]
    for irq in rng.sample(ticks, 3):
        steps |= {irq.at - 1, irq.at}
    while len(steps) < 34:
        steps.add(rng.randrange(first, trace.end - 1))
    return sorted(s for s in steps if first <= s < trace.end)


@pytest.fixture(scope="module")
def reference(trace):
    """The same scenario, not recorded, observed by a hook on every instruction:
    registers and RAM at the chosen steps (clock = instructions retired before the hooked one)."""
    wanted = set(_chosen_steps(trace))
    seen = {}
    system = boot(record=False)
    m = system.machine

    def on_code(uc, address, size, _):
        clock = m.clock
        if clock in wanted and clock not in seen:
            seen[clock] = (m.regs(), zlib.compress(bytes(m.ram), 1))

    m._uc.hook_add(UC_HOOK_CODE, on_code)
    m._uc.ctl_flush_tb()
    drive(system)
    return system, wanted, seen


def _first_difference(a, b):
    i = next(i for i in range(len(a)) if a[i] != b[i])
    return i


def test_the_reference_run_is_the_recorded_run(trace, reference):
    system, _, _ = reference
    assert system.digest == trace.header["digest"]
    assert system.clock == trace.end


def test_the_chosen_steps_cover_several_tasks_the_patch_load_and_the_fake_signal(trace, reference):
    from lab.viewer import TraceIndex
    _, wanted, seen = reference
    ix = TraceIndex(trace)
    assert len(seen) >= 28, f"the hook saw only {len(seen)} of {len(wanted)} chosen steps"
    assert len({ix.current_at(s) for s in seen}) >= 4
    started = next(e.at for e in trace.events if e.kind == "patch" and e.state == "transition")
    fake = next(e.at for e in trace.events if e.kind == "signal" and e.fake)
    assert started in seen and fake in seen


def test_the_state_replayed_at_a_step_is_the_state_the_run_had_there(trace, reference):
    _, _, seen = reference
    rp = trace.replayer()
    for step in sorted(seen, key=lambda s: (s * 7919) % 104729):   # not in order: seeks go back and forth
        regs, ram = seen[step]
        settle(rp.seek(step))
        assert rp.clock == step
        got = rp.regs()
        diff = {k: (hex(regs[k]), hex(got[k])) for k in regs if regs[k] != got[k]}
        assert not diff, f"step {step:,}: registers differ (run, replay): {diff}"
        ram = zlib.decompress(ram)
        replayed = bytes(rp.machine.ram)
        if ram != replayed:
            off = _first_difference(ram, replayed)
            pytest.fail(f"step {step:,}: RAM differs first at {0x100000 + off:#x} "
                        f"({trace.symbolize(0x100000 + off)})")


def test_the_replayed_tasks_and_universes_follow_the_migrations(trace):
    rp = trace.replayer()
    reader = next(e for e in trace.events if e.kind == "migrated" and e.by == "fake-signal")
    fake = next(e for e in trace.events if e.kind == "signal" and e.fake)
    rp.seek(fake.at)
    row = next(t for t in rp.tasks() if t["tid"] == reader.tid)
    assert row["universe"] != rp.target_universe and not row["current"]
    rp.seek(reader.at + 1)
    row = next(t for t in rp.tasks() if t["tid"] == reader.tid)
    assert row["universe"] == rp.target_universe == 1 and row["current"] and rp.current == reader.tid


# ---- files ----

def test_a_trace_is_written_atomically_and_loads(trace, tmp_path):
    path, _ = recorded()
    assert not list(path.parent.glob("*.partial"))
    with zipfile.ZipFile(path) as z:
        assert {"header.json", "events.jsonl", "actions.json", "answers.json", "keyframes.bin"} <= set(z.namelist())
    assert trace.header["schema"] == TRACE_SCHEMA
    assert trace.start == 0 and trace.end > 2_000_000


def test_a_save_that_fails_leaves_neither_the_file_nor_a_partial_one(tmp_path, monkeypatch):
    system = boot(record=True)
    system.run(50_000)

    def broken(self, name, data, *a, **k):
        if name == "keyframes.bin":
            raise OSError("disk full")
        return original(self, name, data, *a, **k)
    original = zipfile.ZipFile.writestr
    monkeypatch.setattr(zipfile.ZipFile, "writestr", broken)
    with pytest.raises(OSError):
        system.save_trace(tmp_path / "t.trace")
    assert list(tmp_path.iterdir()) == []


def test_a_trace_of_another_image_is_refused_naming_the_file(tmp_path):
    path, _ = recorded()
    other = rewrite(path, tmp_path / "other-image.trace", header=lambda h: h.update(image_hash="0" * 64))
    with pytest.raises(TraceError, match="other-image.trace.*another kernel image"):
        Trace.load(other)


def test_a_trace_of_another_schema_is_refused_naming_the_file(tmp_path):
    path, _ = recorded()
    other = rewrite(path, tmp_path / "old-schema.trace", header=lambda h: h.update(schema=TRACE_SCHEMA + 1))
    with pytest.raises(TraceError, match="old-schema.trace.*schema"):
        Trace.load(other)


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty", "no events member"])
def test_a_damaged_trace_is_refused_naming_the_file(tmp_path, damage):
    path, _ = recorded()
    bad = tmp_path / f"{damage.replace(' ', '-')}.trace"
    data = path.read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[:len(data) // 2])
    elif damage == "random bytes":
        bad.write_bytes(random.Random(7).randbytes(len(data)))
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        rewrite(path, bad, drop=("events.jsonl",))
    with pytest.raises(TraceError, match=bad.name):
        Trace.load(bad)


@pytest.mark.parametrize("damage", ["flipped bytes inside events.jsonl", "header without keyframes"])
def test_a_trace_damaged_inside_a_member_is_refused_naming_the_file(tmp_path, damage):
    path, _ = recorded()
    bad = tmp_path / "inside.trace"
    if damage == "header without keyframes":
        rewrite(path, bad, header=lambda h: h.pop("keyframes"))
    else:
        data = bytearray(path.read_bytes())
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("events.jsonl")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 200
        data[start:start + 16] = bytes(b ^ 0xFF for b in data[start:start + 16])
        bad.write_bytes(bytes(data))
    with pytest.raises(TraceError, match=bad.name):
        Trace.load(bad)


def test_a_missing_trace_is_refused_with_how_to_record_one(tmp_path):
    with pytest.raises(TraceError, match="record one"):
        Trace.load(tmp_path / "nothing.trace")


def test_equal_recorded_runs_give_byte_identical_events(tmp_path):
    path, digest = recorded()
    again = tmp_path / "again.trace"
    system = record(again)
    assert system.digest == digest
    with zipfile.ZipFile(path) as a, zipfile.ZipFile(again) as b:
        assert a.read("events.jsonl") == b.read("events.jsonl")
        assert json.loads(a.read("actions.json")) == json.loads(b.read("actions.json"))


def test_keyframes_find_the_same_changed_pages_as_comparing_page_by_page():
    import random
    from lab.trace import PAGE, _changed_pages
    rng = random.Random(7)
    size = 1792 * PAGE
    ram = bytes(rng.getrandbits(8) for _ in range(4096)) * (size // 4096)
    for touched in ([], [0], [1791], [3, 4, 64, 65, 1000], rng.sample(range(1792), 40)):
        prev = bytearray(ram)
        for page in touched:
            prev[page * PAGE + rng.randrange(PAGE)] ^= 0x5A
        expected = [p for p in range(1792) if ram[p * PAGE:(p + 1) * PAGE] != prev[p * PAGE:(p + 1) * PAGE]]
        assert _changed_pages(ram, bytes(prev)) == expected


def test_a_full_keyframe_holds_the_pages_that_are_not_zero_and_gives_back_all_of_ram(trace):
    from lab.trace import NPAGES, PAGE
    full = [f for f in trace.keyframes if f.full]
    assert full and full[0].index == 0
    for frame in full:
        ram = trace.ram_at(frame)
        nonzero = [p for p in range(NPAGES) if any(ram[p * PAGE:(p + 1) * PAGE])]
        assert trace.pages_of(frame) == nonzero
        assert len(nonzero) < NPAGES // 4     # most of RAM is zero: that is the saving


def test_recording_keeps_no_copy_of_ram_per_keyframe():
    """Memory while recording grows with the events and the compressed pages
    that changed, not with keyframes times RAM."""
    import tracemalloc
    from lab.machine import RAM_BASE, RAM_END
    system = lab.boot(record=True, keyframe_every=50_000)
    system.run(500_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        frames = len(system.recorder.keyframes)
        system.run(1_500_000)
        grown = tracemalloc.get_traced_memory()[0] - before
        taken = len(system.recorder.keyframes) - frames
    finally:
        tracemalloc.stop()
    assert taken >= 25
    assert grown < (RAM_END - RAM_BASE) // 2, f"{grown:,} bytes for {taken} keyframes"


def test_a_seek_replays_at_most_the_distance_to_its_keyframe_wherever_the_step_is(tmp_path):
    """Once a trace is verified, a seek near its end replays no more than one
    near its start: the cost of a step does not grow with its position."""
    every = 100_000
    system = lab.boot(record=True, keyframe_every=every)
    system.run(2_000_000)
    path = system.save_trace(tmp_path / "long.trace")
    trace = Trace.load(path).verify()
    rp = trace.replayer()
    try:
        for step in (trace.start + 150_000, trace.end // 2 + 37_000, trace.end - 1_000):
            replayed = trace.replayed
            rp.seek(step)
            assert rp.clock == step
            assert trace.replayed - replayed <= every + 20_000     # to the step, and a tick delivered there
    finally:
        rp.close()


def test_keyframes_from_the_touched_pages_are_the_keyframes_of_comparing_all_of_ram(tmp_path, monkeypatch):
    """A keyframe compares only the RAM pages the host has backed
    (/proc/self/pagemap); where that cannot be read every page is compared,
    and the trace must be the same bytes either way."""
    import lab.trace as lab_trace
    first = record(tmp_path / "touched.trace")
    assert first.recorder._touched._fd is not None or not pathlib.Path("/proc/self/pagemap").exists()
    monkeypatch.setattr(lab_trace._TouchedPages, "read",
                        lambda self: ([(0, self._n)], b"\x01" * self._n))
    record(tmp_path / "all.trace")
    with zipfile.ZipFile(tmp_path / "touched.trace") as a, zipfile.ZipFile(tmp_path / "all.trace") as b:
        assert a.read("keyframes.bin") == b.read("keyframes.bin")
