"""ftrace - the fentry pads under the lab's control: NOP <-> CALL/JMP rewriting, function tracers, trampolines.

A pad is one 5-byte instruction.  The lab rewrites it between two slices, when
no instruction is half executed, so a task stopped anywhere (even on the pad
itself) sees either the whole old or the whole new instruction.  Linux needs
the int3 dance of text_poke_bp() for the same guarantee on SMP; one CPU that
only runs between the lab's writes needs no more than the cache flush.
"""
from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from keystone import KS_ARCH_X86, KS_MODE_64, Ks, KsError

from .disasm import disassemble
from .errors import LabError
from .area import Area, AreaFull
from .image import PAD_BYTES, PAD_SIZE

TRAMPOLINE_AREA = (0x7F0000, 0x800000)
_ks = Ks(KS_ARCH_X86, KS_MODE_64)


class FtraceError(LabError):
    """A function cannot be traced or patched (no pad, unknown name)."""


class PadState(enum.Enum):
    NOP = "nop"
    CALL = "call"
    JMP = "jmp"


@dataclass(frozen=True)
class FunctionCall:
    """One entry into a traced function, as a function tracer sees it."""

    function: str
    address: int
    at: int
    tid: int
    in_irq: bool
    return_address: int


@functools.lru_cache(maxsize=4096)
def assemble(source, address):
    """Assemble source placed at address with keystone; bytes.  Cached: the
    same text at the same address assembles alike, and an explorer places
    the same trampolines at the same addresses in every schedule."""
    try:
        encoding, _ = _ks.asm(source, address)
    except KsError as exc:
        raise FtraceError(f"keystone cannot assemble {source!r} at {address:#x}: {exc}") from None
    return bytes(encoding or b"")


def branch(kind, pad, target):
    """The 5-byte CALL or JMP rel32 from pad to target, assembled and checked."""
    code = assemble(f"{kind} {target:#x}", pad)
    if len(code) != PAD_SIZE:  # keystone picked a short form: spell out rel32
        code = bytes([0xE8 if kind == "call" else 0xE9]) + (target - pad - 5).to_bytes(4, "little", signed=True)
    return code


