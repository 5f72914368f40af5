"""session - one gdb connected to a recorded trace: each remote-protocol packet answered from the replay.

gdb's remote protocol as a replay server speaks it (rr's gdbserver is the
model): the usual stub packets, plus `bs`/`bc` for reverse-stepi and
reverse-continue, and the `replaylog:begin`/`replaylog:end` stop reasons at
the ends of the recording.  The recording cannot be changed: writes to
memory or registers are refused with an error that says so.
"""
from __future__ import annotations

from ..errors import LabError
from .rsp import Connection, escape_binary
from .target import REGISTERS, Stop

PACKET_SIZE = 0x4000
READ_ONLY = "E.the trace is a recording; its memory and registers cannot be changed"
SIGTRAP, SIGINT = 5, 2

_EFLAGS = ((0, "CF"), (1, ""), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"), (9, "IF"), (10, "DF"),
           (11, "OF"), (14, "NT"), (16, "RF"), (17, "VM"), (18, "AC"), (19, "VIF"), (20, "VIP"), (21, "ID"))


def target_xml():
    """The register layout for gdb (qXfer:features:read:target.xml): the
    amd64 core feature, in gdb's register order."""
    flags = "".join(f'<field name="{n}" start="{b}" end="{b}"/>' for b, n in _EFLAGS)
    regs = "".join(f'<reg name="{name}" bitsize="{bits}" type="{kind}"'
                   + (' group="float"' if kind == "int" else "") + "/>"     # the x87 control registers
                   for name, bits, kind in REGISTERS)
    return ('<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd">'
            '<target version="1.0"><architecture>i386:x86-64</architecture>'
            f'<feature name="org.gnu.gdb.i386.core"><flags id="i386_eflags" size="4">{flags}</flags>'
            f'{regs}</feature></target>')


