"""`lab shell` (lab.shell): scripts and their golden transcripts, commands that fail changing nothing, runs stopped
by an event or by Ctrl-C between two slices, time travel over the recording, progress on a terminal only, and the
interactive mode driven through a pseudo-terminal.

A golden transcript is the standard output of its script; after a change that is meant to change it, write it
again with `lab shell --script tests/data/shell/NAME.lab > tests/data/shell/NAME.txt` (and the tour's picture
with `--svg tests/data/shell/tour.svg`), then read the diff.
"""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys

import pytest
from rich.console import Console

import lab
from lab import cli
from lab.image import FIRMWARE_DIR
from lab.shell import Output, RunProgress, Session, ShellError, parse
from lab.shell.progress import Interrupt
from lab.shell.terminal import Completer
from lab.system import System
from lab.trace import Trace

ROOT = FIRMWARE_DIR.parent
DATA = ROOT / "tests" / "data" / "shell"
SCRIPTS = ("learner", "commands", "tour")
PROMPT = r"lab [\d,]+(?: \[at [\d,]+\])?> "
# where the default boot ends (the prompts count from it)
with lab.boot() as _booted:
    BOOTED_AT = _booted.clock
BOX = re.compile(r"[│┃]")    # a terminal's tables are drawn; their rules read as spaces here
ANSI = re.compile(r"\x1b\[[0-9;?<>=]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]|\x07|\r")


# ---- running `lab shell` in this process ----

@pytest.fixture
def lab_shell(capsys, monkeypatch):
    """Run `lab shell ARGS...` from the repository's root (scripts name patches/...); returns
    (status, stdout, stderr, systems booted)."""
    monkeypatch.chdir(ROOT)
    boots = []
    init = System.__init__

    def counting(system, *args, **kwargs):
        boots.append(1)
        init(system, *args, **kwargs)

    monkeypatch.setattr(System, "__init__", counting)

    def run(*argv):
        capsys.readouterr()
        boots.clear()
        status = cli.main(["shell", *[str(a) for a in argv]])
        out, err = capsys.readouterr()
        return status, out, err, len(boots)

    return run


class Driver:
    """A Session on a fresh kernel, fed lines as a person types them; say() returns what the line printed."""

    def __init__(self, **boot):
        self.system = lab.boot(record=True, observe=True, **boot)
        self.file = io.StringIO()
        self.session = Session(self.system, Output(file=self.file, terminal=False))

    def say(self, line):
        start = self.file.tell()
        self.session.execute(parse(line))
        return self.file.getvalue()[start:]

    def state(self):
        s = self.system
        return (s.state_digest(), s.clock, len(s.events), self.session.cursor, sorted(self.session.tracers),
                [(p.name, p.state.value) for p in s.patches])

    def close(self):
        self.session.close()
        self.system.close()


@pytest.fixture
def driver(monkeypatch):
    monkeypatch.chdir(ROOT)
    d = Driver()
    yield d
    d.close()


def _waiting():
    d = Driver()
    d.say("run 1e6")
    d.say("patch patches/kgr_capable.o")
    d.say("run 500000")
    assert [t.name for t, _ in d.system.livepatch.pending()] == ["pipe-reader"]
    return d


