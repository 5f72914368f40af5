"""stepper - the interactive trace viewer (Textual): panes that render StepStates, keys and clicks that move the step.

It follows rr and gdb for moving (step, continue and reverse-continue to
breakpoints, watch and "who last wrote this"), pwndbg for what one step shows
(code, registers that name what they point at, backtrace, source, memory),
and Tenet and qira for moving by the timeline (a lane per task that jumps
where it is clicked, search over events, bookmarks).
"""
from __future__ import annotations

import math

from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Input, Static

from ..machine import GPRS
from ..trace import TraceError
from .index import TraceIndex, ViewerError
from .search import Breakpoint, parse_breakpoint, task_id
from .state import describe
from .views import (BacktraceView, CodeView, ConsoleTail, EventView, MemoryView, RegisterView, SourceView, StepHeader,
                    TaskView)

# (keys, what) in the order of the key line; the line keeps the first that fit, and always the last two
KEYS = (
    ("→/n ←/p", "step"), ("]/[", "event"), ("s/S", "safe point"), ("c", "call"), ("b", "break"),
    (">/<", "continue/reverse"), ("w/W", "watch/last write"), ("/", "search"), ("m/'", "marks"),
    ("f", "follow"), ("g", "goto"), ("?", "help"), ("q", "quit"),
)
HELP = "  ".join(f"{k} {w}" for k, w in KEYS)
WIDE = 100             # from this width the panes stand two by two; below, one column that scrolls
MEMORY_BYTES = 32
REGISTERS_3 = 150      # from this width the registers stand in three columns
# each pane's share of its row, when they stand two by two (the registers: as wide as their columns)
PANE_WIDTHS = {"code": 1, "registers": None, "tasks": 3, "events": 2, "source": 3, "backtrace": 2, "memory": 1,
               "console": 1}

# the help overlay: every key, with what it does
KEY_HELP = (
    ("→ n / ← p", "step one instruction forward / back (of the followed task, with f)"),
    ("] / [", "next / previous event"),
    ("s / S", "next / previous safe point (a task changing universe) or signal"),
    ("c", "continue to the next call of a function: stops at its pad (the CALL, then the trampoline)"),
    ("b", "set a breakpoint: capable, 0x1001e5, capable in TASK (only when TASK runs it), migrated TASK, "
          "signal, patch, complete, console TEXT, universe TASK (until TASK changes universe)"),
    ("B", "clear the breakpoints"),
    ("> / <", "continue / reverse-continue to the nearest breakpoint"),
    ("w", "watch memory: a variable (kgr_target_universe), 0xADDRESS or TASK.FIELD (pipe-reader.kgr_universe)"),
    ("W", "go to the last write to the watched bytes before this step"),
    ("/", "search the events' text forward; * / # next / previous match"),
    ("m LETTER", "bookmark this step"),
    ("' LETTER", "go to a bookmark; '' back to where the last jump left"),
    ("f", "follow the task on the CPU: steps skip the other tasks"),
    ("g", "go to a step: 1234567, 5e6, 50%, +1000, -1000"),
    ("click", "an event row goes to it; a task's lane goes to that moment"),
    ("? / Esc", "this help / close a prompt"),
    ("q", "quit"),
)


def help_line(width):
    """The key line for a terminal `width` wide: the keys that fit, "? help  q quit" always."""
    if len(HELP) <= width - 2:
        return HELP
    last = "  ".join(f"{k} {w}" for k, w in KEYS[-2:])
    parts = []
    for k, w in KEYS[:-2]:
        item = f"{k} {w}"
        if len("  ".join(parts + [item, last])) > width - 2:
            break
        parts.append(item)
    return "  ".join(parts + [last])


