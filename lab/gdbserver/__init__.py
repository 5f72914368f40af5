"""gdbserver - `lab trace gdb FILE`: a recorded run served to gdb over its remote protocol, backwards too.

    lab trace gdb run.trace --port 0
    gdb firmware/kernel.elf -ex 'target remote :PORT'

gdb then shows the recorded kernel with its sources, as rr's replay server
shows a recorded process: the tasks are threads (the protocol's thread id is
the tid plus one; `info threads` names each task, its universe and state),
`stepi` and `continue` run the recording forward one retired instruction, or
to a breakpoint or a `watch`ed change, and `reverse-stepi` and
`reverse-continue` run it back.  Stepping stays in the selected task: over
the instruction that switches it out, `stepi` stops where it comes back, and
`reverse-stepi` from there returns to it.  A step is the lab's clock: the
trace's step N is the machine about to run instruction N; `monitor when`
tells it.  The
server only reads the recording: a write is refused.  The image's line table
names its sources relative to firmware/ (`./kgraft.c`), so gdb shows source
lines when run there or given `-ex 'directory firmware'`.

Parts: rsp (the protocol's framing), target (the trace as a debug target:
threads, registers, memory, breakpoints, moving in time), session (the
packets, answered from the target).
"""
from __future__ import annotations

import os

import argparse
import errno
import socket
import sys

from ..errors import LabError
from .session import Session
from .target import Stop, TraceTarget

HOST = "127.0.0.1"
EXIT_OK, EXIT_USAGE = 0, 2


class GdbServerError(LabError):
    """The server cannot start: its port, or the trace it serves."""


def _port(text):
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"--port {text}: give a TCP port, 1 .. 65535, or 0 for a free one")
    return value


def add_parser(subparsers):
    """Add `gdb` to the `lab trace` subcommands (subparsers: its add_subparsers() object)."""
    p = subparsers.add_parser(
        "gdb", help="serve a trace to gdb (target remote :PORT): threads, source, breakpoints, reverse execution",
        description="Serves FILE over gdb's remote protocol on 127.0.0.1.  Connect with "
                    "`gdb firmware/kernel.elf -ex 'target remote :PORT'`: stepi, continue, reverse-stepi and "
                    "reverse-continue move through the recording one retired instruction, or to a breakpoint "
                    "or a watched change; tasks are threads; `monitor when` tells the step.  For source lines "
                    "add -ex 'directory firmware' (the image names its sources relative to firmware/).  "
                    "Read-only.  Serves one gdb, then exits.")
    p.add_argument("file", metavar="FILE", help="a trace recorded with `lab run --trace FILE`")
    p.add_argument("--port", type=_port, default=0, metavar="P",
                   help="TCP port on 127.0.0.1 (default 0: a free one, printed)")
    p.add_argument("--image", metavar="ELF", help="kernel image (default: firmware/kernel.elf)")
    return p


def listen(port, host=HOST):
    """A listening socket on host:port; GdbServerError naming the port if it cannot be had."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise GdbServerError(f"port {port} on {host} is in use; choose another with --port, "
                                 "or --port 0 for a free one") from None
        if exc.errno == errno.EACCES:
            raise GdbServerError(f"port {port} on {host} needs privileges; choose one above 1023, "
                                 "or --port 0 for a free one") from None
        raise GdbServerError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                             "choose another with --port") from None
    return sock


def open_trace(path, image=None):
    """Load and verify a trace against its replay (the whole of it, once,
    so a damaged trace is refused before gdb connects)."""
    from ..image import Image
    from ..trace import Trace
    trace = Trace.load(path, image=Image.load(image) if image is not None else None)
    try:
        trace.verify()
    except BaseException:
        trace.close()
        raise
    return trace


class GdbServer:
    """A trace served on a listening socket, to one gdb at a time."""

    def __init__(self, trace, port=0, host=HOST, elf="firmware/kernel.elf"):
        self.trace = trace
        self.elf = elf                 # as the connect line names it
        self.sock = listen(port, host)
        self.host, self.port = self.sock.getsockname()[:2]

    @property
    def connect_line(self):
        # the image names its sources relative to its own directory
        # (-fdebug-prefix-map), so gdb is told where they are
        where = os.path.dirname(self.elf) or "."
        return (f"listening on {self.host}:{self.port}; connect with: "
                f"gdb {self.elf} -ex 'directory {where}' -ex 'target remote :{self.port}'")

    def serve_one(self):
        """Accept one gdb and answer it until it detaches, kills or goes."""
        conn, _ = self.sock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = TraceTarget(self.trace)
        try:
            with conn:
                Session(conn, target).serve()
        finally:
            target.close()

    def close(self):
        self.sock.close()
        self.trace.close()


def main(args):
    """`lab trace gdb FILE [--port P] [--image ELF]`: 0 when gdb is done,
    2 with one line on stderr when the trace or the port cannot be used."""
    try:
        trace = open_trace(args.file, args.image)
        try:
            server = GdbServer(trace, args.port, elf=args.image or "firmware/kernel.elf")
        except BaseException:
            trace.close()
            raise
    except LabError as exc:
        print(f"lab: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    try:
        print(server.connect_line, flush=True)
        server.serve_one()
    except KeyboardInterrupt:
        return 130
    finally:
        server.close()
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """One line on a usage error, as the lab command prints it."""

    def error(self, message):
        if message.startswith("argument --port: "):
            message = message[len("argument --port: "):]      # _port's message names the option
        print(f"lab: error: {message}; `{self.prog} --help` lists what it takes", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def run(argv=None):
    """`python -m lab.gdbserver FILE [--port P] [--image ELF]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog="python -m lab.gdbserver")
    sub = parser.add_subparsers(dest="trace_command", parser_class=_Parser)
    add_parser(sub).prog = "python -m lab.gdbserver"
    try:
        args = parser.parse_args(["gdb"] + argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return main(args)


__all__ = ["GdbServer", "GdbServerError", "Session", "Stop", "TraceTarget", "add_parser", "main", "listen",
           "open_trace"]
