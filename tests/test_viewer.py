"""The trace viewer: step states (code with the pad as it is, registers changed since the task's previous step,
tasks with universes), their rich views and JSON, the timeline SVG, and the stepper driven headless."""
from __future__ import annotations

import asyncio
import io
import xml.etree.ElementTree as ET

import pytest
from rich.console import Console

from lab import viewer
from lab.trace import Trace, settle
from lab.viewer import Inspector, StepView, Timeline, ViewerError
from lab.viewer.stepper import HELP, Stepper
from trace_helpers import recorded

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def trace():
    path, _ = recorded()
    return Trace.load(path)


@pytest.fixture(scope="module")
def inspector(trace):
    return Inspector(trace)


def first(trace, kind, **fields):
    return next(e for e in trace.events if e.kind == kind and all(getattr(e, k) == v for k, v in fields.items()))


def render(renderable, width=140):
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, legacy_windows=False).print(renderable)
    return out.getvalue()


# ---- step states ----

def test_the_pad_reads_nop_before_the_patch_call_during_the_transition_and_jmp_after(trace, inspector):
    started = first(trace, "patch", state="transition").at
    done = first(trace, "patch", state="complete").at
    states = [inspector.state(s).pads[0] for s in (started - 1, started, done - 1, done, trace.end)]
    assert [p.state for p in states] == ["nop", "call", "call", "jmp", "jmp"]
    assert states[0].function == "capable" and states[0].target is None
    assert states[1].target_symbol.endswith("[trampoline]")
    assert states[3].target_symbol == "kgr_new_capable [kgr_capable]"


def test_the_listing_shows_the_pad_as_what_it_is_at_that_step(trace, inspector):
    pad = trace.header["pads"][0]
    started = first(trace, "patch", state="transition").at
    done = first(trace, "patch", state="complete").at
    hits = [inspector._replay_for_entry(pad, a, trace.end) for a in (0, started + 1, done + 1)]
    before, during, after = (inspector.state(h).instruction for h in hits)
    assert hits[0] < started < hits[1] < done < hits[2]
    assert (before.pad, before.text) == ("nop", "nop dword ptr [rax + rax]") and "NOP" in before.comment
    assert during.pad == "call" and during.text.startswith("call") and "[trampoline]" in during.comment
    assert after.pad == "jmp" and after.text.startswith("jmp") and "kgr_new_capable" in after.comment
    text = render(StepView(inspector.state(hits[2])))
    assert "pad: JMP -> kgr_new_capable [kgr_capable]" in text


def test_the_instruction_at_a_step_is_the_one_at_rip_with_neighbours_around_it(inspector, trace):
    st = inspector.state(first(trace, "call").at)
    before = [x for x in st.listing if x.address < st.rip]
    after = [x for x in st.listing if x.address > st.rip]
    assert st.instruction.address == st.rip
    assert len(after) == 6 and len(before) <= 6
    assert all(a.address < b.address for a, b in zip(st.listing, st.listing[1:]))


def test_registers_changed_are_those_that_differ_from_the_previous_step_of_the_same_task(trace, inspector):
    rp = trace.replayer()
    step = first(trace, "call").at + 3
    st = inspector.state(step)
    assert st.previous_step == step - 1
    before = settle(rp.seek(step - 1)).regs()
    now = settle(rp.seek(step)).regs()
    assert set(st.changed) == {n for n in now if now[n] != before[n]}
    assert "rip" in st.changed and st.regs == now


def test_after_a_switch_registers_compare_with_the_tasks_last_step_before_it_was_switched_out(trace, inspector):
    ix = inspector.index
    switches = [e for e in trace.events if e.kind == "switch"]
    # a task switched back in: its previous step is where it was switched out
    back_in = next(sw for i, sw in enumerate(switches) if i > 5 and any(s.prev == sw.next for s in switches[:i]))
    out = [s for s in switches if s.prev == back_in.next and s.at < back_in.at][-1]
    st = inspector.state(back_in.at + 1)
    assert st.current == back_in.next
    assert st.previous_step == out.at == ix.previous_step_of(back_in.next, back_in.at + 1)
    assert ix.current_at(out.at) == back_in.next and ix.current_at(out.at + 1) != back_in.next
    regs = settle(trace.replayer().seek(out.at)).regs()
    assert set(st.changed) == {n for n in regs if regs[n] != st.regs[n]}


