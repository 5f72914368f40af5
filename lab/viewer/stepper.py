"""stepper - the interactive trace viewer (Textual): panes that render StepStates, keys that move the step."""
from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Input, Static

from ..trace import TraceError
from .index import TraceIndex, ViewerError
from .views import CodeView, ConsoleTail, EventView, RegisterView, StepHeader, TaskView

HELP = ("→/n ←/p step  ]/[ next/prev event  s/S next/prev safe point or signal  c call of…  "
        "g goto (step, 5e6, 50%, +N)  f follow this task  q quit")


class StatePane(Widget):
    """A pane that shows one view of the current StepState; the view is a plain renderable."""

    # fixed heights (set by the Stepper): a pane of height auto is rendered twice per step, once to measure it
    DEFAULT_CSS = "StatePane { overflow: hidden; }"
    state = reactive(None)
    follow = reactive(None)

    def __init__(self, view, *, id=None):
        super().__init__(id=id)
        self._view = view

    def render(self):
        if self.state is None:
            return Text("replaying…", style="dim")
        return self._view(self.state, self.follow)


class Stepper(App):
    """Step through a trace: one instruction, one event, one safe point at a time."""

    TITLE = "lab trace view"
    AUTO_FOCUS = None       # the keys belong to the stepper until a prompt opens
    CSS = """
    Screen { layout: vertical; }
    #where { height: 1; padding: 0 1; }
    #body { height: 1fr; }
    #top { height: 15; }
    #middle { height: 17; }
    #console { height: 13; }
    #code { width: 3fr; }
    #registers { width: 2fr; }
    #tasks { width: 1fr; }
    #events { width: 1fr; }
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
        Binding("g", "ask('goto')", "goto", show=False),
        Binding("f", "follow", "follow", show=False),
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

    # ---- layout ----
    def compose(self) -> ComposeResult:
        yield Static(id="where")
        with VerticalScroll(id="body"):
            with Horizontal(id="top"):
                yield StatePane(lambda s, f: CodeView(s, raw=False), id="code")
                yield StatePane(lambda s, f: RegisterView(s, columns=2), id="registers")
            with Horizontal(id="middle"):
                yield StatePane(lambda s, f: TaskView(s, f), id="tasks")
                yield StatePane(lambda s, f: EventView(s), id="events")
            yield StatePane(lambda s, f: ConsoleTail(s), id="console")
        yield Input(id="prompt")
        yield Static(id="message")
        yield Static(HELP, id="help")

    def on_mount(self):
        # the task table grows with the tasks; the other panes hold a fixed number of lines
        tasks = len(self.inspector.trace.header.get("tasks", ()))
        self.query_one("#middle").styles.height = max(17, tasks + 6)
        if self.step == self._first:
            self._show()          # the reactive does not fire for a value it already holds
        self.step = self._first

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
        follow = None if self.follow is None else self.index.task_name(self.follow)
        self.query_one("#where", Static).update(StepHeader(self.state, follow))
        for pane in self.query(StatePane):
            pane.follow = self.follow
            pane.state = self.state

    def go(self, step, why=""):
        if step is None:
            self.say(why or "nothing further that way")
            return
        step = max(self.inspector.start, min(step, self.inspector.end))
        # why is what to say when nothing moves; a move clears the line
        self.say(why if why and step == self.step else "")
        self.step = step

    def say(self, text):
        self.query_one("#message", Static).update(text)

    def _idle(self):
        if self.busy:
            self.say("searching… (wait for it, or q to quit)")
            return False
        return True

    # ---- actions ----
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

    # ---- prompts ----
    def action_ask(self, what):
        if not self._idle():
            return
        prompt = self.query_one("#prompt", Input)
        self._asking = what
        prompt.placeholder = ("function to find the next call of (e.g. capable), Enter" if what == "call"
                              else "step to go to: 1234567, 5e6, 50%, +1000 or -1000, Enter")
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

    def on_input_submitted(self, message: Input.Submitted):
        what, text = self._asking, message.value.strip()
        self._close_prompt()
        if not text:
            return
        if what == "goto":
            try:
                self.go(self.index.parse_step(text, here=self.step))
            except ViewerError as exc:
                self.say(str(exc))
        elif what == "call":
            self.find_call(text)

    def find_call(self, name):
        """Go to the next call of function `name` (events if recorded, else a replay
        with a code hook, in a worker thread so the keys stay alive)."""
        try:
            self.index.function_address(name)
        except ViewerError as exc:
            return self.say(str(exc))
        self.busy = True
        self.say(f"looking for the next call of {name}…")
        here = self.step

        def work():
            try:
                found = self.inspector.next_call(name, here)
                msg = "" if found is not None else f"no call of {name} after step {here:,}"
            except (ViewerError, TraceError) as exc:
                found, msg = None, str(exc)
            self.call_from_thread(self._found, found, msg)

        self.run_worker(work, thread=True, exclusive=True, group="search")

    def _found(self, step, msg):
        self.busy = False
        if step is None:
            self.say(msg)
        else:
            self.go(step)


__all__ = ["Stepper", "HELP"]
