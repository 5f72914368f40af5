"""bare - the lab's kernel image run on Unicorn directly, with only the hooks it cannot do without.

This is the yardstick for the lab's throughput: the same image, the same RAM,
the same slicing (emu_start with count = instructions to the next timer tick)
and the same tick delivery as lab/kernel.py `_tick` + lab/machine.py
`interrupt`, but no event log, no task views, no per-slice bookkeeping beyond
what the firmware needs to run.  Nothing here imports lab's running parts:
lab.image.Image only parses the ELF.

The hooks a bare run cannot do without:
- SYSCALL: Unicorn does not emulate it (UNICORN.md), so the hook does what the
  CPU does, exactly as lab/machine.py `_on_syscall`.
- `out 0xe9`: the hypercall port.  With seed 0 and no live patch no answer
  changes the guest: HC_BOOTED would write sched_order as the identity, which
  the firmware's sched_init() already wrote; HC_SWITCH, HC_CONSOLE and
  HC_TASK_EXIT only tell the lab something; the rest (HC_PANIC, the kGraft
  and module calls, HC_KALLSYMS_LOOKUP) are not made by the default workload
  without a patch.  run.py compares the final state with the lab's, so a
  hypercall that did need an answer would not go unnoticed.  The hook stays
  even so: a driver of this firmware has to listen on the port.
- the timer tick between slices, with the lab's stall rule: while IF is off,
  the tick stays pending and is retried about every STALL_CHUNK instructions
  counted from when it fell due, each try STALL_JITTER off the even grid
  (lab/kernel.py _stall_offset; as in the lab, how run() is split changes
  nothing).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import struct

from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn import x86_const as X

# The lab's numbers, repeated rather than imported so that the yardstick does
# not move when lab/ does; run.py checks that they still agree (_check_constants).
RAM_BASE = 0x100000
RAM_END = 0x800000
X86_EFLAGS_IF = 0x200
STALL_CHUNK = 128
STALL_JITTER = (0, 61, 29, 97, 13, 113, 47, 79, 5, 101, 37, 71, 19, 89, 53, 7)
LOCKUP_QUANTA = 50
UNTIL = 2**64 - 1   # emu_start's `until`, unreachable as in the lab: 0 would end a slice on a jump to NULL

_FRAME = struct.Struct("<5Q")
_U64 = struct.Struct("<Q")
_TICK_REGS = [X.UC_X86_REG_RIP, X.UC_X86_REG_RSP, X.UC_X86_REG_EFLAGS]
_SYSCALL_REGS = [X.UC_X86_REG_RIP, X.UC_X86_REG_EFLAGS]
_STATE_REGS = [getattr(X, "UC_X86_REG_" + n) for n in (
    "RAX", "RBX", "RCX", "RDX", "RSI", "RDI", "RBP", "RSP",
    "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15", "RIP", "EFLAGS")]


class BareError(RuntimeError):
    """The bare run could not follow the lab (a soft lockup, a fault)."""


class Bare:
    """One Unicorn CPU running the image, ticked every `quantum` instructions.

    registers: how the SYSCALL hook and tick delivery reach the registers,
    "ctypes" (preallocated arrays straight into uc_reg_read_batch /
    uc_reg_write_batch, as lab/machine.py does; the default) or "api" (the
    binding's reg_read_batch / reg_write_batch)."""

    def __init__(self, image, *, quantum, cmdline="workload=default", registers="ctypes"):
        self.quantum = quantum
        self.registers = registers
        self.clock = 0
        self._next_tick = quantum
        self._stall = 0

        c = image.const
        self._irq_entry = image.address("common_interrupt")
        self._user_lo, self._user_hi = image.address("__user_start"), image.address("__user_end")
        self._current_task = image.address("current_task")
        self._stack_top_off = c("TASK_stack_top")
        self._user_cs = c("USER_CS_SEL")
        self._kernel_cs = c("KERNEL_CS_SEL")
        syscall_entry = image.address("entry_SYSCALL_64")

        self.uc = uc = Uc(UC_ARCH_X86, UC_MODE_64)
        # what run() calls to run a slice, emu_start(rip, until, timeout, count);
        # bench_ceiling.py puts a driver that ends slices without `count` here
        self.emu_start = uc.emu_start
        size = RAM_END - RAM_BASE
        self._ram_buf = (ctypes.c_ubyte * size)()
        uc.mem_map_ptr(RAM_BASE, size, UC_PROT_ALL, ctypes.addressof(self._ram_buf))
        self.ram = memoryview(self._ram_buf).cast("B")
        for seg in image.segments:
            off = seg.address - RAM_BASE
            self.ram[off:off + len(seg.data)] = seg.data
        off = image.address("boot_command_line") - RAM_BASE
        cmd = cmdline.encode() + b"\0"
        self.ram[off:off + len(cmd)] = cmd

        if registers == "api":
            on_syscall = _syscall_hook_api(syscall_entry)
            self._tick_registers = _tick_registers_api(uc)
        elif registers == "ctypes":
            on_syscall = _syscall_hook_ctypes(uc, syscall_entry)
            self._tick_registers = _tick_registers_ctypes(uc)
        else:
            raise ValueError(f"registers={registers!r}: choose 'api' or 'ctypes'")

        def on_out(uc, port, size, value, _):
            # the hypercall port: nothing to answer with seed 0 (module docstring)
            pass

        uc.hook_add(UC_HOOK_INSN, on_out, None, 1, 0, X.UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INSN, on_syscall, None, 1, 0, X.UC_X86_INS_SYSCALL)
        uc.reg_write_batch([(X.UC_X86_REG_RIP, image.entry), (X.UC_X86_REG_RSP, 0),
                            (X.UC_X86_REG_EFLAGS, 0x2)])
        self._rip = image.entry

    def run(self, instructions):
        """Run `instructions` instructions in slices that end at timer ticks,
        delivering each tick after its slice, as lab/kernel.py `run` does."""
        emu_start = self.emu_start
        read_tick, write_tick = self._tick_registers
        ram = self.ram
        irq_entry = self._irq_entry
        user_lo, user_hi = self._user_lo, self._user_hi
        current_off = self._current_task - RAM_BASE
        stack_top_off = self._stack_top_off
        user_cs, kernel_cs = self._user_cs, self._kernel_cs
        lockup = LOCKUP_QUANTA * self.quantum
        quantum = self.quantum
        jitter, tries = STALL_JITTER, len(STALL_JITTER)

        now = self.clock
        end = now + instructions
        next_tick = self._next_tick
        stall = self._stall
        rip = self._rip
        while now < end:
            due = next_tick + stall * STALL_CHUNK + jitter[stall % tries]
            stop = due if due < end else end
            count = stop - now
            emu_start(rip, UNTIL, 0, count)
            # the default workload never halts, so a slice retires all of count;
            # were it not so, the final state would differ from the lab's
            now += count
            rip, rsp, rflags = read_tick()
            if now < due:
                continue
            # the timer tick (lab/kernel.py _tick, lab/machine.py interrupt)
            if not rflags & X86_EFLAGS_IF:
                # the next try after now (lab/kernel.py _tick)
                late = now - next_tick
                k = late // STALL_CHUNK
                stall = k if k * STALL_CHUNK + jitter[k % tries] > late else k + 1
                if late >= lockup:
                    raise BareError(f"hard lockup at {rip:#x}, clock {now}: the lab would panic here")
                continue
            stall = 0
            if user_lo <= rip < user_hi:
                task = _U64.unpack_from(ram, current_off)[0]
                top = _U64.unpack_from(ram, task + stack_top_off - RAM_BASE)[0]
                cs = user_cs
                ss = user_cs - 8
            else:
                top = rsp
                cs = kernel_cs
                ss = kernel_cs + 8
            frame = (top & ~0xF) - 40
            _FRAME.pack_into(ram, frame - RAM_BASE, rip, cs, rflags, rsp, ss)
            write_tick(frame, rflags & ~X86_EFLAGS_IF, irq_entry)
            rip = irq_entry
            next_tick = now + quantum
        self.clock = now
        self._next_tick = next_tick
        self._stall = stall
        self._rip = rip
        return now

    # ---- what run.py compares with the lab ----
    def regs(self):
        return self.uc.reg_read_batch(_STATE_REGS)

    def u64(self, address):
        return _U64.unpack_from(self.ram, address - RAM_BASE)[0]


def _syscall_hook_api(syscall_entry):
    """The SYSCALL hook through the binding's public reg_read_batch/reg_write_batch."""
    entry_minus_2 = syscall_entry - 2
    rip_eflags = _SYSCALL_REGS
    rcx, r11, eflags, rip_reg = X.UC_X86_REG_RCX, X.UC_X86_REG_R11, X.UC_X86_REG_EFLAGS, X.UC_X86_REG_RIP

    def on_syscall(uc, _):
        # as the CPU does it: rcx = next instruction, r11 = rflags, IF masked,
        # rip = LSTAR; Unicorn adds the 2 bytes of `syscall` after this hook,
        # hence entry - 2 (lab/machine.py _on_syscall)
        rip, fl = uc.reg_read_batch(rip_eflags)
        uc.reg_write_batch([(rcx, rip + 2), (r11, fl), (eflags, fl & ~X86_EFLAGS_IF),
                            (rip_reg, entry_minus_2)])
    return on_syscall


def _syscall_hook_ctypes(uc, syscall_entry):
    """The same hook with preallocated ctypes arrays passed straight to
    uc_reg_read_batch/uc_reg_write_batch, arguments converted once
    (_batch_call): what a driver tuned past the binding's per-call
    marshalling (register classes, arrays built and converted per call) does.
    It reaches into the binding (uclib, _uch), as lab/machine.py does; the
    default since the lab reaches its registers this way too."""
    from unicorn.unicorn_py3.unicorn import uclib

    handle = uc._uch
    read_ids = (ctypes.c_int * 2)(X.UC_X86_REG_RIP, X.UC_X86_REG_EFLAGS)
    read_vals = (ctypes.c_uint64 * 2)()
    read_ptrs = (ctypes.c_void_p * 2)(*(ctypes.addressof(read_vals) + 8 * i for i in range(2)))
    write_ids = (ctypes.c_int * 4)(X.UC_X86_REG_RCX, X.UC_X86_REG_R11, X.UC_X86_REG_EFLAGS, X.UC_X86_REG_RIP)
    write_vals = (ctypes.c_uint64 * 4)()
    write_ptrs = (ctypes.c_void_p * 4)(*(ctypes.addressof(write_vals) + 8 * i for i in range(4)))
    read_batch = _batch_call(uclib.uc_reg_read_batch, handle, read_ids, read_ptrs)
    write_batch = _batch_call(uclib.uc_reg_write_batch, handle, write_ids, write_ptrs)
    entry_minus_2 = syscall_entry - 2
    # the arrays must outlive the hook: keep them in its defaults
    keep = (read_ids, read_vals, read_ptrs, write_ids, write_vals, write_ptrs)

    def on_syscall(_uc, _, keep=keep):
        read_batch()        # as _syscall_hook_api
        fl = read_vals[1]
        write_vals[0] = read_vals[0] + 2
        write_vals[1] = fl
        write_vals[2] = fl & ~X86_EFLAGS_IF
        write_vals[3] = entry_minus_2
        write_batch()
    return on_syscall


_BATCH_PROTOTYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)


