"""lab trace gdb: the real gdb driven in batch mode against a recorded trace, and the protocol underneath."""
from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import threading

import pytest

import lab
from lab import gdbserver
from lab.disasm import disassemble
from lab.gdbserver.rsp import frame
from lab.gdbserver.session import Session
from lab.gdbserver.target import Stop, TraceTarget
from lab.image import DEFAULT_IMAGE, FIRMWARE_DIR

CAPABLE = FIRMWARE_DIR.parent / "patches" / "kgr_capable.o"
PATCH_AT = 100_000
AFTER = 150_000           # the first user task passes its safe point about 20,000 instructions after the load
GDB = shutil.which("gdb")


def _gdb_has_python():
    """Whether gdb runs Python (the tests select threads with it)."""
    try:
        return subprocess.run([GDB, "-nx", "-batch", "-ex", "python print(6 * 7)"], capture_output=True,
                              text=True, timeout=60).stdout.strip() == "42"
    except (OSError, subprocess.SubprocessError):
        return False


needs_gdb = pytest.mark.skipif(GDB is None or not _gdb_has_python(), reason="needs gdb with Python")


# ---- a short recording with a live patch in it ----

@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    """A copy of the kernel image: the recording, the server and gdb all
    read this one, whatever happens to firmware/kernel.elf meanwhile."""
    path = tmp_path_factory.mktemp("image") / "kernel.elf"
    shutil.copyfile(DEFAULT_IMAGE, path)
    return path


@pytest.fixture(scope="module")
def image(elf):
    return lab.Image.load(elf)


@pytest.fixture(scope="module")
def recording(tmp_path_factory, image):
    """A trace of boot, the capable() patch loaded at PATCH_AT and AFTER
    instructions of its transition: user tasks switch universe at their
    system call exit (kgr_user_safe)."""
    path = tmp_path_factory.mktemp("gdb") / "patched.trace"
    system = lab.boot(image, record=True)
    system.run(PATCH_AT - system.clock)
    system.apply_patch(CAPABLE)
    system.run(AFTER)
    assert any(e.kind == "migrated" and e.by == "syscall-exit" for e in system.events)
    system.save_trace(path)
    return path


@pytest.fixture
def trace(recording, elf):
    t = gdbserver.open_trace(recording, elf)
    yield t
    t.close()


@pytest.fixture
def server(trace):
    """The trace served on a free port to one gdb, in a thread."""
    srv = gdbserver.GdbServer(trace, port=0)
    failures = []

    def serve():
        try:
            srv.serve_one()
        except OSError:
            pass            # the listening socket closed before a gdb came
        except BaseException as exc:     # kept for the test, as a hook's exception is
            failures.append(exc)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv
    try:
        srv.sock.shutdown(socket.SHUT_RDWR)     # wakes an accept() still waiting, as close() alone may not
    except OSError:
        pass
    srv.sock.close()
    thread.join(30)
    assert not failures, failures


def gdb(srv, *commands):
    """gdb in batch mode connected to srv, running commands; its output.
    Each command is one -ex, so an error does not end the session; one
    of several lines (a `while` loop) is sourced from a file."""
    args = [GDB, "-nx", "-batch", str(srv.trace.image.path)]
    for i, command in enumerate(["set pagination off", "set confirm off", "set width 0",
                                 f"directory {FIRMWARE_DIR}", f"target remote :{srv.port}", *commands,
                                 "detach"]):
        if "\n" in command:
            script = srv.trace.path.parent / f"gdb-{srv.port}-{i}.gdb"
            script.write_text(command + "\n")
            command = f"source {script}"
        args += ["-ex", command]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


def tid_of(trace, name):
    """The tid of the task called name (its gdb thread is the tid plus one)."""
    return next(t["tid"] for t in trace.header["tasks"] if t["name"] == name)


def select(tid):
    """The gdb command that selects task tid's thread by its id in the
    protocol (tid + 1): gdb numbers threads in the order it meets them."""
    return f"python [t for t in gdb.selected_inferior().threads() if t.ptid[1] == {tid + 1}][0].switch()"


