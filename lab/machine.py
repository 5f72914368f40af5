"""machine - the emulated CPU and memory: Unicorn, the hypercall port, the virtual clock.

This is the only module that imports unicorn.  Memory is one RAM region that
the lab owns (mem_map_ptr), so reading guest memory is a slice of a memoryview,
not a call into the emulator.  The clock is the retired-instruction count.
"""
from __future__ import annotations

import bisect
import ctypes
import functools
import itertools
import mmap
import os
import struct
import weakref

from unicorn import (
    UC_ARCH_X86, UC_CTL_IO_WRITE, UC_CTL_TB_REMOVE_CACHE, UC_ERR_FETCH_PROT, UC_ERR_FETCH_UNMAPPED, UC_ERR_INSN_INVALID, UC_ERR_READ_PROT,
    UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_PROT, UC_ERR_WRITE_UNMAPPED, UC_HOOK_BLOCK, UC_HOOK_INTR, UC_HOOK_CODE, UC_HOOK_INSN, UC_HOOK_MEM_INVALID, UC_MEM_FETCH_UNMAPPED,
    UC_MEM_READ_UNMAPPED, UC_MEM_WRITE_UNMAPPED, UC_MODE_64, UC_PROT_ALL, UC_PROT_EXEC, UC_PROT_NONE, UC_PROT_READ, Uc, UcError,
)
from unicorn import x86_const as X

from . import _native
from .errors import GuestFault, MachineError, MachineFault

RAM_BASE = 0x100000  # the first MiB stays unmapped: a NULL dereference faults
RAM_END = 0x800000
PAGE = 4096
HYPERCALL_PORT = 0xE9
X86_EFLAGS_IF = 0x200
_NEVER = 2**64 - 1
# Code hook handles the lab gives out: unique in the process, never reused,
# so a snapshot's hooks are known by them after any number of restores
# (Unicorn's own handles change when a hook is added again).
_HOOK_IDS = itertools.count(1)
# Each engine reserves a translation buffer of 1 GiB of address space by
# default; the lab's kernel needs far less.  Set before the first mem_map or
# it is silently ignored (UNICORN.md).
TCG_BUFFER_SIZE = 16 << 20

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
_UC_REG = {name: getattr(X, "UC_X86_REG_" + ("EFLAGS" if name == "rflags" else name.upper())) for name in GPRS}
_UC_GPRS = [_UC_REG[n] for n in GPRS]

# x86 exception vectors, named as Linux's die() names them
_VECTORS = {0: "divide error", 1: "debug", 3: "int3", 4: "overflow", 5: "bounds", 6: "invalid opcode",
            8: "double fault", 13: "general protection fault", 14: "page fault", 17: "alignment check"}

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_FRAME = struct.Struct("<5Q")   # an interrupt frame: rip, cs, rflags, rsp, ss

# ---- register access for the hot paths ----
#
# The binding's reg_read_batch/reg_write_batch pick a value class for every
# register (_select_reg_class) and build three ctypes arrays on every call:
# most of a SYSCALL hook's time (issue 14).  The hot paths (SYSCALL, the
# hypercall port, tick delivery, the start of a slice) instead hand
# uc_reg_read_batch/uc_reg_write_batch arrays allocated once per register
# list.  `uclib` and `Uc._uch` are internal names of unicorn 2.1's Python
# binding (unicorn/unicorn_py3/unicorn.py), not its API: where they are
# missing, _RegisterIO falls back to the binding's public reg_read_batch /
# reg_write_batch, slower but the same registers
# (tests/test_machine_fastpath.py runs both paths).
try:
    from unicorn.unicorn_py3.unicorn import uclib as _uclib
    _UC_REG_READ_BATCH = _uclib.uc_reg_read_batch
    _UC_REG_WRITE_BATCH = _uclib.uc_reg_write_batch
except (ImportError, AttributeError):
    _UC_REG_READ_BATCH = _UC_REG_WRITE_BATCH = None
# uc_err uc_reg_{read,write}_batch(uc_engine *uc, int *regs, void **vals, int count)
_BATCH_PROTOTYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
# uc_err uc_ctl(uc_engine *uc, uc_control_type control, ...), for the
# translations a restore drops: through the binding's ctl_remove_cache()
# a call costs four times the engine's own work on a page without code
try:
    _UC_CTL = _uclib.uc_ctl
except (NameError, AttributeError):
    _UC_CTL = None
_REMOVE_CACHE = (UC_CTL_IO_WRITE << 30) | (2 << 26) | UC_CTL_TB_REMOVE_CACHE
# their addresses, taken once: ctypes.cast() of a long-lived object records
# every cast in that object's _objects, so one per machine would pile up
_BATCH_ADDRESS = {id(fn): ctypes.cast(fn, ctypes.c_void_p).value
                  for fn in (_UC_REG_READ_BATCH, _UC_REG_WRITE_BATCH) if fn is not None}