def _batch_call(batch, handle, ids, ptrs):
    """batch(handle, ids, ptrs, len(ids)) as a call without arguments: through
    a prototype of plain pointers with the arguments converted once (the
    binding's prototype converts the arrays on every call), as lab/machine.py
    _RegisterIO does."""
    call = _BATCH_PROTOTYPE(ctypes.cast(batch, ctypes.c_void_p).value)
    return functools.partial(call, ctypes.c_void_p(ctypes.cast(handle, ctypes.c_void_p).value),
                             ctypes.c_void_p(ctypes.addressof(ids)), ctypes.c_void_p(ctypes.addressof(ptrs)),
                             ctypes.c_int(len(ids)))


def _tick_registers_api(uc):
    """(read, write) for tick delivery through the binding's public calls:
    read() -> (rip, rsp, rflags); write(rsp, rflags, rip)."""
    reg_read_batch, reg_write_batch = uc.reg_read_batch, uc.reg_write_batch
    tick_regs = _TICK_REGS
    rsp_reg, eflags_reg, rip_reg = X.UC_X86_REG_RSP, X.UC_X86_REG_EFLAGS, X.UC_X86_REG_RIP

    def read():
        return reg_read_batch(tick_regs)

    def write(rsp, rflags, rip):
        reg_write_batch([(rsp_reg, rsp), (eflags_reg, rflags), (rip_reg, rip)])
    return read, write