def steps(output):
    """The steps `monitor when` printed, in order."""
    return [int(n) for n in re.findall(r"^step (\d+) of", output, re.M)]


def universe_store(image):
    """(address, base register) of the instruction in kgr_user_safe that
    stores the task's new universe: a byte store at TASK_kgr_universe."""
    sym = image.function("kgr_user_safe")
    offset = image.const("TASK_kgr_universe")
    for insn in disassemble(image.read(sym.address, sym.size), sym.address):
        m = re.fullmatch(rf"byte ptr \[(\w+) \+ {offset:#x}\], \w+", insn.operands)
        if insn.mnemonic == "mov" and m:
            return insn.address, m.group(1)
    raise AssertionError("kgr_user_safe stores no universe")


# ---- gdb ----

@needs_gdb
def test_reverse_stepi_across_a_universe_switch_gives_the_old_universe_back(server, image):
    store, base = universe_store(image)
    offset = image.const("TASK_kgr_universe")
    out = gdb(server,
              "break kgr_user_safe", "continue",
              f"set $n = 0\nwhile $pc != {store:#x} && $n < 1000\n  stepi\n  set $n = $n + 1\nend",
              f"set $task = ${base}",
              "monitor when", f"x/bx $task + {offset}",
              "stepi",
              "monitor when", f"x/bx $task + {offset}",
              "reverse-stepi",
              "monitor when", f"x/bx $task + {offset}", "printf \"pc %#lx\\n\", $pc")
    values = [int(v, 16) for v in re.findall(r"^0x[0-9a-f]+(?: <[^>]*>)?:\s+(0x[0-9a-f]{2})$", out, re.M)]
    assert values == [0, 1, 0], out
    before, after, back = steps(out)
    assert (after, back) == (before + 1, before), out
    assert f"pc {store:#x}" in out


@needs_gdb
def test_info_threads_names_every_task_with_its_universe(server, trace):
    out = gdb(server, "break kgr_user_safe", "continue", "monitor when", "info threads")
    (step,) = steps(out)
    rp = trace.replayer()
    try:
        rp.seek(step)
        tasks = rp.tasks()
    finally:
        rp.close()
    shown = 0
    for t in tasks:
        if t["state"] in ("running", "sleeping"):
            mark = r"\*" if t["current"] else " "
            assert re.search(rf"^{mark} +\d+ +Thread {t['tid'] + 1} \({re.escape(t['name'])}, "
                             rf"tid {t['tid']}, \w+, {t['state']}, universe {t['universe']}\)", out, re.M), (t, out)
            shown += 1
    assert shown >= 7 and {"cap-user", "pipe-reader", "kfreezerd"} <= {t["name"] for t in tasks}


@needs_gdb
def test_registers_are_the_trace_state_at_the_step(server, trace):
    out = gdb(server, "break kgr_user_safe", "continue", "monitor when", "info registers rip rsp rbx",
              select(tid_of(trace, "kfreezerd")), "info registers rip rsp rbx")
    (step,) = steps(out)
    shown = [(int(a, 16), int(b, 16), int(c, 16)) for a, b, c in
             re.findall(r"^rip +(0x[0-9a-f]+).*\nrsp +(0x[0-9a-f]+).*\nrbx +(0x[0-9a-f]+)", out, re.M)]
    rp = trace.replayer()
    try:
        rp.seek(step)
        regs = rp.regs()
        assert shown[0] == (regs["rip"], regs["rsp"], regs["rbx"])
        assert regs["rip"] == trace.image.address("kgr_user_safe")
        # kfreezerd is switched out: where the kernel's own unwinder says it resumes
        task = rp.kernel.task(tid_of(trace, "kfreezerd"))
        frames, _ = task.unwind()
        assert shown[1][0] == frames[0]
    finally:
        rp.close()