class _RegisterIO:
    """Fixed lists of 64-bit registers of one engine, each read or written in one call.

    reader(regs) and writer(regs) return functions made once per list (and
    cached): read() -> the values, write(*values).  native: the preallocated
    ctypes path (the default when the binding has the internal names)."""

    def __init__(self, uc, native=None):
        handle = getattr(uc, "_uch", None)
        if native is None:
            native = _UC_REG_READ_BATCH is not None and handle is not None
        self.native = native
        self._uc = uc
        self._handle = handle
        self._made = {}
        self._keep = []

    def reader(self, regs):
        """read() -> the values of regs, a fresh sequence each time."""
        regs = tuple(regs)
        fn = self._made.get(("r", regs))
        if fn is None:
            fn = self._made[("r", regs)] = self._native(regs, _UC_REG_READ_BATCH) if self.native \
                else self._binding_reader(regs)
        return fn

    def writer(self, regs):
        """write(*values) sets regs, in order, to values (modulo 2**64, as the binding does)."""
        regs = tuple(regs)
        fn = self._made.get(("w", regs))
        if fn is None:
            fn = self._made[("w", regs)] = self._native(regs, _UC_REG_WRITE_BATCH, write=True) if self.native \
                else self._binding_writer(regs)
        return fn

    def raw(self, regs, write=False):
        """(call, vals) for the hottest paths, which cannot spare even the
        frame of a reader or writer: call() reads regs into vals (or, with
        write, writes vals to regs) and returns the engine's status, 0 when
        it went well; vals is allocated once, indexable and assignable."""
        regs = tuple(regs)
        key = ("raw-w" if write else "raw-r", regs)
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = self._native_raw(regs, _UC_REG_WRITE_BATCH if write else _UC_REG_READ_BATCH) \
                if self.native else self._binding_raw(regs, write)
        return made

    def _native_raw(self, regs, batch):
        n = len(regs)
        ids = (ctypes.c_int * n)(*regs)
        vals = (ctypes.c_uint64 * n)()
        ptrs = (ctypes.c_void_p * n)(*(ctypes.addressof(vals) + 8 * i for i in range(n)))
        call = functools.partial(_BATCH_PROTOTYPE(_BATCH_ADDRESS[id(batch)]),
                                 ctypes.c_void_p(ctypes.cast(self._handle, ctypes.c_void_p).value),
                                 ctypes.c_void_p(ctypes.addressof(ids)), ctypes.c_void_p(ctypes.addressof(ptrs)),
                                 ctypes.c_int(n))
        self._keep.append((ids, ptrs))     # the arrays call() points into live as long as this object
        return call, vals

    def _binding_raw(self, regs, write):
        ids, vals = list(regs), [0] * len(regs)
        uc = self._uc
        if write:
            def call():
                uc.reg_write_batch(list(zip(ids, vals)))
                return 0
        else:
            def call():
                vals[:] = uc.reg_read_batch(ids)
                return 0
        return call, vals

    def _native(self, regs, batch, write=False):
        n = len(regs)
        ids = (ctypes.c_int * n)(*regs)
        vals = (ctypes.c_uint64 * n)()
        ptrs = (ctypes.c_void_p * n)(*(ctypes.addressof(vals) + 8 * i for i in range(n)))
        # The batch function called through a prototype of plain pointers,
        # with every argument converted once here: the binding's prototype
        # converts the arrays on every call, half the cost of the call.
        call = functools.partial(_BATCH_PROTOTYPE(_BATCH_ADDRESS[id(batch)]),
                                 ctypes.c_void_p(ctypes.cast(self._handle, ctypes.c_void_p).value),
                                 ctypes.c_void_p(ctypes.addressof(ids)), ctypes.c_void_p(ctypes.addressof(ptrs)),
                                 ctypes.c_int(n))
        # the arrays live as long as the function: they are its defaults
        if write:
            def write(*values, call=call, vals=vals, keep=(ids, ptrs)):
                vals[:] = values
                status = call()
                if status:
                    raise UcError(status)
            return write

        def read(call=call, vals=vals, keep=(ids, ptrs)):
            status = call()
            if status:
                raise UcError(status)
            return vals[:]      # a list: far cheaper to unpack than the ctypes array
        return read

    def _binding_reader(self, regs):
        ids = list(regs)
        reg_read_batch = self._uc.reg_read_batch
        return lambda: reg_read_batch(ids)

    def _binding_writer(self, regs):
        reg_write_batch = self._uc.reg_write_batch
        return lambda *values: reg_write_batch(list(zip(regs, values)))


_TOUCHED = bytes(1 if flags & 0xC0 else 0 for flags in range(256))   # pagemap bits 63 (present), 62 (swapped)


def libc_memcmp():
    """The C library's memcmp(a, b, n) for ctypes addresses, made once."""
    fn = getattr(libc_memcmp, "fn", None)
    if fn is None:
        fn = libc_memcmp.fn = ctypes.CDLL(None).memcmp
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        fn.restype = ctypes.c_int
    return fn


def _differing(memcmp, a, b, lo, hi):
    """(first, end) offsets of the bytes from the first that differs between
    the buffers at addresses a and b to the last, within [lo, hi), where
    they differ: by halving with memcmp (a dozen calls for a page)."""
    first, last = lo, hi - 1         # the first differing byte is >= first, the last <= last
    top = hi                         # [lo, top) differs
    while top - first > 1:
        mid = (first + top) // 2
        if memcmp(a + lo, b + lo, mid - lo):
            top = mid
        else:
            first = mid
    bottom = lo                      # [bottom, hi) differs
    while last - bottom > 0:
        mid = (bottom + last + 1) // 2
        if memcmp(a + mid, b + mid, hi - mid):
            bottom = mid
        else:
            last = mid - 1
    return first, bottom + 1


def _protection_changes(read_only, guards, to_read_only, to_guards):
    """[(start, end, protection)]: the calls that turn the CPU's access as
    read_only and guards give it (sorted, disjoint (start, end) ranges;
    every other page readable, writable and executable) into the access
    to_read_only and to_guards give, adjacent pages that end the same way
    in one call."""
    ro, none = UC_PROT_READ | UC_PROT_EXEC, UC_PROT_NONE
    now = {(lo, hi, ro) for lo, hi in read_only} | {(lo, hi, none) for lo, hi in guards}
    then = {(lo, hi, ro) for lo, hi in to_read_only} | {(lo, hi, none) for lo, hi in to_guards}
    if now == then:
        return []
    # only the ranges that are not in both matter: a page of one in both is
    # in no other range of either (the ranges of each are disjoint)
    now, then = sorted(now - then), sorted(then - now)
    cuts = sorted({x for lo, hi, _ in now + then for x in (lo, hi)})
    changes, i, j = [], 0, 0
    for lo, hi in zip(cuts, cuts[1:]):
        while i < len(now) and now[i][1] <= lo:
            i += 1
        while j < len(then) and then[j][1] <= lo:
            j += 1
        was = now[i][2] if i < len(now) and now[i][0] <= lo else UC_PROT_ALL
        becomes = then[j][2] if j < len(then) and then[j][0] <= lo else UC_PROT_ALL
        if was != becomes:
            if changes and changes[-1][1] == lo and changes[-1][2] == becomes:
                changes[-1][1] = hi
            else:
                changes.append([lo, hi, becomes])
    return [tuple(c) for c in changes]


