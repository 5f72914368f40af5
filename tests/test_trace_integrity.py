"""Trace integrity: a damaged trace is refused in one line that names what is wrong and says to record it again,
never another exception and never a wrong answer; a forger who recomputes every hash is caught by the replay, which
checks the recorded events and keyframes; a valid trace is accepted and replays as it was recorded."""
from __future__ import annotations

import asyncio
import json
import os
import pathlib
import re
import tracemalloc
import zipfile
import zlib

import pytest

import lab
from lab.fuzz.traces import Base, fuzz_traces, judge, probe, raw_zip
from lab.trace import MEMBERS, TRACE_SCHEMA, Trace, TraceError
from trace_helpers import CAPABLE, members, recorded, rewrite

BAD_PATCHES = pathlib.Path(CAPABLE).parent / "bad"


@pytest.fixture(scope="module")
def original():
    path, _ = recorded()
    return path


@pytest.fixture(scope="module")
def trace(original):
    return Trace.load(original)


def refused(path, *patterns, seek=None):
    """The TraceError that loading path (and replaying it to `seek`, or to
    its end) gives: one line, naming the file, saying to record it again."""
    with pytest.raises(TraceError) as info:
        t = Trace.load(path)
        try:
            rp = t.replayer()
            try:
                rp.seek(t.end if seek is None else seek)
            finally:
                rp.close()
        finally:
            t.close()
    text = str(info.value)
    assert "\n" not in text, text
    assert text.startswith(f"{path}: ") and "record it again" in text, text
    for pattern in patterns:
        assert re.search(pattern, text), f"{pattern!r} not in: {text}"
    return text