def layout(width, height, tasks):
    """(wide, {pane: height}): how the panes share a terminal.  Wide: code and
    registers, tasks and events, source and backtrace, watch and console, two
    by two, the first three rows filling the screen; narrow: one pane a row,
    each as tall as it needs, the body scrolling."""
    body = max(height - 3, 6)          # the header, the message line and the key line
    tasks_h = tasks + 5
    columns = max(1, min(3, (width // 2 if width >= WIDE else width) - 4) // 26)
    regs_h = math.ceil(len(GPRS) / columns) + 3 + 4
    if width >= WIDE:
        # the registers need their 9 rows of two columns, or 6 of three, and the panel's three lines
        code_min = 12 if width < REGISTERS_3 else 9
        # a long task list gives way (TaskView shows the rows around the followed task), so that the
        # code and source rows keep their least heights on the screen
        tasks_h = min(tasks_h, max(body - code_min - 7, 8))
        rest = max(body - tasks_h, 0)
        code_h = max(code_min, min(15, rest // 2))
        lower_h = max(7, min(12, rest - code_h))
        return True, {"row1": code_h, "row2": tasks_h, "row3": lower_h, "row4": 10}
    return False, {"code": max(8, min(15, body)), "registers": regs_h, "tasks": tasks_h, "events": 14,
                   "source": 11, "backtrace": 9, "memory": 8, "console": 12}


class StatePane(Widget):
    """A pane that shows one view of the current StepState; the view is a plain renderable,
    made for the pane's size, and kept so a click can ask it what was drawn where."""

    DEFAULT_CSS = "StatePane { overflow: hidden; }"
    state = reactive(None)
    follow = reactive(None)

    def __init__(self, view, *, id=None):
        super().__init__(id=id)
        self._view = view
        self.drawn = None

    def render(self):
        if self.state is None:
            return Text("replaying…", style="dim")
        self.drawn = self._view(self.state, self.follow, self.size)
        return self.drawn

    def on_click(self, event):
        app = self.app
        if isinstance(self.drawn, EventView) and 1 <= event.y <= len(self.drawn.rows):
            step = self.drawn.rows[event.y - 1]
            if step is not None:
                app.jump(step, f"step {step:,}: the event clicked")
        elif isinstance(self.drawn, TaskView) and self.drawn.lanes is not None:
            x0, w, rows, lo, hi = self.drawn.lanes
            if x0 <= event.x < x0 + w:
                step = lo + round((event.x - x0 + 0.5) * (hi - lo) / w)
                who = f"{app.index.task_name(rows[event.y])}'s" if event.y in rows else "a"
                app.jump(min(step, hi), f"step {min(step, hi):,}: where {who} lane was clicked")


class HelpScreen(ModalScreen):
    """The keys, over the stepper; any key or click closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    #keys { width: auto; max-width: 100%; height: auto; max-height: 100%; border: round $accent;
            background: $panel; padding: 0 1; overflow-y: auto; }
    """

    def compose(self) -> ComposeResult:
        t = Table(box=None, show_header=False, pad_edge=False)
        t.add_column(style="bold cyan", no_wrap=True)
        t.add_column()
        for keys, what in KEY_HELP:
            t.add_row(keys, what)
        yield Static(t, id="keys")

    def on_key(self, event):
        event.stop()
        self.dismiss()

    def on_click(self, event):
        self.dismiss()


_PROMPTS = {
    "goto": "step to go to: 1234567, 5e6, 50%, +1000 or -1000, Enter",
    "call": "function to find the next call of (e.g. capable), Enter",
    "break": "break at: capable, 0x1001e5, capable in TASK, migrated TASK, signal, patch, complete, universe TASK; Enter",
    "watch": "watch: kgr_target_universe, 0xADDRESS or TASK.FIELD (pipe-reader.kgr_universe), Enter",
    "search": "search the events for (text), Enter",
    "mark": "bookmark this step as: a letter",
    "jump": "go to bookmark: a letter (' for where the last jump left)",
}


class Stepper(App):
    """Step through a trace: one instruction, one event, one safe point, one breakpoint at a time."""

    TITLE = "lab trace view"
    AUTO_FOCUS = None       # the keys belong to the stepper until a prompt opens
    CSS = """
    Screen { layout: vertical; }
    #where { height: 1; padding: 0 1; }
    #body { height: 1fr; scrollbar-size-vertical: 1; }
    .row { height: 12; }
    .narrow .row { layout: vertical; height: auto; }
    #prompt { display: none; }
    #prompt.shown { display: block; }
    #message { height: 1; padding: 0 1; color: $warning; }
    #help { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    """
    BINDINGS = [
        Binding("right,n", "forward", "step", show=False),
        Binding("left,p", "back", "back", show=False),
        Binding("right_square_bracket", "next_event", "next event", show=False),
        Binding("left_square_bracket", "previous_event", "previous event", show=False),
        Binding("s", "next_safe", "next safe point", show=False),
        Binding("S", "previous_safe", "previous safe point", show=False),
        Binding("c", "ask('call')", "call", show=False),
        Binding("b", "ask('break')", "break", show=False),
        Binding("B", "clear_breakpoints", "clear breakpoints", show=False),
        Binding("greater_than_sign", "continue", "continue", show=False),
        Binding("less_than_sign", "reverse_continue", "reverse-continue", show=False),
        Binding("w", "ask('watch')", "watch", show=False),
        Binding("W", "last_write", "last write", show=False),
        Binding("slash", "ask('search')", "search", show=False),
        Binding("asterisk", "search_next", "next match", show=False),
        Binding("number_sign", "search_previous", "previous match", show=False),
        Binding("m", "ask('mark')", "mark", show=False),
        Binding("apostrophe", "ask('jump')", "jump to mark", show=False),
        Binding("g", "ask('goto')", "goto", show=False),
        Binding("f", "follow", "follow", show=False),
        Binding("question_mark", "help", "help", show=False),
        Binding("escape", "cancel", "cancel", show=False),
        Binding("q", "quit", "quit", show=False),
    ]

    step = reactive(0, init=False)
    follow = reactive(None, init=False)     # tid whose instructions the step keys walk, or None

    def __init__(self, inspector, step=None):
        super().__init__()
        self.inspector = inspector
        self.index: TraceIndex = inspector.index
        self.state = None
        self.busy = False
        self._asking = None
        self._first = inspector.start if step is None else self.index.check_step(step)
        self.breakpoints: list[Breakpoint] = []
        self.watch = None               # (address, size, label)
        self.last_write = None          # the sentence the watch pane shows, for the watch it was found for
        self._watch_seen = None         # (step, bytes) of the watch at the step shown before
        self.marks = {}                 # letter -> step
        self.jumped_from = None         # where the last jump left ('' goes back)
        self.search_text = None
        self._wide = None

    # ---- layout ----
    def compose(self) -> ComposeResult:
        ix = self.index
        sources = self.inspector.sources
        yield Static(id="where")
        with VerticalScroll(id="body"):
            with Horizontal(classes="row", id="row1"):
                yield StatePane(lambda s, f, size: CodeView(s, raw=False, height=size.height), id="code")
                yield StatePane(lambda s, f, size: RegisterView(s, columns=_reg_columns(size.width), notes=True),
                                id="registers")
            with Horizontal(classes="row", id="row2"):
                yield StatePane(lambda s, f, size: TaskView(s, f, index=ix, height=size.height), id="tasks")
                yield StatePane(lambda s, f, size: EventView(s, height=size.height), id="events")
            with Horizontal(classes="row", id="row3"):
                yield StatePane(lambda s, f, size: SourceView(s, sources, height=size.height), id="source")
                yield StatePane(lambda s, f, size: BacktraceView(s, height=size.height), id="backtrace")
            with Horizontal(classes="row", id="row4"):
                yield StatePane(lambda s, f, size: self._memory_view(s, size), id="memory")
                yield StatePane(lambda s, f, size: ConsoleTail(s, height=size.height), id="console")
        yield Input(id="prompt")
        yield Static(id="message")
        yield Static(id="help")

    def on_mount(self):
        self._arrange()
        if self.step == self._first:
            self._show()          # the reactive does not fire for a value it already holds
        self.step = self._first

    def on_resize(self, event):
        self._arrange()

    def _arrange(self):
        width, height = self.size
        wide, heights = layout(width, height, len(self.inspector.trace.header.get("tasks", ())))
        self.screen.set_class(not wide, "narrow")
        for name, h in heights.items():
            self.query_one(f"#{name}").styles.height = h
        for pane, share in PANE_WIDTHS.items():
            styles = self.query_one(f"#{pane}").styles
            if pane == "registers" and wide:
                styles.width = 4 + 26 * (3 if width >= REGISTERS_3 else 2)
            elif pane in ("tasks", "events") and width >= REGISTERS_3:
                styles.width = "1fr"
            else:
                styles.width = f"{share}fr" if wide else "100%"
            if wide:
                styles.height = "100%"
        if not wide:
            for row in ("row1", "row2", "row3", "row4"):
                self.query_one(f"#{row}").styles.height = "auto"
        self._wide = wide
        self.query_one("#help", Static).update(help_line(width))
        self._header()

    # ---- the step ----
    def watch_step(self, step):
        self._show()

    def watch_follow(self, tid):
        self._show()

    def _show(self):
        try:
            self.state = self.inspector.state(self.step)
        except (ViewerError, TraceError) as exc:   # a trace that disagrees with its replay from here on
            self.say(str(exc))
            return
        self._header()
        if self._wide is False:     # one column: the code pane as tall as this step's listing
            self.query_one("#code").styles.height = min(len(self.state.listing), 13) + 2
        for pane in self.query(StatePane):
            pane.follow = self.follow
            pane.state = self.state
            pane.refresh()

    def _header(self):
        if self.state is None:
            return
        follow = None if self.follow is None else self.index.task_name(self.follow)
        self.query_one("#where", Static).update(StepHeader(self.state, follow).line(self.size.width - 2))

    def go(self, step, why=""):
        if step is None:
            self.say(why or "nothing further that way")
            return
        step = max(self.inspector.start, min(step, self.inspector.end))
        # why is what to say when nothing moves; a move clears the line
        self.say(why if why and step == self.step else "")
        if abs(step - self.step) > 1:
            self.jumped_from = self.step
        self.step = step

    def jump(self, step, say=""):
        """Go to step and say so (a jump the person asked for by name or by a click)."""
        if not self._idle():
            return
        self.go(step)
        if say:
            self.say(say)

    def say(self, text):
        self.query_one("#message", Static).update(Text(text))

    def _idle(self):
        if self.busy:
            self.say("searching… (wait for it, or q to quit)")
            return False
        return True

    # ---- actions: stepping ----
    def action_forward(self):
        if not self._idle():
            return
        if self.step >= self.inspector.end:
            return self.say("at the end of the trace")
        if self.follow is None:
            return self.go(self.step + 1)
        self.go(self.index.next_step_of(self.follow, self.step),
                f"{self.index.task_name(self.follow)} does not run again in this trace")

    def action_back(self):
        if not self._idle():
            return
        if self.step <= self.inspector.start:
            return self.say("at the start of the trace")
        if self.follow is None:
            return self.go(self.step - 1)
        self.go(self.index.previous_step_of(self.follow, self.step),
                f"{self.index.task_name(self.follow)} did not run before this step")

    def _match(self, extra=None):
        tid = self.follow

        def match(e):
            if extra is not None and not extra(e):
                return False
            return tid is None or self.index.concerns(e, tid)
        return match

    def action_next_event(self):
        if self._idle():
            e = self.index.next_event(self.step, self._match())
            self.go(e.at if e else None, "no later event")

    def action_previous_event(self):
        if self._idle():
            e = self.index.previous_event(self.step, self._match())
            self.go(e.at if e else None, "no earlier event")

    def action_next_safe(self):
        if self._idle():
            e = self.index.next_event(self.step, self._match(self.index.is_safe_point_or_signal))
            self.go(e.at if e else None, "no later safe point or signal")

    def action_previous_safe(self):
        if self._idle():
            e = self.index.previous_event(self.step, self._match(self.index.is_safe_point_or_signal))
            self.go(e.at if e else None, "no earlier safe point or signal")

    def action_follow(self):
        if not self._idle():
            return
        if self.follow is not None:
            self.say(f"no longer following {self.index.task_name(self.follow)}")
            self.follow = None
        else:
            self.follow = self.state.current if self.state else self.index.current_at(self.step)
            self.say(f"following {self.index.task_name(self.follow)}: steps skip the other tasks (f again to stop)")

    def action_help(self):
        self.push_screen(HelpScreen())

    # ---- breakpoints ----
    def action_clear_breakpoints(self):
        n = len(self.breakpoints)
        self.breakpoints = []
        self._refresh_pane("memory")
        self.say(f"{n} breakpoint(s) cleared" if n else "no breakpoints to clear")

    def action_continue(self):
        self._continue(backward=False)

    def action_reverse_continue(self):
        self._continue(backward=True)

    def _continue(self, backward):
        if not self._idle():
            return
        if not self.breakpoints:
            return self.say("no breakpoints: b sets one")
        bps, here = list(self.breakpoints), self.step
        way = "earlier" if backward else "later"

        def work():
            at, hit = self.inspector.searcher.next_stop(bps, here, backward=backward)
            if at is None:
                return None, f"no {way} stop at {', '.join(map(str, bps))}"
            return at, f"breakpoint {', '.join(map(str, hit))}: step {at:,}"
        self._search(work, f"{'reverse-' if backward else ''}continuing to {', '.join(map(str, bps))}…")

    def find_call(self, name):
        """Go to the next call of function `name`: its first instruction, by a replay
        with a code hook, in a worker thread so the keys stay alive."""
        try:
            self.index.function_address(name)
        except ViewerError as exc:
            return self.say(str(exc))
        here = self.step

        def work():
            found = self.inspector.next_call(name, here)
            if found is None:
                return None, f"no call of {name} after step {here:,}"
            # said from the main thread: a StepState comes from the stepper's own replayer
            return found, lambda: self._call_note(name, found)
        self._search(work, f"looking for the next call of {name}…")

    def _call_note(self, name, step):
        pad = next((p for p in self.inspector.state(step).pads if p.function == name), None)
        if pad is None or pad.state == "nop":
            return ""
        if pad.state == "call":
            return f"{name}'s pad: CALL -> {pad.target_symbol}; → steps into the trampoline, which picks old or new"
        return f"{name}'s pad: JMP -> {pad.target_symbol}; the transition is over, no decision left on the path"

    def _search(self, work, saying):
        self.busy = True
        self.say(saying)

        def run():
            try:
                found, msg = work()
            except (ViewerError, TraceError) as exc:
                found, msg = None, str(exc)
            self.call_from_thread(self._found, found, msg)

        self.run_worker(run, thread=True, exclusive=True, group="search")

    def _found(self, step, msg):
        self.busy = False
        if step is not None:
            self.go(step)
        self.say(msg() if callable(msg) else msg)

    # ---- watch ----
    def _memory_view(self, state, size):
        data, base, changed = b"", 0, ()
        if self.watch is not None:
            address, length, _label = self.watch
            base = address & ~15
            count = max(16, ((address + length - base + 15) // 16) * 16)
            count = min(count, MEMORY_BYTES if size.height >= 6 else 16)
            data = self.inspector.memory(state.step, base, count)
            seen = self._watch_seen
            if seen is not None and seen[0] != state.step and len(seen[1]) == len(data):
                changed = [base + i for i, (a, b) in enumerate(zip(seen[1], data)) if a != b]
            self._watch_seen = (state.step, data)
        return MemoryView(self.watch, data, base, changed, self.last_write, self.breakpoints, height=size.height)

    def set_watch(self, text):
        self.watch = parse_watch(text, self.inspector)
        self.last_write = None
        self._watch_seen = None
        self._refresh_pane("memory")
        address, size, label = self.watch
        self.say(f"watching {address:#x} ({size} bytes, {label}): W finds the last write to it")

    def action_last_write(self):
        if not self._idle():
            return
        if self.watch is None:
            return self.say("no watch: w sets one")
        address, size, label = self.watch
        here, ix = self.step, self.index

        def work():
            w = self.inspector.searcher.last_write(address, size, here)
            if w is None:
                return None, f"{label} holds the same bytes from the start of the trace to step {here:,}"
            change = f"{w.before.hex(' ')} -> {w.after.hex(' ')}"
            if w.by == "lab":
                text = f"last write: by the lab between slices at step {w.step:,} (patching): {change}"
            else:
                text = f"last write: step {w.step:,} by {ix.task_name(ix.current_at(w.step))}: {change}"
            self.last_write = text
            return w.step, text
        self._search(work, f"looking back for the last write to {label}…")

    # ---- search and bookmarks ----
    def search(self, text, backward=False):
        self.search_text = text
        ix, name, needle = self.index, self.index.task_name, text.lower()

        def match(e):
            return needle in describe(e, name, ix.trace.image.syscall_names()).lower() or needle in e.kind
        e = (ix.previous_event if backward else ix.next_event)(self.step, match)
        if e is None:
            return self.say(f"no {'earlier' if backward else 'later'} event says {text!r}")
        self.go(e.at)
        self.say(f"/{text}: {describe(e, name, ix.trace.image.syscall_names())}  (* next, # previous)")

    def action_search_next(self):
        if self._idle():
            self.search(self.search_text, False) if self.search_text else self.say("no search yet: / starts one")

    def action_search_previous(self):
        if self._idle():
            self.search(self.search_text, True) if self.search_text else self.say("no search yet: / starts one")

    def mark(self, letter):
        self.marks[letter] = self.step
        self.say(f"mark {letter} at step {self.step:,}  (' {letter} comes back)")

    def jump_to_mark(self, letter):
        if letter == "'":
            if self.jumped_from is None:
                return self.say("no jump to go back from yet")
            return self.go(self.jumped_from)
        if letter not in self.marks:
            known = ", ".join(f"{k} {v:,}" for k, v in sorted(self.marks.items())) or "none yet (m sets one)"
            return self.say(f"no mark {letter}; the marks: {known}")
        self.go(self.marks[letter])
        self.say(f"mark {letter}: step {self.marks[letter]:,}")

    # ---- prompts ----
    def action_ask(self, what):
        if not self._idle():
            return
        prompt = self.query_one("#prompt", Input)
        self._asking = what
        placeholder = _PROMPTS[what]
        if what == "jump" and self.marks:
            placeholder += "; marks: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.marks.items()))
        prompt.placeholder = placeholder
        prompt.value = ""
        prompt.add_class("shown")
        prompt.focus()

    def action_cancel(self):
        self._close_prompt()

    def _close_prompt(self):
        prompt = self.query_one("#prompt", Input)
        prompt.remove_class("shown")
        self._asking = None
        self.set_focus(None)

    def on_input_changed(self, message: Input.Changed):
        # a bookmark is one letter: it needs no Enter
        if self._asking in ("mark", "jump") and message.value:
            what, letter = self._asking, message.value[0]
            self._close_prompt()
            self.mark(letter) if what == "mark" else self.jump_to_mark(letter)

    def on_input_submitted(self, message: Input.Submitted):
        what, text = self._asking, message.value.strip()
        self._close_prompt()
        if not text:
            return
        try:
            if what == "goto":
                self.go(self.index.parse_step(text, here=self.step))
            elif what == "call":
                self.find_call(text)
            elif what == "break":
                bp = parse_breakpoint(text, self.index)
                self.breakpoints.append(bp)
                self._refresh_pane("memory")
                self.say(f"breakpoint {bp}: > continues to it, < reverse-continues")
            elif what == "watch":
                self.set_watch(text)
            elif what == "search":
                self.search(text)
        except ViewerError as exc:
            self.say(str(exc))

    def _refresh_pane(self, name):
        self.query_one(f"#{name}", StatePane).refresh()


def _reg_columns(width):
    """As many register columns as fit whole (a value never loses a digit)."""
    return max(1, min(3, (width - 4) // 26))


def parse_watch(text, inspector):
    """(address, size, label) from a variable name, 0xADDRESS[/SIZE] or TASK.FIELD."""
    text = text.strip()
    img, ix, names = inspector.trace.image, inspector.index, inspector.names
    size = None
    if "/" in text:
        text, _, n = text.partition("/")
        if not n.isdigit() or not 1 <= int(n) <= 16:
            raise ViewerError(f"{n!r} is not a size: give 1 to 16 bytes, 0x105000/8")
        size = int(n)
    if text.lower().startswith("0x"):
        try:
            address = int(text, 16)
        except ValueError:
            raise ViewerError(f"{text!r} is not an address: give it in hex, 0x105000") from None
        return address, size or 8, names.describe(address, None, ix.task_name) or f"{address:#x}"
    if "." in text:
        task, _, field_name = text.rpartition(".")
        tid = task_id(ix, task)
        fields = dict((n, off) for off, n in names._fields)
        if field_name not in fields:
            raise ViewerError(f"a task has no field {field_name!r}; it has: {', '.join(sorted(fields))}")
        offsets = sorted(fields.values())
        off = fields[field_name]
        nxt = next((o for o in offsets if o > off), off + 8)
        tasks = img.lookup("tasks")
        address = tasks.address + tid * names._task_size + off
        return address, size or max(1, min(8, nxt - off)), f"task[{tid}] {ix.task_name(tid)} .{field_name}"
    sym = img.lookup(text)
    if sym is None or sym.kind not in ("object", "func"):
        close = sorted(s.name for s in img.symbols if s.kind == "object" and text.lower() in s.name.lower())[:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ViewerError(f"no variable {text!r} in {img.path.name}{hint}")
    return sym.address, size or max(1, min(8, sym.size or 8)), text


__all__ = ["Stepper", "HELP", "KEYS", "KEY_HELP", "help_line", "layout", "parse_watch"]