def test_the_current_task_from_switch_events_is_the_replayed_kernels(trace, inspector):
    rp = trace.replayer()
    for sw in [e for e in trace.events if e.kind == "switch"][::37]:
        for step in (sw.at, sw.at + 1):
            assert inspector.index.current_at(step) == settle(rp.seek(step)).current


def test_tasks_are_all_old_before_the_first_transition_and_move_to_new_one_by_one(trace, inspector):
    started = first(trace, "patch", state="transition").at
    done = first(trace, "patch", state="complete").at
    assert {t.universe for t in inspector.state(started - 1).tasks} == {"old"}
    assert not inspector.state(started - 1).transition_started
    during = {t.name: t.universe for t in inspector.state(started).tasks}
    assert during["pipe-reader"] == "old"
    assert {t.universe for t in inspector.state(done).tasks if t.state != "dead" and t.tid != 0} == {"new"}


def test_the_console_so_far_holds_the_lines_printed_before_the_step(trace, inspector):
    line = first(trace, "console", text="livepatch: 'sample_kgraft_patch': patching complete")
    assert "livepatch: 'sample_kgraft_patch': patching complete" not in inspector.state(line.at).console
    assert inspector.state(line.at + 1).console[-1] == "livepatch: 'sample_kgraft_patch': patching complete"
    assert len(inspector.state(trace.end).console) == 10


def test_the_events_near_a_step_mark_past_now_and_future(trace, inspector):
    e = first(trace, "migrated", by="fake-signal")
    st = inspector.state(e.at)
    whens = [r.when for r in st.events]
    assert whens == sorted(whens, key=["past", "now", "future"].index)
    assert any(r.when == "now" and r.kind == "migrated" for r in st.events)


def test_steps_outside_the_trace_are_refused(trace, inspector):
    with pytest.raises(ViewerError, match="outside the trace"):
        inspector.state(trace.end + 1)
    with pytest.raises(ViewerError, match="outside the trace"):
        inspector.state(-1)


@pytest.mark.parametrize("text, expected", [("0", 0), ("50%", None), ("1_000", 1000), ("1,000", 1000),
                                            ("2e5", 200_000), ("+10", 1010), ("-10", 990)])
def test_a_step_can_be_given_as_a_count_a_percentage_or_relative(inspector, text, expected):
    got = inspector.index.parse_step(text, here=1000)
    if expected is None:
        expected = inspector.start + round((inspector.end - inspector.start) * 0.5)
    assert got == expected


def test_the_next_call_of_a_patched_function_stops_at_its_pad_before_the_trampoline_decides(trace, inspector):
    # issue 13, defect 6: `c capable` landed in kgr_new_capable, past the pad's CALL and the trampoline
    started = first(trace, "patch", state="transition").at
    pad = trace.header["pads"][0]
    early = inspector.next_call("capable", 0)
    assert early < started and inspector.state(early).rip == pad
    step = inspector.next_call("capable", started)
    entry = first(trace, "call", function="capable")       # recorded in the body the trampoline chose
    at_pad = inspector.state(step)
    assert at_pad.rip == pad and at_pad.instruction.pad == "call" and step < entry.at < step + 64
    symbols = [inspector.state(s).symbol for s in range(step + 1, entry.at + 1)]
    assert symbols[0].endswith("[trampoline]") and "kgr_new_capable" in symbols[-1]
    assert inspector.previous_call("capable", step + 1) == step
    before = inspector.previous_call("capable", step)
    assert before < step and inspector.state(before).rip == pad