def rezip(src, dst, edit):
    """Copy a trace, each member's bytes through edit(name, bytes), re-zipped
    with fresh CRCs and the header left as it was."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            zout.writestr(name, edit(name, zin.read(name)))
    return dst


def event_of(original, kind, after=0, where=None, **fields):
    """(index, dict) of the first event of kind after step `after` with these
    fields for which where(events, index) holds."""
    _, data = members(original)
    events = [json.loads(line) for line in data["events.jsonl"].decode().split("\n")]
    return next((i, e) for i, e in enumerate(events)
                if e["kind"] == kind and e["at"] > after and all(e[k] == v for k, v in fields.items())
                and (where is None or where(events, i)))


def alone(events, i):
    """Whether events[i] can move one step later and stay in order."""
    return i + 1 < len(events) and events[i + 1]["at"] > events[i]["at"] + 1


def kernel_line(events, i):
    return not events[i]["text"].startswith("livepatch: ")


# ---- a valid trace ----

def test_a_valid_trace_is_verified_by_replaying_each_instruction_once(original):
    t = Trace.load(original)
    t.verify()
    assert t.replayed == t.end - t.start
    rp = t.replayer()
    middle = (t.start + t.end) // 2
    rp.seek(middle)
    assert rp.clock == middle
    assert t.replayed - (t.end - t.start) <= middle - t.keyframe_for(middle).at + 2 * t.header["quantum"]
    rp.close()
    t.close()


def test_a_copy_zipped_differently_is_accepted_and_replays_the_same_states(original, tmp_path):
    image = lab.Image.load()
    base = Base(original, image)
    copy = rezip(original, tmp_path / "copy.trace", lambda name, data: data)
    assert copy.read_bytes() != original.read_bytes()
    got, _ = probe(Trace.load(copy, image=image), base.steps)
    assert got == base.probe and len(got["states"]) == 3


def _stop_machine(system):
    system.run(1_000_000 - system.clock)
    system.apply_patch(CAPABLE)
    system.run_until_patched(3_000_000)
    system.run(100_000)


def _oopsing_init(system):
    system.run(300_000)
    with pytest.raises(lab.LabError, match="oopsed"):
        system.apply_patch(BAD_PATCHES / "init_null_deref.o")
    system.run(200_000)


def _reverted(system):
    system.run(600_000)
    patch = system.apply_patch(CAPABLE)
    system.run(200_000)
    system.revert(patch.name)
    system.run(50_000)
    if system.transition is not None:
        system.send_fake_signals()
    system.run_until_patched(3_000_000)
    system.run(50_000)


@pytest.mark.parametrize("scenario, model", [(_stop_machine, "stop-machine"), (_oopsing_init, "kgraft"),
                                             (_reverted, "klp")],
                         ids=["stop-machine IPI (the lab interrupts the CPU)", "a module's init oopses and is freed",
                              "a revert under klp"])
def test_traces_of_runs_where_the_lab_acts_on_the_machine_verify(tmp_path, scenario, model):
    with lab.boot(record=True, model=model, signal_after=400_000) as system:
        scenario(system)
        path = system.save_trace(tmp_path / "run.trace")
    t = Trace.load(path)
    t.verify()
    assert t.replayed == t.end - t.start
    t.close()


# ---- damage the zip layer cannot see ----

@pytest.mark.parametrize("member", MEMBERS[1:])
def test_a_member_changed_and_rezipped_with_a_valid_crc_is_refused_naming_the_member(original, tmp_path, member):
    def flip(name, data):
        if name != member:
            return data
        data = bytearray(data)
        data[len(data) // 2] ^= 0x01
        return bytes(data)
    bad = rezip(original, tmp_path / "flipped.trace", flip)
    with zipfile.ZipFile(bad) as z:
        assert z.testzip() is None       # every CRC holds
    refused(bad, rf"{re.escape(member)} does not match its sha256 in the header")


def test_a_header_value_changed_without_its_hash_is_refused(original, tmp_path):
    bad = rewrite(original, tmp_path / "header.trace", header=lambda h: h.update(quantum=h["quantum"] + 1), seal=False)
    refused(bad, r"header\.json does not match its own sha256")


def test_a_header_number_beyond_a_floats_range_is_refused_as_invalid_json(original, tmp_path):
    def huge(name, data):
        assert name != "header.json" or b'"quantum":20000,' in data
        return data.replace(b'"quantum":20000,', b'"quantum":1e999,') if name == "header.json" else data
    refused(rezip(original, tmp_path / "huge.trace", huge),
            r"header\.json is not valid JSON \(1e999 is not a number a trace holds\)")


def test_a_header_whose_digest_is_not_its_events_digest_is_refused(original, tmp_path):
    bad = rewrite(original, tmp_path / "digest.trace", header=lambda h: h.update(digest="0" * 64))
    refused(bad, r"the events' digest is not the header's digest")


def test_events_edited_without_the_digest_are_refused_before_any_replay(original, tmp_path):
    i, e = event_of(original, "console")

    def edit(events):
        events[i]["text"] = "edited"
    bad = rewrite(original, tmp_path / "events.trace", events=edit,
                  header=lambda h: h.update(digest=members(original)[0]["digest"]))
    refused(bad, r"events' digest is not the header's digest", seek=0)


# ---- consistent forgeries: every hash recomputed, replay catches them ----

@pytest.mark.parametrize("kind, field, value, where", [
    ("switch", "next", lambda v: v + 1, None),
    ("irq", "rip", lambda v: v + 2, None),
    ("console", "text", lambda v: v.upper(), kernel_line),
    ("syscall", "nr", lambda v: v + 1, None),
    ("kloop", "where", lambda v: "kgr_task_safe" if v != "kgr_task_safe" else "try_to_freeze", None),
    ("switch", "at", lambda v: v + 1, alone),
], ids=["switch.next", "irq.rip", "console.text", "syscall.nr", "kloop.where", "switch.at"])
def test_an_event_forged_with_every_hash_recomputed_is_caught_by_replay_naming_its_step(original, tmp_path, kind,
                                                                                     field, value, where):
    i, e = event_of(original, kind, after=1_000_000, where=where)

    def edit(events):
        events[i][field] = value(events[i][field])
    bad = rewrite(original, tmp_path / "forged.trace", events=edit)
    Trace.load(bad)                           # every hash holds: only the replay can tell
    refused(bad, rf"replay disagrees with the recorded events at step {e['at']:,}:", seek=e["at"] + 1)


def test_a_migration_forged_onto_another_task_is_caught_at_its_safe_point(original, tmp_path):
    i, e = event_of(original, "migrated", by="syscall-exit")

    def edit(events):
        events[i]["tid"] = 5 if e["tid"] != 5 else 4
    refused(rewrite(original, tmp_path / "migration.trace", events=edit),
            rf"at step {e['at']:,}: .*safe point moves task {e['tid']} \(syscall-exit\)")


def test_a_call_forged_onto_another_task_is_caught(original, tmp_path):
    i, e = event_of(original, "call", after=1_100_000)

    def edit(events):
        events[i]["tid"] = 5 if e["tid"] != 5 else 4
    refused(rewrite(original, tmp_path / "call.trace", events=edit),
            rf"at step {e['at']:,}: .*did not enter {e['function']} there")


def test_a_lab_event_moved_to_where_the_kernel_never_called_the_lab_is_caught(original, tmp_path):
    i, e = event_of(original, "migrated", by="freezer", where=alone)

    def edit(events):
        events[i]["at"] += 1
    refused(rewrite(original, tmp_path / "moved.trace", events=edit),
            rf"at step {e['at'] + 1:,}: .*never handed control to the lab")


def test_a_forged_keyframe_register_is_caught_even_at_the_keyframes_own_step(original, trace, tmp_path):
    frame = next(f for f in trace.keyframes if f.index > 0 and not f.lab)

    def edit(h):
        h["keyframes"][frame.index]["regs"]["r15"] ^= 0x10
    bad = rewrite(original, tmp_path / "regs.trace", header=edit)
    refused(bad, rf"keyframe {frame.index} \(step {frame.at:,}\) is not the state the replay from keyframe "
                 rf"{frame.index - 1} reaches: register r15", seek=frame.at)


@pytest.mark.parametrize("field, value, pattern", [
    ("seed", 1, r"keyframe 0 is not the state .* boot to: kernel state rng differ"),
    ("cmdline", "workload=default extra=1", r"keyframe 0 is not the state .* boot to: RAM differs"),
    ("quantum", 20_001, r"keyframe 0 is not the state .* boot to: kernel state next_tick differ"),
])
def test_forged_run_inputs_are_caught_against_a_fresh_boot(original, tmp_path, field, value, pattern):
    bad = rewrite(original, tmp_path / "inputs.trace", header=lambda h: h.update({field: value}))
    refused(bad, pattern, seek=0)


def test_a_forged_task_name_is_caught_against_the_replayed_kernel(original, tmp_path):
    def edit(h):
        h["tasks"][1]["name"] = "impostor"
    refused(rewrite(original, tmp_path / "tasks.trace", header=edit),
            r"tasks are not the replayed kernel's tasks at the end")


def test_a_forged_answer_is_caught_where_the_replay_makes_no_such_hypercall(original, trace, tmp_path):
    at, nr, _ = trace.answers[0]

    def edit(name, data):
        return json.dumps([[at, nr + 1, 0]]).encode() if name == "answers.json" else data
    refused(rewrite(original, tmp_path / "answers.trace", edit=edit),
            rf"recorded answers at step {at:,}: the trace answers hypercall {nr + 1} there, the replay makes "
            rf"hypercall {nr}")


def test_a_keyframe_moved_far_past_the_events_is_refused_after_a_bounded_replay(original, trace, tmp_path):
    far = trace.end + 5 * 10**7

    def edit(h):
        h["keyframes"][-1]["at"] = far
        h["end"] = far
    bad = rewrite(original, tmp_path / "far.trace", header=edit)
    t = Trace.load(bad)
    with pytest.raises(TraceError, match=r"the trace holds nothing, the replay gives `irq"):
        t.verify()
    assert t.replayed < trace.end + 2_000_000
    t.close()


def test_a_lab_error_during_replay_becomes_a_trace_error_naming_the_step(original, trace, tmp_path):
    at = trace.actions[0][0]

    def edit(name, data):
        if name != "actions.json":
            return data
        actions = json.loads(data)
        actions[0] = [at, "fault", [9999]]
        return json.dumps(actions).encode()
    refused(rewrite(original, tmp_path / "action.trace", edit=edit),
            rf"action fault \[9999\] at step {at:,} cannot be redone")


# ---- the schema ----

@pytest.mark.parametrize("damage, pattern", [
    (lambda e: e.update(at="1000"), r"events\.jsonl line \d+ \(irq\): at is '1000', not an integer"),
    (lambda e: e.pop("tid"), r"events\.jsonl line \d+ \(irq\): tid is missing"),
    (lambda e: e.update(rip=2**70), r"events\.jsonl line \d+ \(irq\): rip is \d+, not an integer in"),
    (lambda e: e.update(tid=-5), r"events\.jsonl line \d+ \(irq\): tid is -5, not an integer in -1\.\."),
    (lambda e: e.update(kind="nonsense"), r"events\.jsonl line \d+: kind 'nonsense' is not an event kind"),
], ids=["wrong type", "deleted key", "huge number", "negative number", "unknown kind"])
def test_an_event_record_outside_the_schema_is_refused_naming_line_and_field(original, tmp_path, damage, pattern):
    i, _ = event_of(original, "irq")

    def edit(name, data):
        if name != "events.jsonl":
            return data
        lines = data.decode().split("\n")
        e = json.loads(lines[i])
        damage(e)
        lines[i] = json.dumps(e)
        return "\n".join(lines).encode()
    refused(rewrite(original, tmp_path / "schema.trace", edit=edit), pattern)


@pytest.mark.parametrize("edit, pattern", [
    (lambda h: h["keyframes"][1]["regs"].update(rip=-1), r"keyframes\[1\]\.regs\.rip is -1"),
    (lambda h: h["keyframes"][1]["kernel"]["rng"][1].pop(), r"keyframes\[1\]\.kernel\.rng\[1\] is"),
    (lambda h: h["keyframes"][2].pop("offset"), r"keyframes\[2\]\.offset is missing"),
    (lambda h: h.update(end=h["end"] + 1), r"end is [\d,]+ but the last keyframe is at"),
    (lambda h: h.update(extra=1), r"header\.json: extra is not a field of this record"),
], ids=["negative register", "short rng state", "deleted key", "end past the last keyframe", "unknown field"])
def test_a_header_outside_the_schema_is_refused_naming_the_field(original, tmp_path, edit, pattern):
    refused(rewrite(original, tmp_path / "header.trace", header=edit), pattern)


def test_a_trace_of_the_previous_schema_is_refused_with_how_to_re_record_it(original, tmp_path):
    bad = rewrite(original, tmp_path / "v1.trace", header=lambda h: h.update(schema=1))
    text = str(pytest.raises(TraceError, Trace.load, bad).value)
    assert "schema 1 is older than this lab's (2)" in text and "lab run --trace" in text and "\n" not in text
    assert TRACE_SCHEMA == 2


# ---- the archive ----

def test_a_zip_bomb_is_refused_before_it_is_inflated(original, tmp_path):
    _, data = members(original)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b" " * (1 << 20)
    body = b"".join(comp.compress(chunk) for _ in range(256)) + comp.flush()
    entries = [("header.json", body, 256 << 20, zlib.crc32(chunk * 256), 8)]
    entries += [(n, data[n], len(data[n]), zlib.crc32(data[n]), 0) for n in MEMBERS[1:]]
    bomb = tmp_path / "bomb.trace"
    bomb.write_bytes(raw_zip(entries))
    assert bomb.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        refused(bomb, r"header\.json declares 268,435,456 bytes, more than the [\d,]+ it can hold")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_a_member_whose_zip_entry_declares_4_gib_is_refused_before_it_is_read(original, tmp_path):
    _, data = members(original)
    head = zipfile.ZipFile(original).read("header.json")
    entries = [("header.json", head, len(head), zlib.crc32(head), 0)]
    entries += [(n, data[n], 0xFFFFFFF0 if n == "events.jsonl" else len(data[n]), zlib.crc32(data[n]), 0)
                for n in MEMBERS[1:]]
    bad = tmp_path / "lying.trace"
    bad.write_bytes(raw_zip(entries))
    refused(bad, r"events\.jsonl is 4,294,967,280 bytes in the archive, the header says [\d,]+")


@pytest.mark.parametrize("cut", ["end record", "central directory", "first member"])
def test_a_truncated_trace_is_refused(original, tmp_path, cut):
    raw = original.read_bytes()
    at = {"end record": len(raw) - 10, "central directory": raw.rindex(b"PK\x01\x02") + 20,
          "first member": 200}[cut]
    bad = tmp_path / "cut.trace"
    bad.write_bytes(raw[:at])
    refused(bad)


@pytest.mark.parametrize("member", MEMBERS)
def test_a_missing_member_is_refused_naming_it(original, tmp_path, member):
    refused(rewrite(original, tmp_path / "missing.trace", drop=(member,), seal=False), rf"member {member} is missing")


def test_duplicate_renamed_and_extra_members_are_refused_naming_them(original, tmp_path):
    _, data = members(original)
    head = zipfile.ZipFile(original).read("header.json")
    pairs = [("header.json", head)] + [(n, data[n]) for n in MEMBERS[1:]]
    cases = {"member actions.json appears 2 times": pairs + [("actions.json", b"[]")],
             "unknown member 'EVENTS.JSONL'": [(n.upper() if n == "events.jsonl" else n, d) for n, d in pairs],
             "unknown member 'notes.txt'": pairs + [("notes.txt", b"hello")]}
    for expected, entries in cases.items():
        bad = tmp_path / "members.trace"
        bad.write_bytes(raw_zip([(n, d, len(d), zlib.crc32(d), 0) for n, d in entries]))
        refused(bad, re.escape(expected))


def test_a_directory_or_a_fifo_is_refused_without_being_read(tmp_path):
    (tmp_path / "dir.trace").mkdir()
    with pytest.raises(TraceError, match=r"dir\.trace: is a directory, not a trace file"):
        Trace.load(tmp_path / "dir.trace")
    os.mkfifo(tmp_path / "fifo.trace")
    with pytest.raises(TraceError, match=r"fifo\.trace: is not a regular file"):
        Trace.load(tmp_path / "fifo.trace")


def test_the_stepper_shows_where_a_forged_trace_disagrees_with_its_replay_and_keeps_running(original, tmp_path):
    from lab.viewer import Inspector
    from lab.viewer.stepper import Stepper
    i, e = event_of(original, "irq", after=2_600_000)

    def edit(events):
        events[i]["rip"] += 2
    inspector = Inspector(Trace.load(rewrite(original, tmp_path / "forged.trace", events=edit)))

    async def main():
        app = Stepper(inspector, step=1000)
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            assert app.state.step == 1000
            await pilot.press("g", *"100%", "enter")
            await pilot.pause()
            message = str(app.query_one("#message").render())
            assert f"replay disagrees with the recorded events at step {e['at']:,}" in message
            await pilot.press("g", *"50%", "enter")
            await pilot.pause()
            assert app.state.step == app.step == (inspector.start + inspector.end) // 2
    asyncio.run(main())


# ---- the fuzzer ----

def test_forty_damaged_traces_are_each_refused_in_one_line_or_replay_identically(original):
    result = fuzz_traces(40, seed=0, trace_path=original)
    assert result["failures"] == []
    assert result["cases"] == 40 == sum(result["outcomes"].values())
    assert result["outcomes"]["refused"] >= 30


def test_the_fuzzers_judge_tells_a_wrong_answer_a_crash_and_a_hang(original, tmp_path, monkeypatch):
    base = Base(original, lab.Image.load())
    with lab.boot(seed=1, record=True) as system:
        system.run(300_000)
        other = system.save_trace(tmp_path / "other.trace")
    assert judge(base, other)[0] == "silent-wrong"
    assert judge(base, original)[0] == "identical"
    monkeypatch.setattr(base, "bound", 10)
    assert judge(base, original)[0] == "hang"
    monkeypatch.setattr(Trace, "load", classmethod(lambda cls, path, image=None: {}["header.json"]))
    assert judge(base, original) == ("crash", judge(base, original)[1]) and "KeyError" in judge(base, original)[1]
    monkeypatch.setattr(Trace, "load", classmethod(lambda cls, path, image=None: (_ for _ in ()).throw(
        TraceError("two\nlines"))))
    assert judge(base, original)[0] == "crash"