def _tick_registers_ctypes(uc):
    """The same two through preallocated ctypes arrays (as _syscall_hook_ctypes)."""
    from unicorn.unicorn_py3.unicorn import uclib

    handle = uc._uch
    read_ids = (ctypes.c_int * 3)(*_TICK_REGS)
    read_vals = (ctypes.c_uint64 * 3)()
    read_ptrs = (ctypes.c_void_p * 3)(*(ctypes.addressof(read_vals) + 8 * i for i in range(3)))
    write_ids = (ctypes.c_int * 3)(X.UC_X86_REG_RSP, X.UC_X86_REG_EFLAGS, X.UC_X86_REG_RIP)
    write_vals = (ctypes.c_uint64 * 3)()
    write_ptrs = (ctypes.c_void_p * 3)(*(ctypes.addressof(write_vals) + 8 * i for i in range(3)))
    read_batch = _batch_call(uclib.uc_reg_read_batch, handle, read_ids, read_ptrs)
    write_batch = _batch_call(uclib.uc_reg_write_batch, handle, write_ids, write_ptrs)
    keep = (read_ids, read_vals, read_ptrs, write_ids, write_vals, write_ptrs)   # as _syscall_hook_ctypes

    def read(keep=keep):
        read_batch()
        return read_vals[:]     # a list unpacks faster than the ctypes array

    def write(rsp, rflags, rip, keep=keep):
        write_vals[0] = rsp
        write_vals[1] = rflags
        write_vals[2] = rip
        write_batch()
    return read, write


def state_digest(regs, ram):
    """sha256 of the general registers, rip, rflags and all of RAM: equal
    digests after N instructions mean the two runs went the same way."""
    h = hashlib.sha256()
    h.update(struct.pack(f"<{len(regs)}Q", *regs))
    h.update(ram)
    return h.hexdigest()