def test_the_next_call_of_a_function_no_event_names_is_found_by_replay(trace, inspector):
    address = trace.image.function("kgr_task_safe").address
    step = inspector.next_call("kgr_task_safe", 1_500_000)
    assert step > 1_500_000 and inspector.state(step).rip == address
    with pytest.raises(ViewerError, match="no function 'no_such_function'"):
        inspector.next_call("no_such_function", 0)


# ---- views ----

def test_the_step_view_renders_code_registers_tasks_events_and_console(trace, inspector):
    e = first(trace, "migrated", by="fake-signal")
    text = render(StepView(inspector.state(e.at)))
    for part in ("code", "registers", "tasks", "events", "console so far", "pipe-reader", "fake-signal",
                 f"{e.at:,}", "universe", "target universe 1", "capable: CALL -> "):
        assert part in text, part
    assert "▶" in text


def test_the_views_display_inline_in_jupyter(trace, inspector):
    view = viewer.show_step(trace, first(trace, "call").at)
    bundle = view._repr_mimebundle_(include=None, exclude=None)
    assert "text/plain" in bundle and "registers" in bundle["text/plain"]
    bundle = Timeline(trace)._repr_mimebundle_()
    assert "text/html" not in bundle and "text/plain" in bundle
    assert bundle["image/svg+xml"] == Timeline(trace)._repr_svg_()
    assert ET.fromstring(bundle["image/svg+xml"]).tag == SVG + "svg"


def test_show_json_is_stable_and_correct_at_the_pipe_readers_safe_point(run_lab, trace):
    path, _ = recorded()
    e = first(trace, "migrated", by="fake-signal")
    fake = first(trace, "signal", fake=True)
    result = run_lab("trace", "show", path, "--step", e.at, "--json")
    assert result.status == 0, result.err
    again = run_lab("trace", "show", path, "--step", e.at, "--json")
    assert again.out == result.out
    d = result.json
    assert d["step"] == e.at and d["current"] == e.tid and d["current_name"] == "pipe-reader"
    assert d["instruction"]["address"] == d["rip"] == d["regs"]["rip"]
    assert d["symbol"] and d["instruction"]["text"]
    assert set(d["changed"]) <= set(d["regs"]) and d["previous_step"] < e.at
    reader = next(t for t in d["tasks"] if t["tid"] == e.tid)
    assert reader == {**reader, "name": "pipe-reader", "state": "running", "universe": "new", "current": True}
    assert any(ev["kind"] == "migrated" and ev["when"] == "now" for ev in d["events"])
    assert d["pads"][0]["state"] == "call" and d["in_irq"] is False
    # woken by the fake signal in the old universe, it moves at its kernel exit, a few steps before the event
    old = run_lab("trace", "show", path, "--step", fake.at, "--json").json
    assert next(t for t in old["tasks"] if t["tid"] == e.tid)["universe"] == "old"
    seen = []
    for step in range(e.at - 16, e.at + 2):
        d = run_lab("trace", "show", path, "--step", step, "--json").json
        assert d["current"] == e.tid
        seen.append(next(t for t in d["tasks"] if t["tid"] == e.tid)["universe"])
    flip = seen.index("new")
    assert 0 < flip and set(seen[:flip]) == {"old"} and set(seen[flip:]) == {"new"}


def test_show_renders_a_step_and_refuses_one_outside_the_trace(run_lab, trace):
    path, _ = recorded()
    result = run_lab("trace", "show", path, "--step", "50%")
    assert result.status == 0 and "registers" in result.out
    result = run_lab("trace", "show", path, "--step", trace.end + 1)
    assert result.status == 2 and "outside the trace" in result.err and str(path) in result.err
    result = run_lab("trace", "show", path.parent / "missing.trace", "--step", 1)
    assert result.status == 2 and "missing.trace" in result.err


def test_view_refuses_a_missing_trace_or_a_step_outside_it_before_starting(run_lab, trace):
    path, _ = recorded()
    result = run_lab("trace", "view", path.parent / "missing.trace")
    assert result.status == 2 and "missing.trace" in result.err
    result = run_lab("trace", "view", path, "--step", "soon")
    assert result.status == 2 and "not a step" in result.err
    result = run_lab("trace", "view", path, "--step", trace.end + 1)
    assert result.status == 2 and "outside the trace" in result.err