@pytest.fixture(scope="module")
def waiting():
    """A session in the middle of the capable() transition, pipe-reader the only task holding it open; shared
    by the tests that change nothing (each checks that it did not)."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    d = _waiting()
    yield d
    d.close()
    os.chdir(cwd)


@pytest.fixture
def waiting_own(monkeypatch):
    """The same, for a test that runs the kernel on."""
    monkeypatch.chdir(ROOT)
    d = _waiting()
    yield d
    d.close()


# ---- scripts: golden transcripts, the same bytes everywhere ----

@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_gives_its_golden_transcript(lab_shell, name):
    status, out, err, _ = lab_shell("--script", f"tests/data/shell/{name}.lab")
    assert (status, err) == (0, "")
    assert out == (DATA / f"{name}.txt").read_text(), \
        f"the transcript of {name}.lab changed; see this module's docstring to write it again"


def test_a_script_on_standard_input_gives_the_same_bytes_in_another_process_whatever_the_terminal_width():
    script = (DATA / "tour.lab").read_text()
    env = dict(os.environ, COLUMNS="40", LINES="10")
    proc = subprocess.run([sys.executable, "-m", "lab", "shell"], input=script, capture_output=True, text=True,
                          cwd=ROOT, env=env, check=False)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == (DATA / "tour.txt").read_text()


def test_the_tours_svg_is_the_recorded_session(lab_shell, tmp_path):
    svg = tmp_path / "tour.svg"
    status, out, _err, _ = lab_shell("--script", "tests/data/shell/tour.lab", "--svg", svg)
    assert status == 0
    assert out == (DATA / "tour.txt").read_text()
    assert svg.read_text() == (DATA / "tour.svg").read_text()


def test_a_script_line_that_does_not_parse_stops_it_before_the_kernel_boots(lab_shell, tmp_path):
    script = tmp_path / "bad.lab"
    script.write_text("run 1e6\n# a comment\nrun until nothing\ntasks\n")
    status, out, err, boots = lab_shell("--script", script)
    assert (status, out, boots) == (2, "", 0)
    assert err.splitlines() == [f"lab: error: {script}:3: run until: no event 'nothing'; the events are migrated, "
                                "signal, patch, complete, console, oops, exit, call"]


def test_a_script_line_that_cannot_be_done_stops_it_there_with_its_line_number(lab_shell, tmp_path):
    script = tmp_path / "stops.lab"
    script.write_text("run 100000\nkill kfreezerd 9\nrun 100000\n")
    status, out, err, boots = lab_shell("--script", script)
    assert (status, boots) == (2, 1)
    (line,) = err.splitlines()
    assert line.startswith(f"lab: error: {script}:2: kill: task 4 (kfreezerd) is a kernel thread")
    echoed = [x for x in out.splitlines() if re.match(PROMPT, x)]
    booted = BOOTED_AT
    assert echoed == [f"lab {booted:,}> run 100000", f"lab {booted + 100_000:,}> kill kfreezerd 9"]


@pytest.mark.parametrize("model, lines, told", [
    ("kgraft", ["patch patches/bad/empty_patch.o", "patches"],
     "patch patches/bad/empty_patch.o failed: 'bad_empty_patch': no function to patch"),
    ("stop-machine", ["patch patches/kgr_pipe_wait.o", "run until complete"],
     "stopped: patch 'kgr_pipe_wait' failed (gave up after 5 attempts"),
    ("immediate", ["patch patches/kgr_proto_pair.o", "run 2e6"], "1 consistency violation(s)"),
])
def test_what_the_kernel_refuses_or_gets_wrong_is_told_the_script_goes_on_and_exits_1(lab_shell, tmp_path, model,
                                                                                       lines, told):
    script = tmp_path / "outcome.lab"
    script.write_text("\n".join(["run 1e6", *lines, "tasks"]) + "\n")
    status, out, err, _ = lab_shell("--model", model, "--script", script)
    assert (status, err) == (1, "")
    assert told in out
    assert re.search(r"> tasks$", out, re.M), "the script stopped"


def test_lab_shell_has_help_that_names_its_options(lab_shell):
    status, out, _err, boots = lab_shell("--help")
    assert (status, boots) == (0, 0)
    assert "usage: lab shell" in out
    for option in ("--workload", "--seed", "--model", "--script", "--svg"):
        assert option in out


@pytest.mark.parametrize("argv, names", [
    (["--script", "no/such.lab"], ["--script no/such.lab", "no such script"]),
    (["--seed", "-1"], ["--seed"]),
    (["--model", "nope"], ["--model", "nope"]),
    (["--quantum", "5"], ["--quantum 5", "out of range"]),
    (["--workload", "nope"], ["nope"]),
    (["--workload", "hammer", "--param", "nr_hammer=99"], ["nr_hammer"]),
    (["--svg", "{tmp}"], ["--svg", "is a directory"]),
    (["--bogus"], ["--bogus"]),
])
def test_lab_shell_refuses_a_bad_option_in_one_line_before_booting(lab_shell, tmp_path, argv, names):
    status, out, err, boots = lab_shell(*[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert (status, out, boots) == (2, "", 0)
    (line,) = err.splitlines()
    assert line.startswith("lab: error: ")
    for name in names:
        assert name in line


# ---- a command that fails changes nothing ----

@pytest.mark.parametrize("line", [
    "kill kfreezerd 9", "kill nosuch 9", "kill pipe-reader 99", "revert nosuch", "patch patches/kgr_capable_v2.o",
    "patch patches/nosuch.o", "patch patches", "patch README.md", "run until migrated nosuch",
    "run until patch nosuch", "run until call schedule", "trace schedule", "trace nosuch", "untrace capable",
    "back 1e10", "forward 1", "goto 1e10", "goto migrated nosuch", "goto oops", "save /no/such/dir/x.trace",
    "disasm nosuch", "disasm init_user_ns", "run 0", "run 1e11", "events 0", "frobnicate", "run until",
    "kill pipe-reader", "patch 'unclosed",
])
def test_a_command_that_fails_raises_one_message_and_changes_nothing(waiting, line):
    before = waiting.state()
    with pytest.raises(ShellError) as info:
        waiting.say(line)
    assert "\n" not in str(info.value)
    assert waiting.state() == before


@pytest.mark.parametrize("line", ["signal", "force", "run until complete"])
def test_what_needs_a_transition_is_refused_without_one(driver, line):
    driver.say("run 100000")
    before = driver.state()
    with pytest.raises(ShellError, match="no transition is in progress"):
        driver.say(line)
    assert driver.state() == before


# ---- runs: until an event, Ctrl-C between two slices ----

def test_run_until_migrated_stops_in_the_slice_where_the_task_moved(waiting_own):
    waiting = waiting_own
    waiting.say("signal")
    before = waiting.system.clock
    out = waiting.say("run until migrated pipe-reader")
    moved = [e for e in waiting.system.events if e.kind == "migrated" and e.tid == 3]
    assert len(moved) == 1 and before < moved[0].at <= waiting.system.clock
    assert waiting.system.clock - moved[0].at <= waiting.system.kernel.quantum
    assert f"stopped: pipe-reader moved to the new universe (1) after the fake signal woke it (kernel exit) at " \
           f"{moved[0].at:,}" in out


def test_ctrl_c_stops_a_run_between_two_slices_and_the_kernel_goes_on_as_if_run_straight():
    system = lab.boot(record=True, observe=True)
    slices = [0]

    def on_slice():
        slices[0] += 1
        if slices[0] == 30:
            os.kill(os.getpid(), signal.SIGINT)     # Ctrl-C, as the terminal sends it

    interrupt = Interrupt()
    with interrupt.catching():
        ran, interrupted = RunProgress(system, None, interrupt, on_slice=on_slice).run(1_000_000_000)
    assert interrupted and 0 < ran < 1_000_000_000
    stopped_at = system.clock
    system.run(300_000)
    with lab.boot(record=True, observe=True) as straight:
        ends = set()
        straight.kernel.slice_hooks.append(lambda: ends.add(straight.clock))
        straight.run(system.clock - straight.clock)
        assert (straight.clock, straight.digest) == (system.clock, system.digest)
    assert stopped_at in ends           # it stopped where a slice of the straight run ends
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    system.close()


def test_progress_is_drawn_on_a_terminal_and_never_elsewhere(waiting_own):
    waiting = waiting_own
    terminal, plain = io.StringIO(), io.StringIO()
    RunProgress(waiting.system, Console(file=terminal, force_terminal=True, width=160)).run(40_000)
    RunProgress(waiting.system, Console(file=plain, force_terminal=False, width=160)).run(40_000)
    RunProgress(waiting.system, None).run(40_000)
    text = ANSI.sub("", terminal.getvalue())
    assert "of 40,000 instructions" in text
    assert "6 moved, 1 pending (pipe-reader)" in text
    assert plain.getvalue() == ""


def test_a_traced_function_prints_its_calls_in_order_with_the_story_and_counts_the_rest(driver):
    driver.say("trace capable")
    out = driver.say("run 2e6")
    with lab.boot() as fresh:
        calls = []
        fresh.ftrace.register_tracer("capable", calls.append)
        fresh.run(2_000_000)
    shown = [line for line in out.splitlines() if "capable() called by cap-user (1)" in line]
    assert len(shown) == 20
    more = re.search(r"\.\.\. and ([\d,]+) more calls of capable\(\)", out)
    assert more and 20 + int(more.group(1).replace(",", "")) == len(calls)
    ats = [int(m.group(1).replace(",", "")) for m in re.finditer(r"^ +([\d,]+)  ", out, re.M)]
    assert ats == [c.at for c in calls[:20]]



def test_calls_and_moves_of_one_slice_are_told_in_the_order_they_happened(waiting_own):
    d = waiting_own
    d.say("trace do_signal")      # the fake signal's work: do_signal(), then the move at the kernel exit
    d.say("signal")
    out = d.say("run until migrated pipe-reader")
    lines = re.findall(r"^ +([\d,]+)  (.*)$", out, re.M)
    texts = [text for _at, text in lines]
    called = texts.index("do_signal() called by pipe-reader (3)")
    moved = next(i for i, text in enumerate(texts) if text.startswith("pipe-reader moved to"))
    assert called < moved
    ats = [int(at.replace(",", "")) for at, _text in lines]
    assert ats == sorted(ats)


# ---- time travel ----

def test_back_and_forward_show_the_sleeper_before_and_after_its_move(monkeypatch):
    monkeypatch.chdir(ROOT)
    d = Driver()
    try:
        for line in ("run 1e6", "patch patches/kgr_capable.o", "run 500000", "signal",
                     "run until migrated pipe-reader"):
            d.say(line)
        moved = next(e for e in d.system.events if e.kind == "migrated" and e.tid == 3)

        def universe(out):
            (row,) = re.findall(r"\b3\s+pipe-reader\s+user\s+\w+\s+(old|new) \(\d\)", out)
            return row

        at = d.say("goto migrated pipe-reader")
        assert f"step {moved.at:,}:" in at and universe(at) == "new"
        before = d.say("back 1000")
        assert f"step {moved.at - 1000:,}:" in before and universe(before) == "old"
        after = d.say("forward 2000")
        assert f"step {moved.at + 1000:,}:" in after and universe(after) == "new"
        assert d.session.cursor == moved.at + 1000
        assert d.session.prompt() == f"lab {d.system.clock:,} [at {moved.at + 1000:,}]> "
        d.say("run 1000")
        assert d.session.cursor is None
    finally:
        d.close()


def test_save_writes_the_recording_so_far_as_a_trace(waiting, tmp_path):
    path = tmp_path / "s.trace"
    out = waiting.say(f"save {path}")
    assert out == f"trace written to {path}: `lab trace view {path}` steps through it\n"
    trace = Trace.load(path)
    assert trace.end == waiting.system.clock
    assert [e.to_dict() for e in trace.events] == [e.to_dict() for e in waiting.system.events]


def test_report_prints_the_json_report_of_the_run_so_far(waiting):
    report = json.loads(waiting.say("report"))
    assert report == json.loads(json.dumps(waiting.system.report()))
    assert report["transition"]["pending"][0]["name"] == "pipe-reader"


@pytest.mark.gcc
def test_patch_of_a_c_source_builds_it_aside_and_loads_it(driver):
    listed = sorted(p.name for p in (ROOT / "patches").iterdir())
    driver.say("run 1e6")
    out = driver.say("patch patches/kgr_capable.c")
    assert out.splitlines()[0] == "built patches/kgr_capable.c"
    assert [(p.name, p.state.value) for p in driver.system.patches] == [("sample_kgraft_patch", "transition")]
    assert sorted(p.name for p in (ROOT / "patches").iterdir()) == listed


# ---- completion ----

def test_completion_offers_commands_events_tasks_signals_functions_patches_and_files(waiting):
    c = Completer(waiting.session)
    assert c.candidates([], "pe") == ["pending"]
    assert c.candidates([], "re") == ["revert", "report"]
    assert c.candidates(["run"], "") == ["until"]
    assert c.candidates(["run", "1e6", "until"], "mi") == ["migrated"]
    assert c.candidates(["run", "until", "migrated"], "pipe") == ["pipe-reader"]
    assert c.candidates(["run", "until", "call"], "capa") == ["capable"]
    assert c.candidates(["goto"], "n") == ["now"]
    assert c.candidates(["kill"], "kwork") == ["kworker/stats"]
    assert c.candidates(["kill", "pipe-reader"], "SIGU") == ["SIGUSR1", "SIGUSR2"]
    assert c.candidates(["disasm"], "kgr_new_ca") == ["kgr_new_capable"]
    assert c.candidates(["revert"], "") == ["sample_kgraft_patch"]
    assert c.candidates(["patch"], "patches/kgr_pipe") == ["patches/kgr_pipe_wait.c", "patches/kgr_pipe_wait.o"]
    assert c.candidates(["patch"], "patches/ba") == ["patches/bad/"]
    assert c.candidates(["help"], "fo") == ["force", "forward"]


# ---- the interactive mode, through a pseudo-terminal ----

class Terminal:
    """`lab shell` in a pseudo-terminal.  Every wait ends at a prompt or at the end of the session, so nothing
    waits on the clock: after a command, said() returns what it printed, without escape sequences."""

    def __init__(self, tmp_path):
        pexpect = pytest.importorskip("pexpect")
        self.pexpect = pexpect
        env = dict(os.environ, TERM="xterm", NO_COLOR="1", HOME=str(tmp_path),
                   XDG_STATE_HOME=str(tmp_path / "state"))
        env.pop("COLUMNS", None)
        env.pop("LINES", None)
        self.child = pexpect.spawn(sys.executable, ["-m", "lab", "shell"], cwd=str(ROOT), env=env,
                                   dimensions=(50, 160), encoding="utf-8", timeout=None)
        self.banner = self.wait()

    def wait(self, *patterns):
        """Wait for one of patterns or the prompt; (index, text before) for patterns, else the text before."""
        options = [*patterns, PROMPT, self.pexpect.EOF]
        i = self.child.expect(options)
        assert options[i] is not self.pexpect.EOF, f"the session ended: {self.child.before!r}"
        text = BOX.sub(" ", ANSI.sub("", self.child.before))
        return (i, text) if patterns else text

    def say(self, keys):
        self.child.send(keys)
        return self.wait()

    @property
    def clock(self):
        return int(re.match(r"lab ([\d,]+)", self.child.after).group(1).replace(",", ""))

    def quit(self):
        self.child.send("quit\r")
        self.child.expect(self.pexpect.EOF)
        self.child.wait()
        return self.child.exitstatus


def test_the_learners_path_at_a_terminal(tmp_path):
    t = Terminal(tmp_path)
    assert "booted workload default" in t.banner
    assert "ran 1,000,000 instructions" in t.say("run 1e6\r")
    assert "capable -> kgr_new_capable" in t.say("patch patches/kgr_capable.o\r")
    t.say("run 500000\r")
    assert re.search(r"3\s+pipe-reader\s+user\s+is sleeping on function pipe_wait_readable", t.say("pending\r"))
    assert "fake signal queued for pipe-reader (3)" in t.say("signal\r")
    assert "stopped: pipe-reader moved to the new universe (1)" in t.say("run until migrated pipe-reader\r")
    now = t.clock
    assert re.search(r"3\s+pipe-reader\s+user\s+\w+\s+old \(0\)", t.say("goto -25000\r"))
    assert re.search(r"3\s+pipe-reader\s+user\s+\w+\s+new \(1\)", t.say("goto now\r"))
    assert "patch 'sample_kgraft_patch' starts its unpatching transition" in t.say("revert sample_kgraft_patch\r")
    assert t.clock == now
    assert t.quit() == 0


def test_tab_completes_and_the_history_is_recalled_in_a_later_session(tmp_path):
    t = Terminal(tmp_path)
    assert "no transition is in progress" in t.say("pen\t\r")
    assert "SIGUSR1 (10) queued for pipe-reader (3)" in t.say("kill pipe\tSIGUSR1\r")
    assert "SIGUSR1 (10) queued for pipe-reader (3)" in t.say("\x1b[A\r")      # up arrow: the line again
    assert t.quit() == 0
    later = Terminal(tmp_path)
    assert "SIGUSR1 (10) queued for pipe-reader (3)" in later.say("\x1b[A\x1b[A\r")     # before `quit`
    assert later.quit() == 0


def test_an_error_at_the_terminal_is_one_line_and_the_session_goes_on_unchanged(tmp_path):
    t = Terminal(tmp_path)
    t.say("run 1000\r")
    before = t.clock
    out = t.say("kill kfreezerd 9\r")
    assert [line for line in out.splitlines() if line.strip()][1:] == \
        ["error: kill: task 4 (kfreezerd) is a kernel thread; kernel threads ignore signals"]
    assert t.clock == before
    t.say("run 1000\r")
    assert t.clock == before + 1000
    assert t.quit() == 0


def test_ctrl_c_interrupts_a_long_run_shown_with_its_progress_and_the_session_goes_on(tmp_path):
    t = Terminal(tmp_path)
    t.child.send("run 1e9\r")
    i, _ = t.wait("Ctrl-C stops")
    assert i == 0, "no progress was drawn"
    t.child.sendintr()
    out = t.wait()
    assert "interrupted after" in out and "the kernel is consistent" in out
    stopped = t.clock
    assert stopped < 1_000_000_000
    t.say("run 1000\r")
    assert t.clock == stopped + 1000
    assert t.quit() == 0


def test_view_opens_the_stepper_and_q_comes_back_to_the_session(tmp_path):
    t = Terminal(tmp_path)
    t.say("run 100000\r")
    t.child.send("view\r")
    i, _ = t.wait("q quit")
    assert i == 0, "the stepper did not open"
    t.child.send("q")
    assert f"back in the session at {BOOTED_AT + 100_000:,}" in t.wait()
    assert t.quit() == 0
