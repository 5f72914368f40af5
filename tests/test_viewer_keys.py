"""The stepper driven headless, a key at a time: breakpoints with continue and reverse-continue, the watch and its
last write, search, bookmarks, the help overlay, clicks on events and on task lanes, and panes that fit 80x24 up."""
from __future__ import annotations

import asyncio
import io

import pytest
from rich.console import Console

from lab.trace import Trace
from lab.viewer import Inspector
from lab.viewer.stepper import HelpScreen, Stepper
from trace_helpers import recorded

SIZES = [(80, 24), (120, 40), (160, 50)]


@pytest.fixture(scope="module")
def trace():
    path, _ = recorded()
    return Trace.load(path)


@pytest.fixture(scope="module")
def inspector(trace):
    return Inspector(trace)


def first(trace, kind, **fields):
    return next(e for e in trace.events if e.kind == kind and all(getattr(e, k) == v for k, v in fields.items()))


def drive(inspector, step, script, size=(160, 50)):
    async def main():
        app = Stepper(inspector, step=step)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await script(pilot, app)
    asyncio.run(main())


async def press(pilot, *keys):
    await pilot.press(*keys)
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def message(app):
    return str(app.query_one("#message").render())


def pane_text(app, name):
    """What a pane shows: its renderable drawn at its size, cut to its height."""
    pane = app.query_one(f"#{name}")
    out = io.StringIO()
    Console(file=out, width=pane.size.width, color_system=None).print(pane.drawn)
    return "\n".join(out.getvalue().splitlines()[:pane.size.height])


def test_b_sets_a_breakpoint_that_continue_and_reverse_continue_reach(trace, inspector):
    moved = first(trace, "migrated", tid=3).at

    async def script(pilot, app):
        await press(pilot, "b", *"universe pipe-reader", "enter")
        assert [str(b) for b in app.breakpoints] == ["universe pipe-reader"]
        assert "universe pipe-reader" in pane_text(app, "memory")
        await press(pilot, "greater_than_sign")
        at = app.step
        assert moved - 64 < at <= moved and "breakpoint universe pipe-reader" in message(app)
        assert {t.name: t.universe for t in app.state.tasks}["pipe-reader"] == "new"
        await press(pilot, "greater_than_sign")
        assert app.step == at and "no later stop" in message(app)
        await press(pilot, "g", *str(trace.end), "enter", "less_than_sign")
        assert app.step == at
        await press(pilot, "B")
        assert app.breakpoints == [] and "cleared" in message(app)
        await press(pilot, "greater_than_sign")
        assert "no breakpoints" in message(app)
    drive(inspector, trace.start, script)


def test_w_watches_a_task_field_and_W_goes_to_its_last_write(trace, inspector):
    async def script(pilot, app):
        await press(pilot, "w", *"pipe-reader.kgr_universe", "enter")
        assert app.watch[2] == "task[3] pipe-reader .kgr_universe" and "watch" in pane_text(app, "memory")
        await press(pilot, "W")
        w = inspector.searcher.last_write(app.watch[0], 1, trace.end)
        assert app.step == w.step and app.state.current == 3 and "last write: step" in message(app)
        assert "last write: step" in pane_text(app, "memory")
        await press(pilot, "w", *"no_such_variable", "enter")
        assert "no variable 'no_such_variable'" in message(app)
    drive(inspector, trace.end, script)


def test_slash_searches_the_events_and_star_and_hash_repeat_it(trace, inspector):
    fake = first(trace, "signal", fake=True)

    async def script(pilot, app):
        await press(pilot, "slash", *"fake signal", "enter")
        assert app.step == fake.at and "fake signal to pipe-reader" in message(app)
        await press(pilot, "asterisk")
        assert app.step == fake.at and "no later event" in message(app)
        await press(pilot, "number_sign")
        assert app.step == fake.at and "no earlier event" in message(app)
        await press(pilot, "slash", *"moved to universe", "enter")
        assert app.step > fake.at
    drive(inspector, trace.start, script)


