"""session - one booted kernel driven command by command: what each command checks, does and shows.

Every command checks what it was given before it acts, so a command that
fails (ShellError) has changed nothing.  What the kernel itself decides (a
patch refused by its init, a panic) is an outcome, shown and remembered in
`failed`, not an error.  The story of what happened (tasks moving, fake
signals, patch states) is told between two slices as the kernel runs, in the
order it happened, with the calls the function tracers saw.
"""
from __future__ import annotations

import json
import pathlib
import tempfile

from rich.text import Text

from ..errors import KernelPanic, LabError
from ..render import ConsoleView, Listing, PadView, PatchTable, TaskTable
from . import commands as cmds
from .commands import ShellError
from .progress import Interrupt, RunProgress, transition_counts
from .story import Names, matches, sentence, tells
from .timetravel import TimeMachine
from .views import EventTable, HelpTable, PadTable, PendingTable, TracerTable

CALLS_PER_RUN = 20      # calls of one traced function printed by one command; the rest are counted


class Session:
    """A live kernel and the commands that drive it.  execute(command) returns False when the session ends."""

    def __init__(self, system, out, interactive=False):
        self.system = system
        self.out = out
        self.interactive = interactive
        self.names = Names(system)
        self.time = TimeMachine(system)
        self.interrupt = Interrupt()
        self.cursor = None          # the recorded step shown by back / forward / goto; None: the present
        self.tracers = {}           # function -> [handle, calls seen]
        self._calls = []            # FunctionCalls the tracers collected, told between slices
        self._shown = {}            # function -> calls printed by the command running now
        self._told = len(system.events)     # events before this index have been told (or predate the session)
        self._built = None          # the directory .c patches are built into
        self.panic = None
        self.failed = []            # what the kernel refused or could not do: the script's exit status 1

    def close(self):
        for handle, _ in self.tracers.values():
            self.system.ftrace.unregister_tracer(handle)
        self.tracers.clear()
        self.time.close()
        if self._built is not None:
            self._built.cleanup()
            self._built = None

    # ---- the prompt and the banner ----
    def prompt(self):
        where = "" if self.cursor is None else f" [at {self.cursor:,}]"
        return f"lab {self.system.clock:,}{where}> "

    def banner(self):
        s = self.system
        k = s.kernel
        self.out.line(f"booted workload {k.workload} (seed {k.seed}, quantum {k.quantum:,}, model "
                      f"{s.livepatch.model}): {len(s.tasks)} tasks after {s.clock:,} instructions; "
                      "`help` lists the commands", "bold")

    # ---- running a command ----
    def execute(self, command):
        handler = getattr(self, "do_" + command.name)
        with self.interrupt.catching():
            result = handler(**command.args)
        return result is not False

    # ---- helpers: checks that raise ShellError, before anything changes ----
    def _alive(self, what):
        if self.panic is not None:
            raise ShellError(f"{what}: the kernel has panicked ({self.panic}); nothing runs any more. "
                             "Look back with `goto`, `events`, `console`, `save FILE` or `report`")

    def task(self, text, what):
        key = int(text) if text.isascii() and text.isdigit() else text
        try:
            return self.system.task(key)
        except LabError as exc:
            raise ShellError(f"{what}: {exc}") from None

    def _event_arg(self, kind, arg, what):
        if arg is None:
            return
        if kind in ("migrated", "signal", "oops", "exit"):
            self.task(arg, what)
        elif kind == "patch" and arg not in {p.name for p in self.system.patches}:
            names = ", ".join(p.name for p in self.system.patches) or "none yet"
            raise ShellError(f"{what}: no patch {arg!r}; the patches are: {names}")

    def _story(self, calls=True):
        """Tell the events since the last told, with the traced calls, in the order they happened."""
        events = self.system.events
        lines = [(e.at, e.seq, e.kind, sentence(e, self.names)) for e in events[self._told:] if tells(e)]
        self._told = len(events)
        if calls:
            for n, call in enumerate(self._calls):
                shown = self._shown.get(call.function, 0)
                self._shown[call.function] = shown + 1
                if shown < CALLS_PER_RUN:
                    where = " in interrupt" if call.in_irq else ""
                    lines.append((call.at, -1 - n, "call", f"{call.function}() called by "
                                                         f"{self.names(call.tid)} ({call.tid}){where}"))
            self._calls.clear()
        lines.sort(key=lambda x: (x[0], x[1]))
        for at, _seq, kind, text in lines:
            self.out.line(f"{at:>13,}  {text}", _STYLE.get(kind, ""))

    def _calls_summary(self):
        for function, seen in sorted(self._shown.items()):
            if seen > CALLS_PER_RUN:
                self.out.line(f"{'':>13}  ... and {seen - CALLS_PER_RUN:,} more calls of {function}() "
                              f"(`untrace {function}` stops tracing it)", "dim")
        self._shown.clear()

    def _transition_line(self):
        t = self.system.livepatch.transition
        counts = transition_counts(self.system)
        if t is None or counts is None:
            return
        moved, pending = counts
        direction = "patching" if t.target == 1 else "unpatching"
        waits = ", ".join(f"{task.name} ({where})" if where else task.name
                          for task, where in self.system.livepatch.pending())
        text = f"{direction} '{t.patch.name}': {moved} of {moved + len(pending)} tasks moved"
        self.out.line(text + (f"; pending: {waits}" if waits else "; the interrupt context has not moved yet"),
                      "yellow")

    def _flush(self):
        self._story()

    def _panicked(self, exc, what):
        """Tell a panic (once: the story may have told it already) and remember it."""
        told = any(e.kind == "panic" for e in self.system.events[self._told:])
        self._story()
        self.panic = str(exc).removeprefix("kernel panic: ")
        self.failed.append(f"{what}: kernel panic: {self.panic}")
        if not told:
            self.out.line(f"kernel panic: {self.panic}", "bold red")

    def _run(self, instructions, until=None, label="running"):
        """Run the kernel; returns (ran, interrupted); a panic is told and remembered."""
        self.cursor = None
        runner = RunProgress(self.system, self.out.console if self.out.terminal else None, self.interrupt,
                             on_slice=self._flush, label=label)
        ran, interrupted = 0, False
        start = self.system.clock
        try:
            ran, interrupted = runner.run(instructions, until)
        except KernelPanic as exc:
            self._panicked(exc, "run")
            ran = self.system.clock - start
        self._calls_summary()
        return ran, interrupted

    # ---- the commands ----
    def do_run(self, instructions, until):
        self._alive("run")
        s = self.system
        if until is None:
            n = instructions or cmds.RUN_DEFAULT
            before = s.clock
            ran, interrupted = self._run(n)
            end = f"{before:,} -> {s.clock:,}"
            if interrupted:
                self.out.line(f"interrupted after {ran:,} of {n:,} instructions ({end}), between two slices: "
                              "the kernel is consistent and `run` goes on from here", "bold yellow")
            elif self.panic is None:
                self.out.line(f"ran {ran:,} instructions ({end})", "dim")
            self._transition_line()
            return
        kind, arg = until
        what = f"run until {kind}"
        self._event_arg(kind, arg, what)
        limit = instructions or cmds.UNTIL_LIMIT
        found = []
        handle = None
        if kind == "complete":
            if s.livepatch.busy is None:
                raise ShellError(f"{what}: no transition is in progress; `patch FILE` starts one")
            cond = lambda sys_: sys_.livepatch.busy is None  # noqa: E731
        elif kind == "call":
            try:
                handle = s.ftrace.register_tracer(arg, found.append)
            except LabError as exc:
                raise ShellError(f"{what}: {exc}") from None
            cond = lambda _s: bool(found)  # noqa: E731
        else:
            scanned = [len(s.events)]

            def cond(sys_):
                events = sys_.events
                for e in events[scanned[0]:]:
                    if matches(kind, arg, e, self.names):
                        found.append(e)
                        return True
                scanned[0] = len(events)
                return False
        before = s.clock
        try:
            ran, interrupted = self._run(limit, cond, label=f"until {kind}")
        finally:
            if handle is not None:
                s.ftrace.unregister_tracer(handle)
        end = f"{before:,} -> {s.clock:,}"
        if found and kind == "call":
            c = found[0]
            self.out.line(f"stopped: {arg}() called by {self.names(c.tid)} ({c.tid}) at {c.at:,}; ran {ran:,} "
                          f"instructions ({end})", "bold")
        elif found:
            self.out.line(f"stopped: {sentence(found[0], self.names)} at {found[0].at:,}; ran {ran:,} "
                          f"instructions ({end})", "bold")
        elif kind == "complete" and s.livepatch.busy is None and self.panic is None:
            last = next((e for e in reversed(s.events) if e.kind == "patch"), None)
            what = sentence(last, self.names) if last is not None else "the transition is over"
            self.out.line(f"stopped: {what}; ran {ran:,} instructions ({end})", "bold")
        elif interrupted:
            self.out.line(f"interrupted after {ran:,} instructions ({end}), between two slices, before "
                          f"{kind}: the kernel is consistent", "bold yellow")
        elif kind == "complete" and self.panic is None:
            self.out.line(f"the transition is still in progress after {limit:,} instructions ({end}); "
                          "`run N until complete` waits longer", "yellow")
        elif self.panic is None:
            self.out.line(f"no {kind}{' ' + arg if arg else ''} within {limit:,} instructions ({end}); "
                          "`run N until ...` waits longer", "yellow")
        self._transition_line()

    def do_tasks(self):
        from ..report import task_record
        s = self.system
        report = {"tasks": [task_record(s, t) for t in s.tasks]}
        self.out.table(TaskTable(report).__rich__())
        t = s.livepatch.transition or s.livepatch.last_transition
        if t is not None:
            irq = "new" if t.irq_universe() == t.target else "old"
            self.out.line(f"the interrupt context is in the {irq} universe", "dim")

    def do_pending(self):
        s = self.system
        t = s.livepatch.transition
        if t is None:
            busy = s.livepatch.busy
            self.out.line(f"'{busy.name}' is being applied all at once (model {s.livepatch.model}); no task is "
                          "waited for one by one" if busy else "no transition is in progress")
            return
        rows = [(task.tid, task.name, task.kind, task.state.value, where) for task, where in s.livepatch.pending()]
        direction = "patching" if t.target == 1 else "unpatching"
        if rows:
            self.out.table(PendingTable(t.patch.name, direction, rows).__rich__())
            self.out.line("`signal` sends the fake signal to them now; `force` moves them all at once (unsafe)",
                          "dim")
        else:
            self.out.line(f"every task has moved; the {direction} transition of '{t.patch.name}' waits for the "
                          "interrupt context, which moves at its next interrupt exit")

    def do_patches(self):
        from ..report import patch_record
        patches = self.system.patches
        if not patches:
            self.out.line("no patch has been loaded; `patch FILE` loads one")
            return
        self.out.table(PatchTable({"patches": [patch_record(p) for p in patches]}).__rich__())

    def do_patch(self, file):
        self._alive("patch")
        s = self.system
        path = pathlib.Path(file)
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "no such file"
            raise ShellError(f"patch {file}: {what}; give a patch object (.o) or its C source (.c), e.g. "
                             "patches/kgr_capable.o")
        if path.suffix not in (".o", ".c"):
            raise ShellError(f"patch {file}: neither a patch object (.o) nor a C source (.c)")
        busy = s.livepatch.busy
        if busy is not None:
            raise ShellError(f"patch {file}: the transition of '{busy.name}' is still in progress and kGraft "
                             "loads one patch at a time; `run until complete`, `signal`, `force` or "
                             f"`revert {busy.name}` first")
        if path.suffix == ".c":
            from ..patchbuild import build_patch
            if self._built is None:
                self._built = tempfile.TemporaryDirectory(prefix="lab-shell-build-")
            try:
                path = build_patch(path, pathlib.Path(self._built.name) / (path.stem + ".o"))
            except LabError as exc:
                raise ShellError(f"patch {file}: {exc}") from None
            self.out.line(f"built {file}", "dim")
        self.cursor = None
        before = s.clock
        try:
            patch = s.apply_patch(path)
        except KernelPanic as exc:
            self._panicked(exc, f"patch {file}")
            return
        except LabError as exc:
            if s.clock == before:     # refused before the kernel ran: nothing changed
                raise ShellError(f"patch {file}: {exc}") from None
            self._story()
            reason = str(exc).removeprefix(f"{path}: ")
            self.failed.append(f"patch {file}: {reason}")
            self.out.line(f"patch {file} failed: {reason}", "bold red")
            return
        self._story()
        funcs = patch.description.functions if patch.description else ()
        pairs = ", ".join(f"{f.old_name} -> {f.new_name}" for f in funcs)
        self.out.line(f"'{patch.name}' loaded from {file} in {s.clock - before:,} instructions: {pairs}", "bold")
        for f in funcs:
            self.out.print(PadView(s, f.old_name))
        self._transition_line()

    def do_signal(self):
        self._alive("signal")
        self.cursor = None
        s = self.system
        if s.livepatch.transition is None:
            raise ShellError("signal: no transition is in progress; the fake signal is sent only during one")
        sent = s.send_fake_signals()
        if not sent:
            self.out.line("every task has moved; there is nobody to signal")
            return
        for tid in sent:
            task = s.task(tid)
            what = "fake signal" if task.kind == "user" else "wake-up (a kernel thread's fake signal)"
            self.out.line(f"{what} queued for {task.name} ({tid})")
        self.out.line("it is delivered at the next timer tick: `run` and watch them move", "dim")

    def do_kill(self, task, signal):
        self._alive("kill")
        self.cursor = None
        from ..kernel import SIGNAL_NAMES
        t = self.task(task, "kill")
        try:
            self.system.send_signal(t.tid, signal)
        except LabError as exc:
            raise ShellError(f"kill: {exc}") from None
        name = SIGNAL_NAMES.get(signal, f"signal {signal}")
        self.out.line(f"{name} ({signal}) queued for {t.name} ({t.tid}); it is delivered at the next timer tick")

    def do_force(self):
        self._alive("force")
        self.cursor = None
        s = self.system
        if s.livepatch.transition is None:
            raise ShellError("force: no transition is in progress")
        s.force()
        self._story()
        self.out.line("forced: nobody can tell any more whether a task still runs the old code; the patch's "
                      "module can never be removed", "bold yellow")
        self._transition_line()

    def do_revert(self, name):
        self._alive("revert")
        self.cursor = None
        s = self.system
        try:
            s.revert(name)
        except LabError as exc:
            raise ShellError(f"revert {name}: {exc}") from None
        self._story()
        self._transition_line()

    def do_disasm(self, function):
        s = self.system
        sym = s.image.lookup(function)
        if sym is not None and sym.kind == "func":
            address, size = sym.address, sym.size
        else:
            found = [(f.address, f.size) for m in s.modules.modules if m.loaded
                     for f in m.symbols.values() if f.kind == "func" and f.name == function]
            if not found:
                try:
                    s.image.function(function)      # its message names close matches
                except LabError as exc:
                    raise ShellError(f"disasm: {exc}") from None
            address, size = found[0]
        from ..disasm import disassemble
        insns = disassemble(s.machine.read(address, size), address, symbolize=s.ftrace.symbolize)
        try:
            _name, pad = s.ftrace.resolve(function)
        except LabError:
            pad = None
        if pad is None:
            note = "notrace: no fentry pad, cannot be traced or patched"
        else:
            state, target = s.ftrace.state(pad)
            note = "fentry pad: " + ("the 5-byte NOP" if target is None else
                                     f"{state.value} {s.ftrace.symbolize(target)}")
        listing = Listing(f"{function} ({size} bytes, {note})", insns, s.ftrace.symbolize,
                          highlight=[pad] if pad else [])
        self.out.table(listing.__rich__())

    def do_pads(self, filter):
        s = self.system
        ft = s.ftrace
        pads = [(p.address, p.function) for p in s.image.pads]
        pads += [(a, name) for m in s.modules.modules if m.loaded for a, name in m.pads]
        rows = []
        for address, function in pads:
            state, target = ft.state(address)
            if filter is None and target is None:
                continue
            if filter not in (None, "all") and filter not in function:
                continue
            insn = ft.disassemble_pad(address)
            rows.append((address, insn.raw.hex(" "), insn.text, state.value, function,
                         ft.symbolize(target) if target is not None else ""))
        if filter is None:
            title = f"{len(rows)} of {len(pads)} pads are not the 5-byte NOP (`pads all` lists every one)"
        else:
            title = f"{len(rows)} of {len(pads)} pads" + ("" if filter == "all" else f" matching {filter!r}")
        if not rows:
            self.out.line(title)
            return
        self.out.table(PadTable(rows, title).__rich__())

    def do_trace(self, function):
        s = self.system
        if function is None:
            if not self.tracers:
                self.out.line("no function is traced; `trace FUNC` prints each of its calls as the kernel runs")
                return
            self.out.table(TracerTable([(f, seen) for f, (_h, seen) in sorted(self.tracers.items())]).__rich__())
            return
        if function in self.tracers:
            raise ShellError(f"trace {function}: already traced; `untrace {function}` stops it")

        def seen(call, function=function):
            self.tracers[function][1] += 1
            self._calls.append(call)        # told between two slices, never from the hook
        try:
            handle = s.ftrace.register_tracer(function, seen)
        except LabError as exc:
            raise ShellError(f"trace {function}: {exc}") from None
        self.tracers[function] = [handle, 0]
        self.out.line(f"tracing {function}(): each call is printed as the kernel runs, the first "
                      f"{CALLS_PER_RUN} of each command (`untrace {function}` stops)")

    def do_untrace(self, function):
        names = sorted(self.tracers) if function == "all" else [function]
        if function != "all" and function not in self.tracers:
            traced = ", ".join(sorted(self.tracers)) or "none"
            raise ShellError(f"untrace {function}: it is not traced; traced: {traced}")
        for name in names:
            handle, seen = self.tracers.pop(name)
            self.system.ftrace.unregister_tracer(handle)
            self.out.line(f"stopped tracing {name}() after {seen:,} calls")

    def do_console(self, n):
        lines = self.system.console
        view = ConsoleView(lines, n)
        if self.out.terminal:
            self.out.print(view)
            return
        if self.out.recording is not None:
            self.out.recording.print(view)
        shown = lines[-n:]
        self.out.console.print(Text(f"console: the last {len(shown)} of {len(lines)} lines"), soft_wrap=True)
        for line in shown:
            self.out.console.print(Text(line), soft_wrap=True)

    def do_events(self, all, n):
        events = [e for e in self.system.events if all or tells(e)]
        shown = events[-n:]
        rows = [(e.at, e.kind, sentence(e, self.names)) for e in shown]
        what = "events" if all else "events that tell the story"
        self.out.table(EventTable(rows, f"the last {len(shown)} of {len(events)} {what}").__rich__())

    # ---- time travel ----
    def _here(self):
        return self.system.clock if self.cursor is None else self.cursor

    def _show(self, step, asked, full=False):
        """A recorded step: the code, the tasks with their universes and the events around it (full: the
        registers and the console too, as the stepper shows them)."""
        from rich.console import Group

        from ..viewer import CodeView, EventView, StepHeader, StepView, TaskView
        self.time.check(step, asked)
        state = self.time.state(step)
        now = self.system.clock
        when = "the present" if step == now else f"{now - step:,} instructions before the present"
        self.cursor = None if step == now else step
        self.out.line(f"step {step:,}: {when}", "bold")
        self.out.print(StepView(state) if full else
                       Group(StepHeader(state), CodeView(state), TaskView(state), EventView(state)))

    def do_back(self, n):
        step = self._here() - n
        if step < self.time.start:
            raise ShellError(f"back {n:,}: the recording starts at step {self.time.start:,}; the step shown is "
                             f"{self._here():,}")
        self._show(step, f"back {n:,}")

    def do_forward(self, n):
        step = self._here() + n
        if step > self.system.clock:
            raise ShellError(f"forward {n:,}: the recording ends at the present, step {self.system.clock:,}; "
                             f"the step shown is {self._here():,} (`run` makes more)")
        self._show(step, f"forward {n:,}")

    def do_goto(self, to):
        start, now = self.time.start, self.system.clock
        if to.kind == "now":
            step = now
        elif to.kind == "at":
            step = to.value
        elif to.kind == "percent":
            step = start + round((now - start) * to.value)
        elif to.kind == "relative":
            step = self._here() + to.value
        else:
            kind, arg = to.value
            self._event_arg(kind, arg, f"goto {kind}")
            found = next((e for e in reversed(self.system.events) if matches(kind, arg, e, self.names)), None)
            if found is None:
                raise ShellError(f"goto {kind}{' ' + arg if arg else ''}: no such event in the recording "
                                 "(`events` lists what happened)")
            self.out.line(f"{sentence(found, self.names)} at {found.at:,}", "bold")
            step = found.at
        self._show(step, "goto")

    def do_view(self):
        step = self._here()
        if not self.interactive:
            self.out.line("view: the stepper needs a terminal; here is the step it would open at, as "
                          "`lab trace show` renders it", "dim")
            self._show(step, "view", full=True)
            return
        from ..viewer.stepper import Stepper
        Stepper(self.time.inspector(), step=self.time.check(step, "view")).run()
        self.out.line(f"back in the session at {self.system.clock:,}", "dim")

    def do_save(self, file):
        from ..cli import check_output
        try:
            check_output("", file, "session.trace")
        except LabError as exc:
            raise ShellError(f"save {exc}") from None
        self.system.save_trace(file)
        self.out.line(f"trace written to {file}: `lab trace view {file}` steps through it")

    def do_report(self):
        text = json.dumps(self.system.report(), indent=2)
        for c in [self.out.console] + ([self.out.recording] if self.out.recording is not None else []):
            c.print(Text(text), soft_wrap=True)

    def do_help(self, command):
        if command is None:
            self.out.table(HelpTable(list(cmds.COMMANDS.values())).__rich__())
            self.out.line("numbers: 1000000, 1_000_000, 1,000,000 or 1e6; a task: its tid or name; Tab completes",
                          "dim")
            return
        spec = cmds.COMMANDS[command]
        self.out.line(spec.usage, "bold")
        self.out.line(f"  {spec.summary}")
        if command in ("run", "goto"):
            for name, (arg, what) in cmds.EVENTS.items():
                self.out.line(f"  {(name + ' ' + arg).strip():<18} {what}")

    def do_quit(self):
        return False


_STYLE = {"migrated": "bold magenta", "signal": "bold cyan", "patch": "bold yellow", "oops": "bold red",
          "panic": "bold red", "exit": "red", "call": "blue", "console": ""}