def _hex_value(value, bits):
    if value is None:
        return "xx" * (bits // 8)
    return (value & ((1 << bits) - 1)).to_bytes(bits // 8, "little").hex()


def _hex_text(text):
    return text.encode().hex()


def _error(text):
    """An `E.text` reply: one line, none of the bytes that frame a packet."""
    line = " ".join(text.split())
    return "E." + "".join(c if c not in "#$}*" and ord(c) < 128 else "?" for c in line)


class Session:
    """Answers one gdb's packets from a TraceTarget until gdb detaches, kills or goes."""

    def __init__(self, sock, target):
        self.conn = Connection(sock)
        self.target = target
        self.g_thread = None          # Hg: whose registers g and p read (None: the CPU's)
        self.c_thread = None          # Hc: whom `s` steps (None: the CPU's)
        self._thread_list = []        # qfThreadInfo's answer, handed out by qsThreadInfo
        self._xml = target_xml().encode()
        self._software, self._hardware = set(), set()     # Z0 and Z1 addresses: alike but for the stop reason
        self.done = False

    def serve(self):
        """Answer packets until the session ends (detach, kill, or gdb gone)."""
        try:
            while not self.done:
                packet = self.conn.receive()
                reply = self.handle(packet)
                if reply is not None:
                    self.conn.send(reply)
                if packet == "QStartNoAckMode":
                    self.conn.ack = False
        except (EOFError, ConnectionError):
            pass

    def handle(self, packet):
        """The reply to one packet (None: none is sent)."""
        try:
            return self._dispatch(packet)
        except LabError as exc:
            return _error(str(exc))
        except (ValueError, IndexError, KeyError):
            return _error("a packet this server cannot parse")

    def _dispatch(self, p):
        if not p:
            return ""
        head = p[0]
        if p.startswith("qSupported"):
            return (f"PacketSize={PACKET_SIZE:x};qXfer:features:read+;ReverseStep+;ReverseContinue+;"
                    "swbreak+;hwbreak+;QStartNoAckMode+")
        if p == "QStartNoAckMode":
            return "OK"
        if p == "vMustReplyEmpty":
            return ""
        if p.startswith("qXfer:features:read:"):
            return self._xfer_features(p[len("qXfer:features:read:"):])
        if p == "?":
            return self._stop_reply(Stop.STEP)
        if p == "qAttached":
            return "1"
        if p == "qC":
            return f"QC{self.target.cpu_tid() + 1:x}"
        if p == "qfThreadInfo":
            self._thread_list = [t.gdb_id for t in self.target.threads()]
            return self._thread_info()
        if p == "qsThreadInfo":
            return self._thread_info()
        if p.startswith("qThreadExtraInfo,"):
            tid = self._tid(p.split(",", 1)[1])
            return _hex_text(self.target.thread(tid).extra_info)
        if p.startswith("qRcmd,"):
            return self._monitor(bytes.fromhex(p[6:]).decode(errors="replace"))
        if head == "H":
            return self._set_thread(p[1], p[2:])
        if head == "T":
            self.target.thread(self._tid(p[1:]))
            return "OK"
        if p == "g":
            regs = self.target.registers(self._g_tid())
            return "".join(_hex_value(regs[name], bits) for name, bits, _ in REGISTERS)
        if head == "p":
            n = int(p[1:], 16)
            if n >= len(REGISTERS):
                return "E00"
            name, bits, _ = REGISTERS[n]
            return _hex_value(self.target.registers(self._g_tid())[name], bits)
        if head in "GPMX":
            return READ_ONLY
        if head == "m":
            return self._read_memory(p[1:])
        if head in "Zz" and len(p) > 1:
            return self._breakpoint(p)
        if p == "vCont?":
            return "vCont;c;C;s;S"
        if p.startswith("vCont;"):
            return self._vcont(p[6:])
        if head in "cs" and len(p) == 1 or head in "CS":
            return self._resume("c" if head in "cC" else "s")
        if head in "cs":
            return "E.the recording resumes where it stands; an address cannot be given"
        if p in ("bc", "bs"):
            return self._resume(p)
        if p == "D" or p.startswith("D;"):
            self.done = True
            return "OK"
        if p == "k" or p.startswith("vKill"):
            self.done = True
            return "OK" if p.startswith("vKill") else None
        return ""

    # ---- threads ----
    def _tid(self, text):
        value = int(text, 16) if text not in ("-1",) else -1
        if value in (0, -1):
            return self.target.cpu_tid()
        return value - 1

    def _g_tid(self):
        return self.target.cpu_tid() if self.g_thread is None else self.g_thread

    def _c_tid(self):
        return self.target.cpu_tid() if self.c_thread is None else self.c_thread

    def _set_thread(self, op, text):
        tid = self._tid(text)
        self.target.thread(tid)
        tid = None if text in ("0", "-1") else tid
        if op == "g":
            self.g_thread = tid
        elif op == "c":
            self.c_thread = tid       # whom `s` steps; `c` and the reverse packets move all of time
        return "OK"

    def _thread_info(self):
        if not self._thread_list:
            return "l"
        ids, self._thread_list = self._thread_list, []
        return "m" + ",".join(f"{i:x}" for i in ids)

    # ---- memory, breakpoints, the register layout ----
    def _read_memory(self, args):
        address, length = (int(x, 16) for x in args.split(","))
        data = self.target.read_memory(address, min(length, PACKET_SIZE // 2 - 16))
        if not data and length:
            return "E14"
        return data.hex()

    def _breakpoint(self, p):
        """Z0/Z1 breakpoints and Z2 write watchpoints, kept by the target.
        Read and access watchpoints (Z3, Z4) cannot be had from a replay that
        sees values, not accesses: the empty reply says so."""
        kind, address, size = p[1:].split(",")[:3]
        address = int(address, 16)
        if kind in ("0", "1"):
            points = self._hardware if kind == "1" else self._software
            points.add(address) if p[0] == "Z" else points.discard(address)
            self.target.breakpoints = self._software | self._hardware
            return "OK"
        if kind == "2":
            watches = self.target.watchpoints
            if p[0] == "Z":
                watches[address] = int(size.split(";")[0], 16)
            else:
                watches.pop(address, None)
            return "OK"
        return ""

    def _xfer_features(self, rest):
        annex, window = rest.rsplit(":", 1)
        if annex != "target.xml":
            return "E00"
        offset, length = (int(x, 16) for x in window.split(","))
        chunk = self._xml[offset:offset + length]
        more = offset + length < len(self._xml)
        return ("m" if more else "l").encode() + escape_binary(chunk)

    # ---- moving in time ----
    def _vcont(self, actions):
        """The first action rules: `s:TID` steps that task (the others run
        on, as `;c` after it asks), `c` continues; time has one thread."""
        action, _, thread = actions.split(";")[0].partition(":")
        if action[:1] not in ("c", "s", "C", "S"):
            return ""
        if action[0] in "cC":
            return self._resume("c")
        return self._resume("s", self._tid(thread) if thread else None)

    def _resume(self, how, tid=None):
        t = self.target
        self.conn.interrupted = False
        poll = self.conn.poll_interrupt
        if how == "s":
            stop = t.step_thread(tid if tid is not None else self._c_tid(), poll)
        elif how == "bs":
            stop = t.step_thread_backward(self._c_tid())
        else:
            stop = t.continue_forward(poll) if how == "c" else t.continue_backward(poll)
        self.g_thread = self.c_thread = None
        return self._stop_reply(stop)

    def _stop_reply(self, stop):
        tid = self.target.cpu_tid() + 1
        signal = SIGINT if stop is Stop.INTERRUPT else SIGTRAP
        reason = {Stop.BREAKPOINT: "swbreak:;", Stop.END: "replaylog:end;",
                  Stop.BEGIN: "replaylog:begin;"}.get(stop, "")
        if stop is Stop.BREAKPOINT and self.target.rip() not in self._software:
            reason = "hwbreak:;"
        if stop is Stop.WATCH:
            reason = f"watch:{self.target.watch_hit:x};"
        return f"T{signal:02x}{reason}thread:{tid:x};"

    def _monitor(self, command):
        """`monitor when`: the step gdb is at, as rr's `monitor when` tells its event."""
        t = self.target
        words = command.split()
        if words == ["when"]:
            text = f"step {t.step} of {t.trace.start}..{t.trace.end}\n"
        else:
            text = "monitor commands: when (the step of the recording gdb is at)\n"
        self.conn.send("O" + _hex_text(text))
        return "OK"