# ---- timeline ----

@pytest.fixture(scope="module")
def svg(trace, tmp_path_factory):
    out = tmp_path_factory.mktemp("timeline") / "t.svg"
    Timeline(trace).save(out)
    return ET.parse(out).getroot(), out


def _with_class(root, name):
    return [g for g in root.iter() if name in (g.get("class") or "").split()]


def test_the_timeline_has_one_lane_per_task(trace, svg):
    root, _ = svg
    lanes = [g for g in _with_class(root, "lane") if "irq" not in g.get("class")]
    assert sorted(int(g.get("data-tid")) for g in lanes) == sorted(t["tid"] for t in trace.header["tasks"])
    assert [g.get("data-name") for g in lanes] == [t["name"] for t in trace.header["tasks"]]
    for g in lanes:
        spans = [r for r in g.iter(SVG + "rect") if r.get("class") == "span"]
        assert spans and {r.get("data-universe") for r in spans} <= {"old", "new", "none"}


def test_the_timeline_colours_each_lane_old_then_new(trace, svg):
    root, _ = svg
    reader = next(g for g in _with_class(root, "lane") if g.get("data-name") == "pipe-reader")
    universes = [r.get("data-universe") for r in reader.iter(SVG + "rect") if r.get("class") == "span"]
    assert universes[-1] == "new" and "old" in universes
    assert universes.index("new") > max(i for i, u in enumerate(universes) if u == "old")
    cpus = {r.get("data-cpu") for r in reader.iter(SVG + "rect") if r.get("class") == "span"}
    assert {"running", "sleeping"} <= cpus


def test_the_timeline_marks_migrations_the_fake_signal_and_the_patch_start_and_completion(trace, svg):
    root, out = svg
    migrated = _with_class(root, "migrated")
    expected = [e for e in trace.events if e.kind == "migrated"]
    assert sorted((int(g.get("data-tid")), g.get("data-by")) for g in migrated) == \
        sorted((e.tid, e.by) for e in expected)
    fake = first(trace, "signal", fake=True)
    signals = _with_class(root, "fake-signal")
    assert [(int(g.get("data-tid")), int(g.get("data-at"))) for g in signals] == [(fake.tid, fake.at)]
    patch = {g.get("data-state"): int(g.get("data-at")) for g in _with_class(root, "patch")}
    assert patch == {"transition": first(trace, "patch", state="transition").at,
                     "complete": first(trace, "patch", state="complete").at}
    text = out.read_text()
    assert "legend" in text and "instructions retired" in text and "fake signal" in text


def test_the_timeline_command_writes_the_svg(run_lab, tmp_path):
    path, _ = recorded()
    result = run_lab("trace", "timeline", path, "-o", tmp_path / "t.svg")
    assert result.status == 0, result.err
    assert ET.parse(tmp_path / "t.svg").getroot().tag == SVG + "svg"
    assert not list(tmp_path.glob("*.partial"))
    assert run_lab("trace", "timeline", path, "-o", tmp_path / "no" / "t.svg").status == 2


def test_the_timeline_prints_as_text_lanes_in_a_terminal(trace):
    text = render(Timeline(trace), width=100)
    assert "pipe-reader" in text and "█" in text and "◆" in text and "⚡" in text


# ---- the stepper ----

def drive(inspector, step, script, size=(160, 50)):
    """Run the stepper headless from step; script(pilot, app) is a coroutine."""
    async def main():
        app = Stepper(inspector, step=step)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await script(pilot, app)
    asyncio.run(main())


async def press(pilot, *keys):
    await pilot.press(*keys)
    await pilot.pause()


def where(app):
    return str(app.query_one("#where").render())