def _runs_of_ones(flags):
    """[(first, end)] of the runs of 1 bytes in flags (bytes of 0 and 1),
    by bytes.find (memchr): a regex takes three times as long, and a
    restore reads the touched pages every time."""
    runs, find, n = [], flags.find, len(flags)
    first = find(1)
    while first >= 0:
        end = find(0, first)
        if end < 0:
            end = n
        runs.append((first, end))
        first = find(1, end)
    return runs


class TouchedPages:
    """Which pages of a buffer the host has ever backed, from
    /proc/self/pagemap (present or swapped).  The machine maps RAM
    anonymously, so a page the guest never touched reads as zeros without
    being read: a trace keyframe and a snapshot's restore compare only the
    touched pages, and so never touch the others themselves.  Where pagemap
    cannot be read, or does not say present for a page known to hold data
    (known, an index), every page counts."""

    def __init__(self, address, size, known=None):
        self._n = size // PAGE
        self._at = address // PAGE * 8
        self._fd = None
        if address % PAGE or size % PAGE or mmap.PAGESIZE != PAGE:
            return
        try:
            self._fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        except OSError:
            return
        self._closer = weakref.finalize(self, os.close, self._fd)   # closed with its owner, by the GC if need be
        if known is not None and not self.read()[1][known]:
            self.close()

    def read(self):
        """(runs, flags): [(first page, end page)] of the touched pages,
        ascending, and one byte a page, 1 where touched."""
        if self._fd is not None:
            try:
                data = os.pread(self._fd, self._n * 8, self._at)
            except OSError:
                data = b""
            if len(data) == self._n * 8:
                flags = data[7::8].translate(_TOUCHED)
                return _runs_of_ones(flags), flags
        return [(0, self._n)], b"\x01" * self._n

    def close(self):
        if self._fd is not None:
            self._closer()
            self._fd = None


def _anonymous(size):
    """size zero bytes (a ctypes array) whose pages stay the kernel's shared
    zero page until written: reading them costs one cached page, not size."""
    return (ctypes.c_ubyte * size).from_buffer(mmap.mmap(-1, size))


class _Replayable:
    """Machine.replayable()'s block: counts nesting in machine._replayable."""
    __slots__ = ("machine",)

    def __init__(self, machine):
        self.machine = machine

    def __enter__(self):
        self.machine._replayable += 1

    def __exit__(self, *exc):
        self.machine._replayable -= 1


def _find_counter_offset():
    """Where Unicorn keeps the count of instructions run by emu_start(count=...).

    Unicorn counts with an internal hook (uc->emu_counter) but has no API to read
    it; a hook needs it to stamp an event with its exact instruction.  Run a
    small loop twice with different counts and find the one 64-bit field of the
    handle that equals count+1 both times (the counter also counts the
    instruction it stopped before).  tests/test_machine.py keeps this honest.
    """
    code = bytes.fromhex("ffc0" "ebfc")  # inc eax; jmp back
    probes = []
    for count in (37, 1234):
        uc = Uc(UC_ARCH_X86, UC_MODE_64)
        uc.mem_map(0x1000, 0x1000)
        uc.mem_write(0x1000, code)
        uc.emu_start(0x1000, 0, 0, count)
        base = ctypes.cast(uc._uch, ctypes.c_void_p).value
        words = (ctypes.c_uint64 * 512).from_address(base)  # the handle is larger than 4 KiB
        probes.append({i for i in range(512) if words[i] == count + 1})
        del words, uc
    common = sorted(probes[0] & probes[1])
    if not common:
        raise MachineError("cannot find Unicorn's instruction counter; the lab needs unicorn==2.1.4")
    return common[0] * 8


_COUNTER_OFFSET = None


def _dropper(uc):
    """drop(begin, end): the engine forgets its translations of [begin, end)
    (ctl_remove_cache), straight through uc_ctl where the binding has it."""
    if _UC_CTL is None or getattr(uc, "_uch", None) is None:
        return uc.ctl_remove_cache
    ctl, handle, u64 = _UC_CTL, uc._uch, ctypes.c_uint64

    def drop(begin, end):
        status = ctl(handle, _REMOVE_CACHE, u64(begin), u64(end))
        if status:
            raise UcError(status)
    return drop


