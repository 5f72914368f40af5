"""The stepper's panes and what they read: events that keep their columns, the source line from DWARF, backtraces
through interrupt frames, registers that name what they point at, breakpoints found forward and backward by replay,
the last write to a watched address, and a layout that fits 80x24 up."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from lab.trace import Trace, settle
from lab.viewer import Inspector
from lab.viewer.frames import INTERRUPTED, USER
from lab.viewer.search import ADDRESS, EVENT, FUNCTION, UNIVERSE, parse_breakpoint, universe_changes
from lab.viewer.stepper import KEYS, help_line, layout
from lab.viewer.views import BacktraceView, EventView, MemoryView, SourceView, TaskView
from trace_helpers import recorded


@pytest.fixture(scope="module")
def trace():
    path, _ = recorded()
    return Trace.load(path)


@pytest.fixture(scope="module")
def inspector(trace):
    return Inspector(trace)


def first(trace, kind, **fields):
    return next(e for e in trace.events if e.kind == kind and all(getattr(e, k) == v for k, v in fields.items()))


def render(renderable, width):
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, legacy_windows=False).print(renderable)
    return out.getvalue()


# ---- events: the step and kind columns never collapse (issue 13, defect 3) ----

@pytest.mark.parametrize("width", [50, 64, 80])     # the events pane at 80x24, 120x40 and 160x50
def test_the_events_keep_their_step_and_kind_columns_whole_when_a_long_line_is_in_view(trace, inspector, width):
    # where cap-user moves: the transition's start, with its long console lines and kinds, is in view
    st = inspector.state(first(trace, "migrated", tid=1).at)
    text = render(EventView(st), width)
    assert any(len(r.text) > width - 30 for r in st.events)      # a line that cannot fit whole
    rows = text.splitlines()
    for r in st.events:
        assert any(f" {r.at:,}  " in x and f" {r.kind} " in x for x in rows), (r.at, r.kind, text)
    assert "…" in text and all(len(x) <= width for x in rows)


def test_an_event_row_knows_the_step_it_was_drawn_for(trace, inspector):
    st = inspector.state(first(trace, "migrated", by="fake-signal").at)
    view = EventView(st, height=8)
    lines = render(view, 100).splitlines()[1:-1]
    assert len(view.rows) == len(lines) == 6
    for step, line in zip(view.rows, lines):
        assert (f"{step:,}" if step is not None else "here") in line


# ---- source, backtrace, what registers point at ----

def test_the_source_line_of_a_function_entry_is_its_definition(trace, inspector):
    pad = trace.header["pads"][0]
    st = inspector.state(inspector.next_call("capable", 0))
    assert st.rip == pad and st.source.path == "capability.c"
    lines = inspector.sources.text("capability.c")
    assert "capable(int cap)" in lines[st.source.line - 2] + lines[st.source.line - 1]
    text = render(SourceView(st, inspector.sources, height=9), 80)
    assert f"▶{st.source.line}" in text and "source capability.c:" in text


def test_module_code_and_trampolines_say_why_they_have_no_source(trace, inspector):
    step = inspector.next_call("capable", first(trace, "patch", state="transition").at)
    module = next(s for s in range(step, step + 64) if "[kgr_capable]" in inspector.state(s).symbol)
    assert inspector.state(step + 1).source is None
    assert "trampoline" in render(SourceView(inspector.state(step + 1), inspector.sources), 80)
    assert "module code" in render(SourceView(inspector.state(module), inspector.sources), 80)


def _in_irq(trace, inspector, user):
    for e in trace.events:
        if e.kind == "irq" and e.user == user and e.at > 100_000:
            for s in range(e.at + 1, e.at + 40):
                st = inspector.state(s)
                if st.in_irq and len(st.backtrace) > 1:
                    return e, st
    raise AssertionError("no interrupt with its frames in the trace")


def test_the_backtrace_of_an_interrupt_goes_through_its_frame_to_the_kernel_code_it_interrupted(trace, inspector):
    e, st = _in_irq(trace, inspector, user=False)
    kinds = [f.kind for f in st.backtrace]
    assert kinds[0] == "current" and INTERRUPTED in kinds
    interrupted = st.backtrace[kinds.index(INTERRUPTED)]
    assert interrupted.address == e.rip and interrupted.source
    text = render(BacktraceView(st), 100)
    assert "── interrupt" in text and interrupted.symbol in text


def test_the_backtrace_of_an_interrupt_in_user_mode_ends_at_the_user_ip(trace, inspector):
    e, st = _in_irq(trace, inspector, user=True)
    assert st.backtrace[-1].kind == USER and st.backtrace[-1].address == e.rip


def test_the_backtrace_in_a_trampoline_names_the_patched_function_and_its_caller(trace, inspector):
    step = inspector.next_call("capable", first(trace, "patch", state="transition").at)
    caller = inspector.state(step).backtrace[1].symbol
    frames = [f.symbol for f in inspector.state(step + 1).backtrace]
    assert frames[0].endswith("[trampoline]") and frames[1] == "capable+0x5" and frames[2] == caller


def test_registers_name_the_variable_the_task_field_or_the_stack_they_point_at(trace, inspector):
    img = trace.image
    st = inspector.state(inspector.next_call("capable", 0))
    assert st.notes["rsp"].startswith(f"stack of {st.current_name}")
    names = inspector.names
    task = img.address("tasks") + 3 * 952 + img.const("TASK_kgr_universe")
    assert names.describe(task, None, inspector.index.task_name) == "task[3] pipe-reader .kgr_universe"
    target = img.address("kgr_target_universe")
    assert names.describe(target) == "kgr_target_universe" and names.describe(target + 0x10000000) is None
    noted = {n: v for n, v in st.notes.items() if img.object_at(st.regs[n]) is not None}
    assert noted and all(v == img.symbolize(st.regs[n]) for n, v in noted.items()
                         if not v.startswith(("task[", "stack of")))


# ---- breakpoints ----

def test_a_breakpoint_is_a_function_an_address_an_event_or_a_change_of_universe(inspector):
    ix = inspector.index
    assert parse_breakpoint("capable", ix).kind == FUNCTION
    assert parse_breakpoint("*0x1001e0", ix).address == 0x1001E0 == parse_breakpoint("0x1001e0", ix).address
    bp = parse_breakpoint("migrated pipe-reader", ix)
    assert (bp.kind, bp.event, bp.tid) == (EVENT, "migrated", 3)
    assert parse_breakpoint("universe pipe-reader", ix).kind == UNIVERSE
    with pytest.raises(Exception, match="no task 'nobody'"):
        parse_breakpoint("universe nobody", ix)
    with pytest.raises(Exception, match="no function 'nothing_like_this'"):
        parse_breakpoint("nothing_like_this", ix)


def test_continue_and_reverse_continue_stop_where_the_task_changes_universe(trace, inspector):
    # the first step at which its universe byte holds the new universe: just after the write, a few
    # instructions before the Migrated event that the safe point's hypercall records
    ix = inspector.index
    moved = first(trace, "migrated", tid=3).at
    bp = parse_breakpoint("universe pipe-reader", ix)
    assert universe_changes(ix, 3) == [moved]
    at, hit = inspector.searcher.next_stop([bp], trace.start)
    assert hit == [bp] and moved - 64 < at <= moved
    assert inspector.searcher.next_stop([bp], trace.end, backward=True)[0] == at
    assert inspector.searcher.next_stop([bp], at) == (None, [])
    tasks = {t.name: t.universe for t in inspector.state(at - 1).tasks}
    assert tasks["pipe-reader"] == "old" and {t.name: t.universe for t in inspector.state(at).tasks}[
        "pipe-reader"] == "new"


def test_code_breakpoints_are_found_by_replay_forward_and_backward(trace, inspector):
    pad = trace.header["pads"][0]
    safe = trace.image.function("kgr_task_safe").address
    bps = [parse_breakpoint("capable", inspector.index), parse_breakpoint("kgr_task_safe", inspector.index)]
    at, hit = inspector.searcher.next_stop(bps, 1_500_000)
    assert at > 1_500_000 and inspector.state(at).rip in (pad, safe) and hit
    hits = inspector.searcher.hits({pad, safe}, 1_500_000, at)
    assert hits == [at]
    back, _ = inspector.searcher.next_stop(bps, at, backward=True)
    assert back < at and inspector.state(back).rip in (pad, safe)
    assert inspector.searcher.hits({pad, safe}, back + 1, at - 1) == []
    address = parse_breakpoint(f"{pad + 5:#x}", inspector.index)
    assert address.kind == ADDRESS and inspector.state(inspector.searcher.next_stop([address], 0)[0]).rip == pad + 5


def test_a_code_breakpoint_with_a_condition_stops_only_in_that_task(trace, inspector):
    # every user task passes kgr_user_safe() at its system call exit; pipe-reader seldom
    ix = inspector.index
    entry = trace.image.function("kgr_user_safe").address
    anyone = parse_breakpoint("kgr_user_safe", ix)
    only = parse_breakpoint("kgr_user_safe in pipe-reader", ix)
    assert (str(only), only.tid, only.address) == ("kgr_user_safe in pipe-reader", 3, entry)
    first_any = inspector.searcher.next_stop([anyone], 0)[0]
    at, hit = inspector.searcher.next_stop([only], first_any)
    assert hit == [only] and inspector.state(at).rip == entry and inspector.state(at).current == 3
    skipped = inspector.searcher.hits({entry}, first_any, at - 1)
    assert skipped and all(inspector.state(h).current != 3 for h in skipped)
    back, _ = inspector.searcher.next_stop([only], trace.end, backward=True)
    assert back >= at and inspector.state(back).current == 3
    assert inspector.searcher.next_stop([parse_breakpoint("capable in pipe-reader", ix)], 0) == (None, [])
    with pytest.raises(Exception, match="only a condition"):
        parse_breakpoint("capable sometimes", ix)


# ---- the last write ----

def test_the_last_write_to_a_tasks_universe_is_the_instruction_that_moved_it(trace, inspector):
    img = trace.image
    address = img.address("tasks") + 3 * img.const("TASK_SIZE") + img.const("TASK_kgr_universe")
    w = inspector.searcher.last_write(address, 1, trace.end)
    rp = trace.replayer()
    assert w.by == "cpu" and (w.before, w.after) == (b"\0", b"\1")
    assert settle(rp.seek(w.step)).machine.read(address, 1) == b"\0"
    assert settle(rp.seek(w.step + 1)).machine.read(address, 1) == b"\1"
    assert inspector.index.current_at(w.step) == 3
    assert w.step < first(trace, "migrated", tid=3).at
    for s in range(w.step + 1, w.step + 5_000):
        assert settle(rp.seek(s)).machine.read(address, 1) == b"\1"


def test_a_write_the_lab_made_between_slices_is_named_so(trace, inspector):
    pad = trace.header["pads"][0]
    done = first(trace, "patch", state="complete").at
    w = inspector.searcher.last_write(pad, 5, trace.end)
    assert (w.by, w.step, w.before[0], w.after[0]) == ("lab", done, 0xE8, 0xE9)
    assert inspector.searcher.last_write(pad, 5, 100_000) is None      # the NOP gcc left, never written before
    text = render(MemoryView((pad, 5, "capable"), inspector.memory(trace.end, pad & ~15, 32), pad & ~15,
                             last_write="last write: by the lab"), 80)
    assert "e9" in text and "last write: by the lab" in text


# ---- the layout ----

@pytest.mark.parametrize("width", [60, 80, 120, 160])
def test_the_key_line_keeps_help_and_quit_at_every_width(width):
    line = help_line(width)
    assert line.endswith("? help  q quit") and len(line) <= width - 2
    assert line.startswith(KEYS[0][0])


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (160, 50)])
def test_the_panes_share_the_terminal_and_the_task_table_holds_every_task(size):
    wide, heights = layout(*size, tasks=9)
    if wide:
        assert heights["row2"] >= 9 + 5 and heights["row1"] >= 12
        assert heights["row1"] + heights["row2"] + 7 <= size[1] - 3     # and some source below them
    else:
        assert heights["tasks"] >= 9 + 5 and heights["registers"] >= 9 + 3


@pytest.mark.parametrize("size", [(120, 40), (160, 50)])
def test_a_long_task_list_leaves_the_code_and_source_rows_on_the_screen(size):
    _wide, heights = layout(*size, tasks=68)            # nr_hammer=64 and the four other tasks
    assert heights["row1"] >= (12 if size[0] < 150 else 9) and heights["row3"] >= 7
    assert heights["row1"] + heights["row2"] + heights["row3"] <= size[1] - 3


def test_a_task_pane_too_short_for_every_task_shows_those_around_the_followed_one_and_says_which(inspector):
    state = inspector.state(first(inspector.trace, "call").at)
    tids = [t.tid for t in state.tasks]
    current = next(t.tid for t in state.tasks if t.current)
    for follow in (None, tids[0], tids[-1]):
        view = TaskView(state, follow, index=inspector.index, height=8)
        text = render(view, 120)
        shown = sorted(view.lanes[2].values())
        assert 0 < len(shown) < len(tids) and shown == tids[tids.index(shown[0]):tids.index(shown[0]) + len(shown)]
        assert (follow if follow is not None else current) in shown
        assert f"tasks {shown[0]}-{shown[-1]} of {len(tids)}" in text
    whole = TaskView(state, index=inspector.index, height=len(tids) + 5)
    assert "of " not in render(whole, 120).splitlines()[0] and sorted(whole.lanes[2].values()) == tids
