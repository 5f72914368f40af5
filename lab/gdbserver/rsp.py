"""rsp - the framing of gdb's remote serial protocol on a socket: $payload#checksum, acks, Ctrl-C.

Packets are handled as latin-1 strings, so every byte value survives; only
binary replies (qXfer) escape the protocol's four special bytes.
"""
from __future__ import annotations

import select

INTERRUPT = 0x03          # what gdb sends for Ctrl-C while the target runs
_SPECIAL = b"#$}*"


def checksum(data):
    return sum(data) & 0xFF


def frame(payload):
    """The bytes that carry payload (a str or bytes)."""
    data = payload.encode("latin-1") if isinstance(payload, str) else bytes(payload)
    return b"$" + data + b"#" + b"%02x" % checksum(data)


def escape_binary(data):
    """data with '#', '$', '}' and '*' sent as '}' then the byte xor 0x20."""
    out = bytearray()
    for b in data:
        if b in _SPECIAL:
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


class Connection:
    """One gdb on one socket.  Until gdb and the server agree on
    QStartNoAckMode every packet is acknowledged with '+' (or '-', asking for
    it again, when its checksum is wrong)."""

    def __init__(self, sock):
        self.sock = sock
        self.ack = True
        self.interrupted = False
        self._buf = bytearray()
        self._last = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("gdb closed the connection")
        self._buf += data

    def receive(self):
        """The next packet's payload; EOFError once gdb has gone."""
        while True:
            packet = self._take()
            if packet is not None:
                return packet
            self._fill()

    def _take(self):
        buf = self._buf
        while buf:
            head = buf[0]
            if head == ord("$"):
                end = buf.find(b"#")
                if end < 0 or len(buf) < end + 3:
                    return None
                data, sent = bytes(buf[1:end]), bytes(buf[end + 1:end + 3])
                del buf[:end + 3]
                try:
                    good = int(sent, 16) == checksum(data)
                except ValueError:
                    good = False
                if self.ack:
                    self.sock.sendall(b"+" if good else b"-")
                if good:
                    return data.decode("latin-1")
                continue
            del buf[0]
            if head == ord("-") and self.ack and self._last:
                self.sock.sendall(self._last)
            elif head == INTERRUPT:
                self.interrupted = True
            # '+' and any stray byte between packets need nothing
        return None

    def send(self, payload):
        self._last = frame(payload)
        self.sock.sendall(self._last)

    def poll_interrupt(self):
        """Whether gdb has sent Ctrl-C, looking at the socket without waiting.
        Packets that come meanwhile stay queued for receive()."""
        while True:
            # a 0x03 inside a packet is data; one before the next '$' is Ctrl-C
            i, dollar = self._buf.find(INTERRUPT), self._buf.find(b"$")
            if i >= 0 and (dollar < 0 or i < dollar):
                del self._buf[i]
                self.interrupted = True
            if self.interrupted or not select.select([self.sock], [], [], 0)[0]:
                break
            self._fill()
        hit, self.interrupted = self.interrupted, False
        return hit