class Ftrace:
    """The pads of the kernel and of loaded modules, and the tracers on them."""

    def __init__(self, kernel, modules):
        self.kernel = kernel
        self.machine = kernel.machine
        self.image = kernel.image
        self.modules = modules
        self._state = {}       # pad address -> (PadState, target)
        self._tracers = {}     # pad address -> list of callbacks
        self._hooks = {}       # pad address -> machine hook handle
        self._tramp_area = Area(*TRAMPOLINE_AREA)
        # the CPU only executes trampolines; the lab writes them (text_poke())
        self.machine.read_only(TRAMPOLINE_AREA[0], TRAMPOLINE_AREA[1] - TRAMPOLINE_AREA[0])
        self._tramps = {}      # address -> (size, targets it jumps to) of every live trampoline
        self.retired = {}      # address -> size: no pad calls it any more, a task may still be inside
        self._owners = {}      # address -> the function whose pad calls it, for names

    # ---- pads ----
    def resolve(self, function):
        """(name, address) of a traceable function of the kernel or a module."""
        pad = self.image.pad(function)
        if pad is not None:
            return function, pad.address
        for m in self.modules.modules:
            for addr, name in m.pads:
                if name == function and m.loaded:
                    return name, addr
        sym = self.image.lookup(function)
        if sym is not None and sym.kind == "func":
            raise FtraceError(f"{function} has no fentry pad (it is notrace); it cannot be traced or patched")
        raise FtraceError(f"no function {function!r} in the kernel or a loaded module; `lab pads` lists the traceable ones")

    def state(self, address):
        return self._state.get(address, (PadState.NOP, None))

    def pad_states(self):
        """{pad address: (PadState, target)} of every pad that is not a NOP."""
        return dict(self._state)

    def read_pad(self, address):
        return self.machine.read(address, PAD_SIZE)

    def _write(self, address, code):
        if len(code) != PAD_SIZE:
            raise FtraceError(f"a pad replacement must be {PAD_SIZE} bytes, not {len(code)}")
        self.machine.write_code(address, code)

    def set_call(self, address, target):
        self._write(address, branch("call", address, target))
        self._state[address] = (PadState.CALL, target)

    def set_jmp(self, address, target):
        self._write(address, branch("jmp", address, target))
        self._state[address] = (PadState.JMP, target)

    def set_nop(self, address):
        self._write(address, PAD_BYTES)
        self._state.pop(address, None)

    def disassemble_pad(self, address):
        return disassemble(self.read_pad(address), address, 1, symbolize=self.symbolize)[0]

    def symbolize(self, address):
        m = self.modules.module_at(address)
        if m is not None:
            f = m.function_at(address)
            if f is not None:
                off = address - f.address
                return f"{f.name}+{off:#x} [{m.name}]" if off else f"{f.name} [{m.name}]"
            return f"{address:#x} [{m.name}]"
        if TRAMPOLINE_AREA[0] <= address < TRAMPOLINE_AREA[1]:
            base = next((a for a in self._tramps if a <= address < a + self._TRAMP_SLOT), None)
            if base is None:
                return f"{address:#x} [trampoline]"
            off = address - base
            return f"trampoline of {self._owners.get(base, '?')}" + (f"+{off:#x}" if off else "")
        return self.image.symbolize(address)

    # ---- trampolines ----
    _TRAMP_SLOT = 128      # every trampoline fits; a fixed slot keeps the area unfragmented

    def alloc_trampoline(self, build, targets=(), owner=None):
        """Place code made by build(address) -> bytes in the trampoline area.
        A trampoline is never rewritten: a task preempted inside one finishes
        it as it was.  It is freed (free_trampoline) once no pad calls it and
        no task can still be inside it."""
        try:
            address = self._tramp_area.find(self._TRAMP_SLOT)
        except AreaFull:
            raise FtraceError(f"the trampoline area is full ({len(self._tramps)} live, {len(self.retired)} "
                              "waiting for tasks to leave them); let the running transitions finish") from None
        code = build(address)
        if len(code) > self._TRAMP_SLOT:
            raise FtraceError(f"a trampoline of {len(code)} bytes does not fit its {self._TRAMP_SLOT}-byte slot")
        self.machine.write_code(address, code)
        self._tramp_area.take(address, self._TRAMP_SLOT)
        self._tramps[address] = (self._TRAMP_SLOT, tuple(t for t in targets if t is not None))
        self._owners[address] = owner or "?"
        return address

    def is_trampoline(self, address):
        return TRAMPOLINE_AREA[0] <= address < TRAMPOLINE_AREA[1]

    def trampolines(self):
        """{address: (size, targets)} of the trampolines not yet freed."""
        return dict(self._tramps)

    def retire_trampolines(self):
        """Every trampoline no pad calls any more waits to be freed."""
        called = {t for s, t in self._state.values() if s == PadState.CALL}
        for address, (size, _targets) in self._tramps.items():
            if address not in called:
                self.retired[address] = size

    def free_trampoline(self, address):
        """Give a retired trampoline's slot back (the caller checked that no
        task is inside it)."""
        size = self.retired.pop(address)
        del self._tramps[address]
        self._owners.pop(address, None)
        self.machine.write_code(address, bytes(size))
        self._tramp_area.free(address, size)

    # ---- function tracers (ftrace_ops) ----
    def register_tracer(self, function, callback):
        """Call callback(FunctionCall) on every entry into function.  Returns a
        handle for unregister_tracer().  Works whatever the pad holds."""
        name, address = self.resolve(function)
        callbacks = self._tracers.setdefault(address, [])
        if address not in self._hooks:
            self._hooks[address] = self.machine.add_code_hook(address, self._dispatch)
        entry = (name, callback)
        callbacks.append(entry)
        return (address, entry)

    def unregister_tracer(self, handle):
        address, entry = handle
        callbacks = self._tracers.get(address, [])
        if entry in callbacks:
            callbacks.remove(entry)
        if not callbacks and address in self._hooks:
            self.machine.remove_code_hook(self._hooks.pop(address))
            self._tracers.pop(address, None)

    def _dispatch(self, address):
        m, k = self.machine, self.kernel
        call = None
        for name, callback in list(self._tracers.get(address, ())):
            if call is None:
                rsp = m.reg("rsp")
                call = FunctionCall(name, address, m.clock, k.current, k.in_interrupt, m.u64(rsp))
            callback(call)