class Machine:
    """One x86-64 CPU with RAM, a hypercall port and a SYSCALL emulation.

    Hooks only record or answer; the caller decides between slices (run()).
    """

    def __init__(self):
        global _COUNTER_OFFSET
        if _COUNTER_OFFSET is None:
            _COUNTER_OFFSET = _find_counter_offset()
        self._uc = uc = Uc(UC_ARCH_X86, UC_MODE_64)
        uc.ctl_set_tcg_buffer_size(TCG_BUFFER_SIZE)
        size = RAM_END - RAM_BASE
        # RAM from an anonymous mapping, not a ctypes array (which is zeroed
        # by writing every page): a page the guest never writes stays the
        # kernel's shared zero page, so RAM costs what the guest uses, and
        # comparing RAM (trace keyframes, snapshots) reads mostly one cached page
        self._ram = _anonymous(size)
        uc.mem_map_ptr(RAM_BASE, size, UC_PROT_ALL, ctypes.addressof(self._ram))
        self.ram = memoryview(self._ram).cast("B")
        # The pages the host backed, for snapshots (made at the first one):
        # RAM's first page is written now (a zero over a zero) so that
        # pagemap, if it can be read, is checked against a page known to be
        # backed.
        self._ram[0] = 0
        self._touched = None
        base = ctypes.cast(uc._uch, ctypes.c_void_p).value
        self._counter = ctypes.c_uint64.from_address(base + _COUNTER_OFFSET)
        self._drop_translations = _dropper(uc)
        self.retired = 0            # instructions retired before the current slice
        self._running = False
        self._stop_requested = False
        self._bad_access = None
        self._clock_bias = -1       # the counter counts the current instruction; a block hook runs before that
        self.hypercalls = {}        # number -> handler(a, b, c) -> int | None
        self.syscall_entry = None   # where SYSCALL jumps (LSTAR)
        self.syscall_watch = None   # fn(number in rax) on every SYSCALL, before it is emulated
        self._code_hooks = {}       # handle -> (hook type, address, trampoline): what restore() re-adds
        self._uc_hooks = {}         # handle -> Unicorn's handle of the hook installed now
        # Writes the lab makes between slices that replaying the kernel alone
        # would not redo (patching, loading modules): a trace keyframes after them.
        self.lab_writes = 0
        self._replayable = 0
        self.answer_log = None      # list of (clock, number, answer) while a trace records
        self.answers = None         # {clock: answer} while a trace replays
        self.guard_pages = ()       # (start, end) ranges the CPU may not touch (stack guards)
        self.halted = False         # the last slice ended on a hlt
        self.hypercall_text = (0, 2**64)   # where hypercalls may come from (the kernel sets its text)
        self.read_only_ranges = ()  # kernel text and rodata: the CPU may not write them
        self._guard_index = ((), [])  # (guard_pages, the end of each range), for guest_range_ok
        self.closed = False
        uc.hook_add(UC_HOOK_INSN, self._on_out, None, 1, 0, X.UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INSN, self._on_syscall, None, 1, 0, X.UC_X86_INS_SYSCALL)
        uc.hook_add(UC_HOOK_MEM_INVALID, self._on_bad_access)
        # CPU exceptions (#DE, #UD, #GP, int3, int n): the guest IDT is never
        # used (UNICORN.md), so each becomes a fault of the running context
        uc.hook_add(UC_HOOK_INTR, self._on_exception)
        self._exception = None
        # (rip, rsp, rflags) as the last slice or interrupt() left them, read
        # once after the slice: the tick and the next slice need them, and a
        # read per use would double the register calls between slices.  None
        # when unknown (during a slice, after set_regs() or a restore).
        self._cpu = None
        self._syscall_rax = None    # rax while a SYSCALL hook's watch runs (_on_syscall)
        self._bind_registers(_RegisterIO(uc))

    # The hot paths' register functions, made by _bind_registers: attribute ->
    # (reader or writer, registers).  Kept out of snapshots with the engine.
    _REGISTER_FUNCTIONS = {
        "_read_rip": ("r", ("RIP",)),
        "_read_eflags": ("r", ("EFLAGS",)),
        "_read_gprs": ("r", tuple("EFLAGS" if n == "rflags" else n.upper() for n in GPRS)),
        "_read_cpu_state": ("r", ("RIP", "RSP", "EFLAGS")),            # cpu_state()
        "_write_rax": ("w", ("RAX",)),
    }
    # The hottest paths' (call, vals) pairs (_RegisterIO.raw), a frame
    # cheaper than a reader or writer: attribute -> (registers, write)
    _RAW_REGISTERS = {
        "_syscall_in": (("RIP", "EFLAGS"), False),                     # _on_syscall()
        "_syscall_in_rax": (("RIP", "EFLAGS", "RAX"), False),
        "_syscall_out": (("RCX", "R11", "EFLAGS", "RIP"), True),
        "_hypercall_in": (("RIP", "RDI", "RSI", "RDX"), False),        # _on_out()
        "_interrupt_out": (("RSP", "EFLAGS", "RIP"), True),             # interrupt()
        "_cpu_state_in": (("RIP", "RSP", "EFLAGS"), False),             # run()
    }

    def _bind_registers(self, io):
        """Make the hot paths' register functions on io, a _RegisterIO of this engine."""
        self._regio = io
        for attr, (kind, names) in self._REGISTER_FUNCTIONS.items():
            make = io.reader if kind == "r" else io.writer
            setattr(self, attr, make([getattr(X, "UC_X86_REG_" + n) for n in names]))
        # reg(name): a trace reads rax on every system call entry
        self._read_reg = {name: io.reader([reg]) for name, reg in _UC_REG.items()}
        for attr, (names, write) in self._RAW_REGISTERS.items():
            setattr(self, attr, io.raw([getattr(X, "UC_X86_REG_" + n) for n in names], write=write))

    def close(self):
        """Release the engine now (its translation buffer and mappings), not
        whenever the cycle collector gets to it.  The machine is unusable after."""
        if self.closed:
            return
        self.closed = True
        self.hypercalls = {}
        self.syscall_watch = None
        self._code_hooks = {}
        self._uc_hooks = {}
        self._counter = None
        # the register functions hold the engine's handle: a call after uc_close must fail, not crash
        for attr in self._REGISTER_FUNCTIONS:
            setattr(self, attr, None)
        self._read_reg = None
        for attr in self._RAW_REGISTERS:
            setattr(self, attr, None)
        self._regio = None
        if self._touched is not None:
            self._touched.close()
        uc, self._uc = self._uc, None
        finalizer = getattr(uc, "_Uc__finalizer", None)
        if finalizer is not None:
            finalizer()          # uc_close(), once
        # the RAM buffer goes with the last reference to it
        try:
            self.ram.release()
        except BufferError:      # a caller still holds a slice; it keeps the buffer alive
            pass
        self._ram = None

    # ---- the clock ----
    @property
    def clock(self):
        """Retired instructions; inside a hook, those retired before the current one."""
        if self._running:
            return self.retired + self._counter.value + self._clock_bias
        return self.retired

    # ---- memory ----
    def _off(self, address, size):
        off = address - RAM_BASE
        if off < 0 or off + size > len(self.ram):
            raise MachineError(f"{address:#x}..{address + size:#x} is outside RAM ({RAM_BASE:#x}..{RAM_END:#x})")
        return off

    def read(self, address, size):
        off = self._off(address, size)
        return bytes(self.ram[off:off + size])

    def guest_range_ok(self, address, size):
        """Whether the guest could read address..address+size itself: inside
        RAM and touching no guard page (what access_ok() and a faultless
        copy_from_user() would establish)."""
        if not isinstance(address, int) or size < 0:
            return False
        if address < RAM_BASE or address + size > RAM_END:
            return False
        # guard_pages is sorted and merged, and replaced (never changed in
        # place) when it changes: the ends are kept for a bisection, as this
        # runs on every tick
        guards = self.guard_pages
        index = self._guard_index
        if index[0] is not guards:
            index = self._guard_index = (guards, [hi for _lo, hi in guards])
        i = bisect.bisect_right(index[1], address)
        return i == len(guards) or guards[i][0] >= address + size

    def guest_can_write(self, address, size):
        """guest_range_ok() and touching no read-only page either: whether
        the CPU could store there (push an interrupt frame)."""
        if not self.guest_range_ok(address, size):
            return False
        end = address + size
        for lo, hi in self.read_only_ranges:
            if lo < end and address < hi:
                return False
        return True

    def guest_cstring(self, address, limit=256):
        """A NUL-terminated string the guest handed over, or None when the
        pointer is bad or no NUL comes within limit bytes (strncpy_from_user's
        -EFAULT / -ENAMETOOLONG)."""
        if not self.guest_range_ok(address, 1):
            return None
        avail = min(limit, RAM_END - address)
        for lo, hi in self.guard_pages:
            if address < lo < address + avail:
                avail = lo - address
        off = address - RAM_BASE
        raw = bytes(self.ram[off:off + avail])
        end = raw.find(b"\0")
        if end < 0:
            return None
        return raw[:end].decode("utf-8", "replace")

    def guard(self, address, size):
        """Make address..address+size a guard page: any access by the CPU
        faults (a vmap stack's guard page, unmapped module space).  The
        lab's own reads and writes still work."""
        self._protect(address, size, "none")

    def read_only(self, address, size):
        """Make address..address+size read-only and executable for the CPU
        (kernel text, as CONFIG_STRICT_KERNEL_RWX maps it); the lab's own
        writes (patching pads) still go through, as text_poke() does."""
        self._protect(address, size, "ro")

    def writable(self, address, size):
        """Make address..address+size ordinary memory again (a module's data)."""
        self._protect(address, size, "rw")

    _PROT = {"none": UC_PROT_NONE, "ro": UC_PROT_READ | UC_PROT_EXEC, "rw": UC_PROT_ALL}

    def _protect(self, address, size, kind):
        """Set the CPU's access to whole pages, and keep guard_pages and
        read_only_ranges (merged, sorted) describing every page not "rw"."""
        if address % 4096 or size % 4096 or size <= 0:
            raise MachineError(f"{address:#x}+{size:#x}: protections apply to whole 4 KiB pages")
        self._uc.mem_protect(address, size, self._PROT[kind])
        pages = getattr(self, "_page_kinds", None)
        if pages is None:
            pages = self._page_kinds = {}
        for page in range(address, address + size, 4096):
            if kind == "rw":
                pages.pop(page, None)
            else:
                pages[page] = kind
        runs = {"none": [], "ro": []}      # one pass over the pages, in order (a module load makes four calls)
        for page, k in sorted(pages.items()):
            out = runs[k]
            if out and out[-1][1] == page:
                out[-1][1] = page + 4096
            else:
                out.append([page, page + 4096])
        self.guard_pages = tuple((lo, hi) for lo, hi in runs["none"])
        self.read_only_ranges = tuple((lo, hi) for lo, hi in runs["ro"])

    def in_guard_page(self, address):
        return address is not None and any(lo <= address < hi for lo, hi in self.guard_pages)

    def replayable(self):
        """Writes inside this block are ones the kernel model redoes on replay.
        (A plain context manager, not @contextmanager: every tick enters one.)"""
        return _Replayable(self)

    def _note_write(self):
        if not self._running and not self._replayable:
            self.lab_writes += 1

    def write(self, address, data):
        """Write data memory.  Code needs write_code(), which also drops stale translations."""
        off = self._off(address, len(data))
        self.ram[off:off + len(data)] = data
        self._note_write()

    def write_code(self, address, data):
        """Rewrite instructions in RAM.  A store from Python bypasses Unicorn's
        self-modifying-code check, so the translated blocks covering the range
        are removed, or the old code would keep running (UNICORN.md)."""
        self.write(address, data)
        self._drop_translations(address, address + len(data))

    def u64(self, address):
        return _U64.unpack_from(self.ram, address - RAM_BASE)[0]

    def u32(self, address):
        return _U32.unpack_from(self.ram, address - RAM_BASE)[0]

    def i32(self, address):
        return _I32.unpack_from(self.ram, address - RAM_BASE)[0]

    def u8(self, address):
        return self.ram[address - RAM_BASE]

    def set_u64(self, address, value):
        _U64.pack_into(self.ram, address - RAM_BASE, value & (2**64 - 1))
        self._note_write()

    def set_u32(self, address, value):
        _U32.pack_into(self.ram, address - RAM_BASE, value & 0xFFFFFFFF)
        self._note_write()

    def set_u8(self, address, value):
        self.ram[address - RAM_BASE] = value & 0xFF
        self._note_write()

    def cstring(self, address, limit=256):
        off = self._off(address, 1)
        end = bytes(self.ram[off:off + limit]).find(b"\0")
        raw = bytes(self.ram[off:off + (limit if end < 0 else end)])
        return raw.decode("utf-8", "replace")

    def load(self, segments):
        """Copy an image's loadable segments into RAM (the rest of each stays zero)."""
        for seg in segments:
            self.write(seg.address, seg.data)
            self._drop_translations(seg.address, seg.address + len(seg.data))

    # ---- registers ----
    def regs(self):
        """All general registers, rip and rflags, as a dict."""
        return dict(zip(GPRS, self._read_gprs()))

    def reg(self, name):
        if self._syscall_rax is not None and name == "rax":
            return self._syscall_rax          # read by _on_syscall for its watch
        return self._read_reg[name]()[0]

    def set_regs(self, **values):
        self._cpu = self._syscall_rax = None
        self._regio.writer([_UC_REG[k] for k in values])(*values.values())
        self._note_write()

    def flush_translations(self):
        """Forget every translated block (after RAM was replaced wholesale)."""
        self._uc.ctl_flush_tb()

    def save_context(self):
        return self._uc.context_save()

    def restore_context(self, ctx):
        self._cpu = None
        self._uc.context_restore(ctx)

    # ---- hooks ----
    def _on_out(self, uc, port, size, value, _):
        if port != HYPERCALL_PORT:
            return
        number = value & 0xFFFFFFFF
        handler = self.hypercalls.get(number)
        lo, hi = self.hypercall_text
        read, got = self._hypercall_in      # a context switch is one: as hot as SYSCALL
        status = read()
        if status:
            raise UcError(status)
        rip, a, b, c = got[:]
        if not lo <= rip < hi or (handler is None and self.answers is None):
            # only the kernel's own code talks to the lab (a module goes through
            # kgr_patch_kernel() and the rest): anything else is a fault of the
            # running context, as a privileged instruction would be
            why = "a hypercall from outside the kernel's text" if not lo <= rip < hi else \
                f"an unknown hypercall {number}"
            self._exception = why
            uc.emu_stop()
            return
        if self.answers is not None:
            # replaying: the recorded answer, whoever gave it; the kernel's own
            # handlers still run (they only record)
            if handler is not None:
                try:
                    handler(a, b, c)
                except GuestFault as fault:      # as when it was recorded
                    self._exception = f"a bad hypercall {number}: {fault}"
                    uc.emu_stop()
                    return
            ret = self.answers.get(self.clock)
            if ret is not None:
                self._write_rax(ret & (2**64 - 1))
            return
        try:
            ret = handler(a, b, c)
        except GuestFault as fault:
            self._exception = f"a bad hypercall {number}: {fault}"
            uc.emu_stop()
            return
        if ret is not None:
            self._write_rax(ret & (2**64 - 1))
            if self.answer_log is not None:
                self.answer_log.append((self.clock, number, ret & (2**64 - 1)))

    def _on_syscall(self, uc, _):
        # SYSCALL as the CPU does it, which Unicorn does not: rcx = the next
        # instruction, r11 = rflags, IF masked (FMASK), rip = LSTAR.  Unicorn adds
        # the instruction's 2 bytes after this hook, hence entry - 2.
        # Once per system call, some 6,500 times per 2e7 instructions: the
        # registers go through preallocated arrays (_RegisterIO.raw), with no
        # reader or writer frame in between.
        watch = self.syscall_watch
        if watch is None:
            read, got = self._syscall_in
            status = read()
            if status:
                raise UcError(status)
            rip = got[0]
            rflags = got[1]
        else:
            # a watch is given the system call number: read rax with rip and
            # rflags, and let reg("rax") answer from it while the watch runs
            read, got = self._syscall_in_rax
            status = read()
            if status:
                raise UcError(status)
            rip, rflags, nr = got[:]
            self._syscall_rax = nr
            try:
                watch(nr)
            finally:
                if self._syscall_rax is None:        # the watch wrote registers (set_regs)
                    read, got = self._syscall_in
                    status = read()
                    if status:
                        raise UcError(status)
                    rip, rflags = got[:]
                self._syscall_rax = None
        write, out = self._syscall_out               # rcx, r11, rflags, rip
        out[0] = rip + 2
        out[1] = rflags
        out[2] = rflags & ~X86_EFLAGS_IF
        out[3] = self.syscall_entry - 2
        status = write()
        if status:
            raise UcError(status)

    def _on_exception(self, uc, intno, _):
        self._exception = intno
        uc.emu_stop()

    def _on_bad_access(self, uc, access, address, size, value, _):
        self._bad_access = (access, address)
        return False

    def add_code_hook(self, address, callback):
        """Call callback(address) before the instruction at address runs.
        Returns a handle for remove_code_hook()."""
        def trampoline(uc, addr, size, _):
            callback(addr)
        return self._install(UC_HOOK_CODE, address, trampoline)

    def add_entry_hook(self, address, callback):
        """Call callback(address) when a block starting at address runs: a
        function entry reached by a call or jump.  Far cheaper than a code hook
        (whose mere presence slows translated code down), but it misses
        execution that falls into address from the instruction before it."""
        def trampoline(uc, addr, size, _):
            self._clock_bias = 0     # Unicorn has not counted the block's first instruction yet
            try:
                callback(addr)
            finally:
                self._clock_bias = -1
        return self._install(UC_HOOK_BLOCK, address, trampoline)

    def _install(self, kind, address, trampoline, handle=None):
        """Add a code or block hook on address; its handle (a new one unless
        given: restore() puts a snapshot's hook back under its own)."""
        handle = next(_HOOK_IDS) if handle is None else handle
        self._uc_hooks[handle] = self._uc.hook_add(kind, trampoline, None, address, address)
        # a hook added after its code was translated would never fire
        self._drop_translations(address, address + 1)
        self._code_hooks[handle] = (kind, address, trampoline)
        return handle

    def remove_code_hook(self, handle):
        installed = self._uc_hooks.pop(handle, None)
        if installed is not None:
            self._uc.hook_del(installed)
        self._code_hooks.pop(handle, None)

    def stop(self):
        """From a hypercall: end the current slice once this instruction completes.

        The count of retired instructions is taken here, not from Unicorn's
        counter after the stop: whether Unicorn counts the instruction it
        stops before depends on whether other code hooks are installed
        (tests/test_machine.py pins both cases)."""
        if not self._stop_requested:
            self._stop_requested = True
            self._stopped_at = self._counter.value
        self._uc.emu_stop()

    # ---- running ----
    def run(self, count, rip=None):
        """Run at most count instructions from rip (default: where the CPU is).
        Returns the number retired.  Raises MachineFault if the CPU faulted; the
        instructions retired before the fault are counted."""
        if count <= 0:
            raise MachineError("a slice must run at least one instruction")
        if self.closed:
            raise MachineError("this machine was closed; boot a new system")
        cpu, self._cpu = self._cpu, None
        if rip is None:
            rip = cpu[0] if cpu is not None else self._read_rip()[0]
        self._bad_access = None
        self._exception = None
        self._stop_requested = False
        self._running = True
        try:
            # count on every emu_start: Unicorn's counting hook must exist before
            # any block is translated (UNICORN.md)
            # `until` must be unreachable: 0 would make a jump to NULL end the
            # slice silently instead of faulting
            self._uc.emu_start(rip, _NEVER, 0, count)
        except UcError as exc:
            done = self._counter.value - 1
            self.retired += done
            self._running = False
            raise self._fault(exc) from None
        except BaseException:
            self.retired += self._counter.value - 1
            self._running = False
            raise
        if self._exception is not None:
            # the faulting instruction did not retire (a trap's RIP is past it; the lab treats both alike)
            self.retired += max(self._counter.value - 1, 0)
            self._running = False
            rip = self._read_rip()[0]
            if isinstance(self._exception, str):
                raise MachineFault(self._exception, rip)
            raise MachineFault(_VECTORS.get(self._exception, f"CPU exception {self._exception}"), rip)
        if self._stop_requested:
            done = self._stopped_at
        else:
            done = min(self._counter.value - 1, count)
        read, got = self._cpu_state_in
        status = read()
        if status:
            raise UcError(status)
        cpu = (got[0], got[1], got[2])
        self.halted = done < count and not self._stop_requested and self._hlt_before(cpu[0])
        if self.halted:
            done += 1   # hlt retired and ended emu_start before the counter saw the next instruction
        self.retired += done
        self._running = False
        self._cpu = cpu
        return done

    def _hlt_before(self, rip):
        off = rip - 1 - RAM_BASE
        return 0 <= off < len(self.ram) and self.ram[off] == 0xF4

    def _fault(self, exc):
        rip = self._read_rip()[0]
        kinds = {
            UC_ERR_READ_UNMAPPED: "read of unmapped memory",
            UC_ERR_WRITE_UNMAPPED: "write to unmapped memory",
            UC_ERR_FETCH_UNMAPPED: "fetch from unmapped memory",
            UC_ERR_INSN_INVALID: "invalid opcode",
            # guard pages and free module space are not mapped for the CPU
            UC_ERR_READ_PROT: "read of unmapped memory",
            UC_ERR_WRITE_PROT: "write to unmapped memory",
            UC_ERR_FETCH_PROT: "fetch from unmapped memory",
        }
        kind = kinds.get(exc.errno, str(exc))
        address = self._bad_access[1] if self._bad_access else None
        if exc.errno == UC_ERR_WRITE_PROT and any(lo <= (address or 0) < hi for lo, hi in self.read_only_ranges):
            kind = "write to read-only text"
        return MachineFault(kind, rip, address)

    # ---- interrupts ----
    def interrupts_enabled(self):
        cpu = self._cpu
        return bool((cpu[2] if cpu is not None else self._read_eflags()[0]) & X86_EFLAGS_IF)

    def cpu_state(self):
        """(rip, rsp, rflags) in one read (none between slices: run() kept them)."""
        cpu = self._cpu
        return cpu if cpu is not None else tuple(self._read_cpu_state())

    def interrupt(self, entry, *, cs, ss, stack=None, state=None, replayable=False):
        """Deliver an interrupt as the CPU would: align the stack (the current
        one, or stack when the caller switches, as TSS.RSP0 does), push ss, rsp,
        rflags, cs, rip, clear IF and jump to entry.  state: cpu_state() if the
        caller already read it.  replayable: as inside replayable(), the
        frame is not a lab write (a tick: the kernel model redoes it)."""
        rip, rsp, rflags = state or self.cpu_state()
        top = (stack if stack is not None else rsp) & ~0xF
        frame = top - 40
        _FRAME.pack_into(self.ram, self._off(frame, 40), rip, cs, rflags, rsp, ss)
        if not replayable:
            self._note_write()
        write, out = self._interrupt_out       # rsp, rflags, rip: once per tick
        out[0] = frame
        out[1] = masked = rflags & ~X86_EFLAGS_IF
        out[2] = entry
        status = write()
        if status:
            raise UcError(status)
        self._cpu = None if self._running else (entry, frame, masked)

    # ---- RAM as a whole ----
    def replace_ram(self, data):
        """Make RAM hold data (bytes-like, all of RAM), between slices: only
        the pages that differ are copied, and only their translated blocks
        dropped (a store from Python is not seen by the translation cache,
        UNICORN.md), so code that did not change keeps its translation, which
        a flush of everything would make every block pay for again."""
        if self.closed:
            raise MachineError("this machine was closed; boot a new system")
        if self._running:
            raise MachineError("RAM is replaced between slices, not from inside a hook")
        if len(data) != len(self.ram):
            raise MachineError(f"{len(data):,} bytes for {len(self.ram):,} bytes of RAM")
        buf = data if isinstance(data, (bytes, bytearray)) else bytes(data)
        if isinstance(buf, bytes):
            there = ctypes.cast(ctypes.c_char_p(buf), ctypes.c_void_p).value
            self._copy_changed_pages(there)
        else:
            view = ctypes.c_char.from_buffer(buf)
            try:
                self._copy_changed_pages(ctypes.addressof(view))
            finally:
                del view
        self._note_write()

    def _copy_changed_pages(self, there, pages=None):
        """Copy into RAM the pages where the RAM-sized buffer at address
        `there` differs, adjacent ones merged, and drop their translations
        (in read-only text, those of the bytes from the first that differs
        to the last).  pages: [(first page, end page)], ascending, the only
        ones that may differ (default: all of RAM)."""
        native = _native.pages()
        if native is not None:
            self._copy_changed_pages_native(native, there, pages)
            return
        memcmp = libc_memcmp()
        here = ctypes.addressof(self._ram)
        runs = []            # [start, end) offsets of changed pages, adjacent ones merged
        size = len(self.ram)
        if pages is None:
            # all of RAM: blocks of 256 KiB, then 16 KiB, then pages, so that
            # few calls are made where nothing changed
            block = self._SNAPSHOT_BLOCK
            todo = [(lo, min(lo + block, size)) for lo in range(0, size, block)]
            steps = (1 << 14, PAGE)
        else:
            # the touched pages: a run whole, then the pages of one that differs
            todo = [(a * PAGE, min(b * PAGE, size)) for a, b in pages]
            steps = (PAGE,)
        known = set()        # pieces found to differ that were no larger than the next step: not split
        for step in steps:
            found = []
            for piece in todo:
                lo, hi = piece
                if piece in known or memcmp(here + lo, there + lo, hi - lo):
                    if hi - lo <= step:
                        known.add(piece)
                        found.append(piece)
                    else:
                        found += [(p, min(p + step, hi)) for p in range(lo, hi, step)]
            todo = found
        for piece in todo:
            lo, hi = piece
            if piece in known or memcmp(here + lo, there + lo, hi - lo):
                if runs and runs[-1][1] == lo:
                    runs[-1][1] = hi
                else:
                    runs.append([lo, hi])
        code = [(a - RAM_BASE, b - RAM_BASE) for a, b in self.read_only_ranges]
        for lo, hi in runs:
            drop_lo, drop_hi = lo, hi
            if any(a < hi and lo < b for a, b in code):
                # Kernel text: only the bytes that differ (a pad) lose their
                # translations.  The rest of the page is hot code that did not
                # change (the system call and interrupt paths share a page
                # with capable()); dropping it all would have every restored
                # run translate it again.
                drop_lo, drop_hi = _differing(memcmp, here, there, lo, hi)
            ctypes.memmove(here + lo, there + lo, hi - lo)
            self._drop_translations(RAM_BASE + drop_lo, RAM_BASE + drop_hi)

    def _copy_changed_pages_native(self, native, there, pages):
        """_copy_changed_pages() with its loop in C (lab/_pages.c): one
        call compares, copies and narrows the text runs; the translations
        are then dropped from here, as the Python loop drops them."""
        size = len(self.ram)
        spans = [0, size] if pages is None else [x for a, b in pages for x in (a * PAGE, min(b * PAGE, size))]
        code = [x for a, b in self.read_only_ranges for x in (a - RAM_BASE, b - RAM_BASE)]
        most = sum(spans[i + 1] - spans[i] for i in range(0, len(spans), 2)) // PAGE   # a run is a page or more
        u64 = ctypes.c_uint64
        drops = (u64 * (2 * most + 2))()
        n = native(ctypes.addressof(self._ram), there, (u64 * len(spans))(*spans), len(spans) // 2,
                   (u64 * (len(code) or 1))(*code), len(code) // 2, drops, most + 1)
        if n < 0:
            raise MachineError("the page loop found more changed runs than pages")
        for i in range(0, 2 * n, 2):
            self._drop_translations(RAM_BASE + drops[i], RAM_BASE + drops[i + 1])

    # ---- snapshots (lab/snapshot.py builds a whole system's on these) ----
    # the engine itself and the register functions bound to it: never copied, never replaced
    _SNAPSHOT_KEEP = frozenset({"_uc", "_ram", "ram", "_counter", "_drop_translations", "_regio", "_read_reg", "_touched", "_uc_hooks",
                                *_REGISTER_FUNCTIONS, *_RAW_REGISTERS})
    _SNAPSHOT_BLOCK = 1 << 18

    def _backed_pages(self):
        """[(first page, end page)] of the RAM pages the host has backed
        (all of RAM where pagemap does not tell); the rest reads as zero."""
        if self._touched is None:
            self._touched = TouchedPages(ctypes.addressof(self._ram), len(self.ram), known=0)
        return self._touched.read()[0]

    def snapshot(self):
        """The machine as it is now, for restore(): the CPU context, a copy of
        RAM, and the machine's own bookkeeping (clock, memory protections,
        code hooks, hypercall table).  Between slices only."""
        if self.closed:
            raise MachineError("this machine was closed; boot a new system")
        if self._running:
            raise MachineError("a snapshot is taken between slices, not from inside a hook")
        # RAM is copied page run by page run, only the pages the host backed:
        # the others are zero here and stay the zero page in the copy, and
        # neither RAM nor the copy gets them backed by being read, which lets
        # restore() compare only what was touched since (_backed_pages)
        ram = _anonymous(len(self.ram))
        here, there = ctypes.addressof(self._ram), ctypes.addressof(ram)
        for first, end in self._backed_pages():
            ctypes.memmove(there + first * PAGE, here + first * PAGE, (end - first) * PAGE)
        state = {k: (v.copy() if isinstance(v, (dict, list, set)) else v)
                 for k, v in self.__dict__.items() if k not in self._SNAPSHOT_KEEP}
        return {"context": self._uc.context_save(), "ram": ram, "state": state}

    def restore(self, snap):
        """Bring the machine back to snapshot(): registers, RAM, memory
        protections as they were, code hooks added since removed.  Only the
        RAM pages that differ are copied back, and only their translated
        blocks dropped (UNICORN.md: a store from Python is not seen by the
        translation cache): code that did not change keeps its translation,
        which a flush of everything would make every block pay for again.
        Code hooks added since are removed, and the snapshot's that were
        removed since (by a restore to an earlier snapshot) are added again
        under their handles, in the order they were first added."""
        if self.closed:
            raise MachineError("this machine was closed; boot a new system")
        if self._running:
            raise MachineError("a snapshot is restored between slices, not from inside a hook")
        state = snap["state"]
        # a page the host has not backed now was not backed when the snapshot
        # was taken either (nothing unbacks RAM): zero in RAM and in the copy
        self._copy_changed_pages(ctypes.addressof(snap["ram"]), self._backed_pages())
        for handle in [h for h in self._code_hooks if h not in state["_code_hooks"]]:
            self.remove_code_hook(handle)
        for handle, (kind, address, trampoline) in state["_code_hooks"].items():
            if handle not in self._code_hooks:
                self._install(kind, address, trampoline, handle)
        # protections: only the pages whose access differs, each run of them
        # in one call (a module's load carves its pages out of the guarded
        # module space: one call puts them back, where undoing and redoing
        # whole ranges took three)
        for lo, hi, prot in _protection_changes(self.read_only_ranges, self.guard_pages,
                                                state["read_only_ranges"], state["guard_pages"]):
            self._uc.mem_protect(lo, hi - lo, prot)
        self._uc.context_restore(snap["context"])
        for k in [k for k in self.__dict__ if k not in self._SNAPSHOT_KEEP and k not in state]:
            del self.__dict__[k]
        self.__dict__.update({k: (v.copy() if isinstance(v, (dict, list, set)) else v) for k, v in state.items()})
        self._cpu = None