@needs_gdb
def test_bt_names_the_source_functions_of_the_running_and_a_sleeping_task(server, trace):
    out = gdb(server, "break kgr_user_safe", "continue", "bt", select(tid_of(trace, "pipe-reader")), "echo ---\\n",
              "bt")
    first, second = out.split("\n---\n")
    names = re.findall(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\w+) \(", first, re.M)
    assert names[:3] == ["kgr_user_safe", "exit_to_user_mode_loop", "entry_SYSCALL_64"], first
    line = int(re.search(r"kgr_user_safe \(kind=.*\) at \./kgraft\.c:(\d+)", first).group(1))
    text = (FIRMWARE_DIR / "kgraft.c").read_text().splitlines()[line - 1]
    assert f"{line}\t{text}" in first                      # the source line itself, from firmware/
    # pipe-reader, asleep in its read()
    names = re.findall(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\w+) \(", second, re.M)
    assert names[0] == "schedule" and "pipe_wait_readable" in names, second


@needs_gdb
def test_stepi_in_a_switched_out_task_runs_until_that_task_has_run_one_instruction(server, trace):
    """gdb's `vCont;s:TID;c`: the task steps, the others run on.  kfreezerd
    sleeps; its saved frame says where it resumes."""
    tid = tid_of(trace, "kfreezerd")
    out = gdb(server, "break kgr_user_safe", "continue", "delete", "monitor when", select(tid),
              "info registers rip rsp", "stepi", "monitor when", "info registers rip rsp", "info threads")
    before, after = steps(out)
    (rip, rsp), (rip_after, _) = [(int(a, 16), int(b, 16)) for a, b in
                                  re.findall(r"^rip +(0x[0-9a-f]+).*\nrsp +(0x[0-9a-f]+)", out, re.M)]
    rp = trace.replayer()
    try:
        rp.seek(before + 1)
        while (rp.regs()["rip"], rp.regs()["rsp"]) != (rip, rsp):   # until kfreezerd is back on the CPU
            rp.seek(rp.clock + 1)
        resumed = rp.clock
        rp.seek(resumed + 1)
        assert after == resumed + 1 and rip_after == rp.regs()["rip"]
    finally:
        rp.close()
    assert re.search(rf"^\* +\d+ +Thread {tid + 1} \(kfreezerd, tid {tid},", out, re.M)


@needs_gdb
def test_stepi_over_a_switch_out_stays_with_the_task_both_ways(server, trace, image):
    """stepi over the instruction that takes a task off the CPU (the load
    of the next task's stack pointer in __switch_to_asm) ends where that
    task comes back, about to pop what it saved; reverse-stepi from there
    goes back to it.  The thread stays the same all along."""
    sym = image.function("__switch_to_asm")
    load = next(i for i in disassemble(image.read(sym.address, sym.size), sym.address)
                if i.text == f"mov rsp, qword ptr [rsi + {image.const('TASK_thread_sp'):#x}]")
    out = gdb(server, "break kgr_user_safe", "continue", "delete", f"break *{load.address:#x}", "continue",
              "delete", "monitor when", "thread", "stepi", "monitor when", "thread", "printf \"pc %#lx\\n\", $pc",
              "reverse-stepi", "monitor when", "thread", "printf \"pc %#lx\\n\", $pc")
    left, back, again = steps(out)
    threads = re.findall(r"^\[Current thread is \d+ \(Thread (\d+)\)\]", out, re.M)
    assert len(threads) == 3 and len(set(threads)) == 1
    assert re.findall(r"^pc (0x[0-9a-f]+)$", out, re.M) == [hex(load.address + load.size), hex(load.address)]
    tid = int(threads[0]) - 1
    rp = trace.replayer()
    try:
        rp.seek(left + 1)
        saved = rp.machine.u64(rp.kernel.task(tid)._field("thread_sp"))
        while (rp.regs()["rip"], rp.regs()["rsp"]) != (load.address + load.size, saved):
            rp.seek(rp.clock + 1)
        assert back == rp.clock > left + 1
    finally:
        rp.close()
    assert again == left


@needs_gdb
def test_continue_and_reverse_continue_stop_at_the_same_breakpoint_across_a_keyframe(server, trace):
    out = gdb(server, "break kgr_patch_kernel", "continue", "monitor when", "printf \"pc %#lx\\n\", $pc",
              "break kgr_user_safe", "continue", "monitor when",
              "reverse-continue", "monitor when", "printf \"pc %#lx\\n\", $pc")
    first, second, back = steps(out)
    # the way back crosses a keyframe (the one taken after the patch was loaded)
    assert any(first < f.at <= second for f in trace.keyframes)
    assert back == first < second
    pcs = re.findall(r"^pc (0x[0-9a-f]+)$", out, re.M)
    assert pcs == [hex(trace.image.address("kgr_patch_kernel"))] * 2
    # no step between them runs either function: replay it and look
    rp = trace.replayer()
    try:
        stops = {trace.image.address("kgr_patch_kernel"), trace.image.address("kgr_user_safe")}
        rp.seek(first + 1)
        seen = []
        while rp.clock < second:
            if rp.regs()["rip"] in stops:
                seen.append(rp.clock)
            rp.seek(rp.clock + 1)
        assert seen == []
    finally:
        rp.close()


@needs_gdb
def test_a_watchpoint_stops_where_gdbs_own_single_stepping_watchpoint_stops(server, image):
    """Z2 write watchpoints, both ways, against gdb's software watchpoints
    (which single-step and compare) as the oracle."""
    store, _ = universe_store(image)
    watch = "watch -l current_task->kgr_universe"
    out = gdb(server, "break kgr_user_safe", "continue", "delete",
              watch, "continue", "monitor when", "reverse-continue", "monitor when",
              "printf \"pc %#lx\\n\", $pc", "delete",
              "set can-use-hw-watchpoints 0", watch, "continue", "monitor when", "reverse-continue",
              "monitor when")
    assert out.count("Hardware watchpoint 2: -location") == 3 and "\nWatchpoint 3: -location" in out
    hw_forward, hw_back, sw_forward, sw_back = steps(out)
    assert (hw_forward, hw_back) == (sw_forward, sw_back) == (hw_back + 1, hw_back)
    assert f"pc {store:#x}" in out
    changes = re.findall(r"Old value = (\d+) .*\nNew value = (\d+)", out)
    assert changes == [("0", "1"), ("1", "0")] * 2


@needs_gdb
def test_unmapped_memory_reads_as_an_error_and_mapped_memory_reads(server, image):
    guard = image.address("task_stacks")        # slot 0's guard page
    out = gdb(server, "x/bx 0x10", f"x/bx {guard:#x}", "x/bx &kgr_target_universe")
    assert "Cannot access memory at address 0x10" in out
    assert f"Cannot access memory at address {guard:#x}" in out
    assert re.search(r"<kgr_target_universe>:\s+0x00", out)


@needs_gdb
def test_writes_are_refused_because_the_trace_is_a_recording(server):
    out = gdb(server, "break kgr_user_safe", "continue",
              "set var $rbx = 7", "set var kgr_target_universe = 7", "p kgr_target_universe", "p $rbx == 7")
    assert "remote failure reply 'E.the trace is a recording" in out
    assert "Cannot access memory at address" in out
    assert "$1 = 1 '\\001'" in out and "$2 = 0" in out


@needs_gdb
def test_the_ends_of_the_recording_stop_gdb_with_no_more_history(server, trace):
    out = gdb(server, "reverse-stepi", "monitor when", "continue", "monitor when", "stepi", "monitor when")
    assert out.count("No more reverse-execution history.") == 3
    assert steps(out) == [trace.start, trace.end, trace.end]


# ---- the protocol, without gdb ----

def _exchange(trace, *packets):
    """The replies of a session to packets sent before it reads any (so a
    Ctrl-C byte among them is there when the server looks), then a detach."""
    a, b = socket.socketpair()
    target = TraceTarget(trace)
    try:
        for p in (*packets, "D"):
            a.sendall(p if isinstance(p, bytes) else frame(p))
        Session(b, target).serve()
        b.close()
        data = b""
        a.settimeout(10)
        while chunk := a.recv(65536):
            data += chunk
    finally:
        a.close()
        b.close()
        target.close()
    return [m.decode("latin-1") for m in re.findall(rb"\$([^#]*)#[0-9a-f]{2}", data)]


def test_qsupported_offers_reverse_execution_and_unknown_packets_get_the_empty_reply(trace):
    replies = _exchange(trace, "qSupported:multiprocess+;swbreak+", "vMustReplyEmpty", "qNoSuchThing", "!")
    assert "ReverseStep+" in replies[0].split(";") and "ReverseContinue+" in replies[0].split(";")
    assert replies[1:4] == ["", "", ""]


def test_threads_and_registers_in_the_protocol(trace):
    """qfThreadInfo lists thread 1 (tid 0) at power-on; g is gdb's amd64
    layout (17 64-bit registers, eflags, six segments, eight 80-bit x87
    registers, eight x87 control registers), the unknown ones as x; Hg to a
    task that does not exist is an error."""
    replies = _exchange(trace, "qfThreadInfo", "qsThreadInfo", "qC", "T1", "T63", "Hg63", "g", "p10", "p11", "p0",
                        "m7ffffe,8", "m1000,4", "M100000,1:00", "P0=0000000000000000")
    assert replies[:5] == ["m1", "l", "QC1", "OK", replies[4]] and replies[4].startswith("E.no task 98")
    assert replies[5].startswith("E.")
    g = replies[6]
    assert len(g) == 2 * (17 * 8 + 4 + 6 * 4 + 8 * 10 + 8 * 4)
    rip = int.from_bytes(bytes.fromhex(g[16 * 16:17 * 16]), "little")
    assert rip == trace.keyframes[0].regs["rip"] and replies[7] == g[16 * 16:17 * 16]
    assert replies[8] == g[17 * 16:17 * 16 + 8] and g[17 * 16 + 8:17 * 16 + 16] == "xxxxxxxx"
    assert replies[9] == g[:16]
    assert replies[10] == bytes(trace.ram_at(trace.keyframes[0])[-2:]).hex()      # cut at the end of RAM
    assert replies[11] == "E14"
    assert replies[12] == replies[13] == "E.the trace is a recording; its memory and registers cannot be changed"


def test_ctrl_c_stops_a_continue_before_the_end(trace):
    replies = _exchange(trace, "vCont;c", b"\x03", "qRcmd," + b"when".hex())
    assert replies[0].startswith("T02thread:")
    step = int(bytes.fromhex(replies[1][1:]).decode().split()[1])
    assert trace.start < step < trace.end


def test_a_continue_with_no_breakpoint_runs_to_the_end(trace):
    replies = _exchange(trace, "vCont;c", "qRcmd," + b"when".hex())
    assert replies[0].startswith("T05replaylog:end;thread:")
    assert f"step {trace.end} of" in bytes.fromhex(replies[1][1:]).decode()


def test_breakpoints_are_never_written_into_guest_memory(trace):
    target = TraceTarget(trace)
    try:
        address = trace.image.address("kgr_user_safe")
        code = target.read_memory(address, 16)
        target.breakpoints.add(address)
        assert target.continue_forward() is Stop.BREAKPOINT
        assert target.rip() == address and target.read_memory(address, 16) == code
    finally:
        target.close()


def _rips(trace, lo, hi):
    """{step: RIP} for lo..hi, one seek a step: what the scans must agree with."""
    rp = trace.replayer()
    try:
        out = {}
        for step in range(lo, hi + 1):
            rp.seek(step)
            out[step] = rp.regs()["rip"]
        return out
    finally:
        rp.close()


@pytest.mark.parametrize("chunk", [200_000, 997])
def test_continue_both_ways_stops_where_stepping_would_across_a_keyframe(trace, monkeypatch, chunk):
    """Breakpoints at the RIPs of the steps on either side of a keyframe:
    forward and backward, every stop is a step whose RIP is one, and none is
    skipped (the code hooks see the steps a pass runs, the ends of a pass are
    looked at directly)."""
    monkeypatch.setattr("lab.gdbserver.target.SCAN_CHUNK", chunk)
    k = trace.keyframes[2]
    lo, hi = k.at - 600, k.at + 600
    rips = _rips(trace, lo, hi)
    points = {rips[k.at - 1], rips[k.at], rips[lo + 300]}
    expected = [s for s in range(lo + 1, hi + 1) if rips[s] in points]
    target = TraceTarget(trace)
    try:
        target.breakpoints |= points
        target.goto(lo)
        forward = []
        while target.continue_forward() is Stop.BREAKPOINT and target.step <= hi:
            forward.append(target.step)
        target.goto(hi + 1)
        backward = []
        while target.continue_backward() is Stop.BREAKPOINT and target.step > lo:
            backward.append(target.step)
    finally:
        target.close()
    assert k.at - 1 in expected and k.at in expected
    assert forward == expected
    assert backward == expected[::-1]


# ---- the command ----

def test_add_parser_gives_trace_a_gdb_subcommand():
    parser = argparse.ArgumentParser()
    trace = parser.add_subparsers(dest="command").add_parser("trace").add_subparsers(dest="trace_command")
    gdbserver.add_parser(trace)
    args = parser.parse_args(["trace", "gdb", "run.trace", "--port", "1234"])
    assert (args.trace_command, args.file, args.port, args.image) == ("gdb", "run.trace", 1234, None)


def test_a_missing_trace_is_one_line_and_status_2(tmp_path, capsys):
    assert gdbserver.run([str(tmp_path / "none.trace")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.trace: no such trace" in err and err.startswith("lab: error: ")


def test_a_damaged_trace_is_one_line_and_status_2(recording, elf, tmp_path, capsys):
    bad = tmp_path / "bad.trace"
    bad.write_bytes(recording.read_bytes()[:-100])
    assert gdbserver.run([str(bad), "--image", str(elf)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.trace" in err and "record it again" in err


def test_a_port_in_use_is_one_line_and_status_2(recording, elf, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert gdbserver.run([str(recording), "--port", str(port), "--image", str(elf)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"port {port} on 127.0.0.1 is in use" in err and "--port 0" in err


def test_a_bad_port_is_one_line_and_status_2(recording, capsys):
    assert gdbserver.run([str(recording), "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--port 70000" in err


@needs_gdb
def test_python_m_lab_gdbserver_serves_one_gdb_and_exits_0(recording, elf):
    server = subprocess.Popen([sys.executable, "-m", "lab.gdbserver", str(recording), "--port", "0",
                               "--image", str(elf)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=FIRMWARE_DIR.parent)
    try:
        line = server.stdout.readline()
        port = int(re.fullmatch(rf"listening on 127\.0\.0\.1:(\d+); connect with: "
                                rf"gdb {re.escape(str(elf))} -ex 'directory {re.escape(str(elf.parent))}' "
                                rf"-ex 'target remote :\1'\n", line).group(1))
        out = subprocess.run([GDB, "-nx", "-batch", "-ex", f"target remote :{port}", "-ex", "info threads",
                              "-ex", "detach", str(elf)], capture_output=True, text=True, timeout=60).stdout
        assert "swapper/0" in out
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_the_server_prints_where_to_connect(trace):
    srv = gdbserver.GdbServer(trace, port=0)
    try:
        assert srv.connect_line == (f"listening on 127.0.0.1:{srv.port}; connect with: "
                                    f"gdb firmware/kernel.elf -ex 'directory firmware' "
                                    f"-ex 'target remote :{srv.port}'")
    finally:
        srv.sock.close()