def test_m_marks_a_step_and_quote_jumps_back_to_it(trace, inspector):
    async def script(pilot, app):
        start = app.step
        await press(pilot, "m", "a")
        assert app.marks == {"a": start}
        await press(pilot, "g", *"50%", "enter")
        middle = app.step
        await press(pilot, "apostrophe", "a")
        assert app.step == start and "mark a" in message(app)
        await press(pilot, "apostrophe", "apostrophe")
        assert app.step == middle
        await press(pilot, "apostrophe", "z")
        assert app.step == middle and "no mark z" in message(app)
    drive(inspector, 200_000, script)


def test_question_mark_shows_the_keys_and_any_key_closes_them(trace, inspector):
    async def script(pilot, app):
        await press(pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        step = app.step
        await press(pilot, "n")
        assert not isinstance(app.screen, HelpScreen) and app.step == step
        await press(pilot, "n")
        assert app.step == step + 1
    drive(inspector, 300_000, script)


def test_a_click_on_an_event_row_goes_to_that_event(trace, inspector):
    async def script(pilot, app):
        view = app.query_one("#events").drawn
        row = next(i for i, s in enumerate(view.rows) if s is not None and s > app.step)
        target = view.rows[row]
        await pilot.click("#events", offset=(20, row + 1))
        await pilot.pause()
        assert app.step == target and "event clicked" in message(app)
    drive(inspector, first(trace, "migrated", by="fake-signal").at - 1, script)


def test_a_click_on_a_task_lane_goes_to_that_moment(trace, inspector):
    async def script(pilot, app):
        x0, w, rows, lo, hi = app.query_one("#tasks").drawn.lanes
        y = next(y for y, tid in rows.items() if tid == 3)
        await pilot.click("#tasks", offset=(x0 + w // 2, y))
        await pilot.pause()
        expected = lo + round((w // 2 + 0.5) * (hi - lo) / w)
        assert app.step == expected and "pipe-reader's lane" in message(app)
        await pilot.click("#tasks", offset=(x0, y))
        await pilot.pause()
        assert app.step < lo + (hi - lo) / w
    drive(inspector, trace.end, script)


def test_escape_closes_a_prompt_and_the_keys_are_the_steppers_again(trace, inspector):
    async def script(pilot, app):
        step = app.step
        await press(pilot, "g", "1")
        assert app.query_one("#prompt").has_class("shown")
        await press(pilot, "escape")
        assert not app.query_one("#prompt").has_class("shown") and app.step == step
        await press(pilot, "n")
        assert app.step == step + 1
    drive(inspector, 400_000, script)


def test_q_quits(trace, inspector):
    async def script(pilot, app):
        await pilot.press("q")
        await pilot.pause()
        assert app._exit
    drive(inspector, trace.start, script)


# ---- the layout, at the three sizes ----

@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_register_keeps_every_digit(trace, inspector, size):
    async def script(pilot, app):
        app.query_one("#registers").scroll_visible(animate=False)
        await pilot.pause()
        text = pane_text(app, "registers")
        for name, value in app.state.regs.items():
            assert f"{value:016x}" in text, (name, text)
    drive(inspector, first(trace, "migrated", by="fake-signal").at, script, size)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_every_task_is_in_the_task_pane_and_the_key_line_keeps_quit(trace, inspector, size):
    async def script(pilot, app):
        for name in ("tasks", "events"):       # at 80x24 they are further down: scrolled to
            app.query_one(f"#{name}").scroll_visible(animate=False)
            await pilot.pause()
        text = pane_text(app, "tasks")
        for t in app.state.tasks:
            assert f" {t.name} " in text
        assert str(app.query_one("#help").render()).endswith("? help  q quit")
        events = pane_text(app, "events")
        for r in app.state.events:
            if f" {r.at:,} " in events:
                assert f" {r.kind} " in events
    drive(inspector, first(trace, "patch", state="transition").at, script, size)


def test_the_panes_fill_a_wide_terminal_two_by_two_and_stack_in_a_narrow_one(trace, inspector):
    async def wide(pilot, app):
        code, regs = app.query_one("#code").region, app.query_one("#registers").region
        assert code.y == regs.y and regs.x >= code.right
        assert app.query_one("#tasks").region.bottom <= 40 - 2      # code, registers and every task on the first screen
    drive(inspector, trace.start, wide, (120, 40))

    async def narrow(pilot, app):
        code, regs = app.query_one("#code").region, app.query_one("#registers").region
        assert regs.y >= code.bottom and code.width >= 76
    drive(inspector, trace.start, narrow, (80, 24))