def test_the_stepper_steps_forward_and_back_and_shows_the_step_and_rip(trace, inspector):
    start = first(trace, "call").at - 2
    rips = {s: inspector.state(s).rip for s in (start, start + 1, start + 2)}

    async def script(pilot, app):
        assert app.step == start and f"{start:,}" in where(app) and f"{rips[start]:#x}" in where(app)
        await press(pilot, "right")
        assert app.step == start + 1 and app.state.rip == rips[start + 1] and f"{start + 1:,}" in where(app)
        await press(pilot, "n")
        assert app.step == start + 2 and f"{rips[start + 2]:#x}" in where(app)
        await press(pilot, "left", "p")
        assert app.step == start and app.state.rip == rips[start]
        assert HELP in str(app.query_one("#help").render())
    drive(inspector, start, script)


def test_the_stepper_moves_by_events_safe_points_and_goto(trace, inspector):
    started = first(trace, "patch", state="transition").at
    events_after = sorted({e.at for e in trace.events if e.at > started})
    events_before = sorted({e.at for e in trace.events if e.at < started})
    safe = [e.at for e in trace.events if e.kind in ("migrated", "signal") and e.at > started]

    async def script(pilot, app):
        await press(pilot, "right_square_bracket")
        assert app.step == events_after[0]
        await press(pilot, "left_square_bracket", "left_square_bracket")
        assert app.step == events_before[-1]
        await press(pilot, "s")
        assert app.step == safe[0]
        await press(pilot, "s")
        assert app.step == safe[1]
        await press(pilot, "S")
        assert app.step == safe[0]
        await press(pilot, "g", *"50%", "enter")
        assert app.step == inspector.index.parse_step("50%") and "50.0%" in where(app)
        await press(pilot, "g", *"123456", "enter")
        assert app.step == 123456 and app.state.rip == inspector.state(123456).rip
        await press(pilot, "g", *"nonsense", "enter")
        assert app.step == 123456 and "not a step" in str(app.query_one("#message").render())
    drive(inspector, started, script)


def test_the_stepper_follows_one_task_across_the_others_slices(trace, inspector):
    sw = [e for e in trace.events if e.kind == "switch" and e.at > 500_000][0]
    tid = sw.prev
    back = inspector.index.next_step_of(tid, sw.at)

    async def script(pilot, app):
        await press(pilot, "f")
        assert app.follow == tid and "following" in where(app)
        await press(pilot, "right")
        assert app.step == back and app.state.current == tid
        await press(pilot, "left")
        assert app.step == sw.at
        await press(pilot, "f")
        assert app.follow is None
    drive(inspector, sw.at, script)


def test_the_stepper_finds_the_next_call_of_a_named_function(trace, inspector):
    started = first(trace, "patch", state="transition").at
    call = first(trace, "call", function="capable")

    pad = trace.header["pads"][0]

    async def script(pilot, app):
        await press(pilot, "c", *"capable", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        # the pad's CALL, just before the recorded entry into the body the trampoline picked
        assert app.state.rip == pad and app.step < call.at < app.step + 64 and app.state.symbol == "capable"
        assert "CALL -> " in str(app.query_one("#message").render())
        await press(pilot, "right")
        assert app.state.symbol.endswith("[trampoline]")
        await press(pilot, "left")
        await press(pilot, "c", *"nothing_like_this", "enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.state.rip == pad and "no function" in str(app.query_one("#message").render())
    drive(inspector, started, script)


def test_the_stepper_shows_its_first_step_before_any_key_is_pressed(trace, inspector):
    async def script(pilot, app):
        assert app.state is not None and "replaying" not in where(app)
        assert str(app.inspector.start) in where(app).replace(",", "") or app.step == app.inspector.start
    drive(inspector, inspector.start, script)


def test_a_move_that_succeeds_says_nothing_and_one_that_cannot_says_why(trace, inspector):
    started = first(trace, "patch", state="transition").at

    def message(app):
        return str(app.query_one("#message").render())

    async def script(pilot, app):
        await press(pilot, "s")
        assert app.step > started and message(app) == ""
        await press(pilot, "g", *str(inspector.end), "enter")
        await press(pilot, "s")
        assert app.step == inspector.end and "no later safe point or signal" in message(app)
    drive(inspector, started, script)
