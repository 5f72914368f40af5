"""Tests for lab.machine's register fast path: the hot paths (SYSCALL, the
hypercall port, tick delivery) reach the registers through preallocated ctypes
arrays into uc_reg_read_batch/uc_reg_write_batch, with the binding's public
calls as the fallback when its internal names are missing; both paths must
give the same registers, and so the same runs."""
import struct

import pytest

import lab
from lab import machine as machine_mod
from lab.machine import GPRS, RAM_BASE, X86_EFLAGS_IF, Machine, _RegisterIO

CODE = RAM_BASE + 0x1000
ENTRY = RAM_BASE + 0x2000
STACK = RAM_BASE + 0x8008

SYSCALL = "0f05"
OUT_E9_EAX = "e7e9"
SPIN = "ebfe"
HLT = "f4"
DISTINCT = {name: (0x1111_0000_0000_0000 * (i + 1) + i) & (2**64 - 1) for i, name in enumerate(GPRS)
            if name not in ("rip", "rflags")}


def mov_eax(imm):
    return "b8" + struct.pack("<I", imm).hex()


@pytest.fixture
def fallback(monkeypatch):
    """Machines made while this is active use the binding's public calls, as
    they would with a binding that lacks uclib's batch functions."""
    monkeypatch.setattr(machine_mod, "_UC_REG_READ_BATCH", None)
    monkeypatch.setattr(machine_mod, "_UC_REG_WRITE_BATCH", None)


def test_a_machine_uses_the_native_path_when_the_binding_has_its_internal_names():
    assert Machine()._regio.native


def test_a_machine_falls_back_to_the_binding_when_the_internal_names_are_missing(fallback):
    assert not Machine()._regio.native


@pytest.mark.parametrize("writer_native", [True, False])
def test_both_paths_read_the_same_registers_whichever_wrote_them(writer_native):
    m = Machine()
    native, binding = _RegisterIO(m._uc, native=True), _RegisterIO(m._uc, native=False)
    ids = [machine_mod._UC_REG[name] for name in DISTINCT]
    (native if writer_native else binding).writer(ids)(*DISTINCT.values())
    expected = list(DISTINCT.values())
    assert list(native.reader(ids)()) == expected
    assert list(binding.reader(ids)()) == expected
    assert list(m._uc.reg_read_batch(ids)) == expected


@pytest.mark.parametrize("native", [True, False])
def test_a_written_value_wraps_modulo_2_to_the_64_on_both_paths(native):
    m = Machine()
    io = _RegisterIO(m._uc, native=native)
    rax, rbx = machine_mod._UC_REG["rax"], machine_mod._UC_REG["rbx"]
    io.writer([rax, rbx])(-1, 2**64 + 5)
    assert m._uc.reg_read_batch([rax, rbx]) == (2**64 - 1, 5)


def test_a_native_read_returns_a_fresh_sequence_each_time():
    m = Machine()
    m.set_regs(rip=CODE, rsp=STACK, rflags=0x2)
    first = m.cpu_state()
    m.set_regs(rip=ENTRY)
    assert first == (CODE, STACK, 0x2)
    assert m.cpu_state() == (ENTRY, STACK, 0x2)


def _syscall_story(m):
    """A SYSCALL into an entry that makes hypercall 1 (answered), then an
    interrupt delivered between slices: the registers after each step."""
    seen = []
    m.hypercalls[1] = lambda a, b, c: seen.append(("hc", a, b, c)) or 0xABCD
    m.syscall_entry = ENTRY
    m.write_code(CODE, bytes.fromhex(SYSCALL + SPIN))
    m.write_code(ENTRY, bytes.fromhex(mov_eax(1) + OUT_E9_EAX + HLT))
    m.set_regs(**DISTINCT, rflags=0x2 | X86_EFLAGS_IF | 0x1)
    steps = [m.regs()]
    m.run(1, rip=CODE)                       # the syscall
    steps.append(m.regs())
    m.run(10)                                # mov, out, hlt
    steps.append(m.regs())
    state = m.cpu_state()
    m.interrupt(CODE, cs=0x10, ss=0x18, stack=STACK, state=state)
    steps.append(m.regs())
    return steps, seen, m.clock, m.read(RAM_BASE, 0x9000)


def test_syscall_hypercall_and_interrupt_leave_the_same_registers_on_both_paths(monkeypatch):
    native = _syscall_story(Machine())
    monkeypatch.setattr(machine_mod, "_UC_REG_READ_BATCH", None)
    monkeypatch.setattr(machine_mod, "_UC_REG_WRITE_BATCH", None)
    m = Machine()
    assert not m._regio.native
    assert _syscall_story(m) == native
    steps, seen, _clock, _ram = native
    after_syscall = steps[1]
    assert after_syscall["rcx"] == CODE + 2 and after_syscall["r11"] == 0x2 | X86_EFLAGS_IF | 0x1
    assert after_syscall["rip"] == ENTRY and not after_syscall["rflags"] & X86_EFLAGS_IF
    assert seen == [("hc", DISTINCT["rdi"], DISTINCT["rsi"], DISTINCT["rdx"])]
    assert steps[2]["rax"] == 0xABCD


def test_the_hot_paths_do_not_go_through_the_bindings_register_calls():
    m = Machine()

    def refuse(*_):
        raise AssertionError("the binding's register call was used on a hot path")
    # instance attributes shadow the binding's methods for this engine only
    m._uc.reg_read_batch = m._uc.reg_write_batch = m._uc.reg_read = m._uc.reg_write = refuse
    steps, seen, _clock, _ram = _syscall_story(m)
    assert seen and steps[1]["rip"] == ENTRY
    assert m.interrupts_enabled() is False


def test_a_closed_machine_refuses_register_access_instead_of_touching_the_freed_engine():
    m = Machine()
    m.close()
    with pytest.raises((AttributeError, TypeError)):
        m.cpu_state()
    with pytest.raises((AttributeError, TypeError)):
        m.regs()


def test_a_booted_kernel_runs_the_same_on_both_paths(image, monkeypatch):
    native = lab.boot(image)
    native.run(400_000)
    monkeypatch.setattr(machine_mod, "_UC_REG_READ_BATCH", None)
    monkeypatch.setattr(machine_mod, "_UC_REG_WRITE_BATCH", None)
    binding = lab.boot(image)
    assert not binding.machine._regio.native
    binding.run(400_000)
    assert binding.kernel.log.digest == native.kernel.log.digest
    assert binding.machine.regs() == native.machine.regs()
    assert bytes(binding.machine.ram) == bytes(native.machine.ram)


def test_the_cpu_state_kept_between_slices_is_what_the_engine_holds(image):
    """run() keeps (rip, rsp, rflags) for the tick and the next slice; after a
    slice, an interrupt, set_regs and a restore it must be what a read gives."""
    system = lab.boot(image)
    m = system.machine

    def fresh():
        return tuple(m._read_cpu_state())
    for _ in range(30):
        system.run(7_919)
        assert m.cpu_state() == fresh()
        assert m.interrupts_enabled() == bool(fresh()[2] & X86_EFLAGS_IF)
    snap = m.snapshot()
    m.interrupt(ENTRY, cs=0x10, ss=0x18, stack=STACK)
    assert m.cpu_state() == fresh() == (ENTRY, (STACK & ~0xF) - 40, m.cpu_state()[2])
    m.set_regs(rip=CODE, rsp=STACK)
    assert m.cpu_state() == fresh()
    m.restore(snap)
    assert m.cpu_state() == fresh()
    system.run(20_000)
    assert m.cpu_state() == fresh()


def test_guest_range_ok_agrees_with_checking_every_guard_range():
    import random
    m = Machine()
    rng = random.Random(3)
    for lo in sorted(rng.sample(range(RAM_BASE, RAM_BASE + 0x600000, 0x1000), 12)):
        m.guard(lo, 0x1000 * rng.randint(1, 3))
    guards = m.guard_pages

    def slow(address, size):
        end = address + size
        return RAM_BASE <= address and end <= machine_mod.RAM_END and \
            not any(lo < end and address < hi for lo, hi in guards)
    for lo, hi in guards:
        for address in (lo - 8, lo - 1, lo, lo + 1, hi - 1, hi, hi + 8):
            for size in (0, 1, 8, 0x1000, 0x3000):
                assert m.guest_range_ok(address, size) == slow(address, size), (hex(address), size)
    for _ in range(2000):
        address, size = rng.randrange(RAM_BASE, machine_mod.RAM_END), rng.randrange(0, 0x4000)
        assert m.guest_range_ok(address, size) == slow(address, size)


@pytest.mark.parametrize("native", [True, False])
def test_a_syscall_watch_is_given_the_number_in_rax_and_the_syscall_is_emulated_the_same(native, monkeypatch):
    if not native:
        monkeypatch.setattr(machine_mod, "_UC_REG_READ_BATCH", None)
        monkeypatch.setattr(machine_mod, "_UC_REG_WRITE_BATCH", None)

    def story(watch):
        m = Machine()
        assert m._regio.native == native
        m.syscall_entry = ENTRY
        m.write_code(CODE, bytes.fromhex(mov_eax(57) + SYSCALL + mov_eax(0) + SYSCALL + SPIN))
        m.write_code(ENTRY, bytes.fromhex("48ffc0" + "ffe1"))      # inc rax; jmp rcx (back after the syscall)
        m.set_regs(**DISTINCT, rflags=0x2 | X86_EFLAGS_IF)
        seen = []
        if watch:
            m.syscall_watch = lambda nr: seen.append((nr, m.reg("rax"), m.reg("rbx"), m._read_reg["rax"]()[0]))
        m.run(8, rip=CODE)
        return seen, m.regs(), m.reg("rax")
    seen, regs, rax = story(True)
    assert [(n, a, c) for n, a, _b, c in seen] == [(57, 57, 57), (0, 0, 0)]
    assert [b for _n, _a, b, _c in seen] == [DISTINCT["rbx"]] * 2
    assert (regs, rax) == story(False)[1:] and rax == regs["rax"] == 1


def test_a_syscall_watch_that_writes_registers_has_the_syscall_emulated_from_what_it_wrote():
    m = Machine()
    m.syscall_entry = ENTRY
    m.write_code(CODE, bytes.fromhex(SYSCALL + SPIN))
    m.write_code(CODE + 0x100, bytes.fromhex(SPIN))
    m.write_code(ENTRY, bytes.fromhex(SPIN))
    m.set_regs(rip=CODE, rax=3, rflags=0x2 | X86_EFLAGS_IF)
    m.syscall_watch = lambda nr: m.set_regs(rip=CODE + 0x100, rflags=0x2 | 0x1 | X86_EFLAGS_IF)
    m.run(1, rip=CODE)
    regs = m.regs()
    assert regs["rcx"] == CODE + 0x102 and regs["r11"] == 0x2 | 0x1 | X86_EFLAGS_IF
    assert regs["rip"] == ENTRY and not regs["rflags"] & X86_EFLAGS_IF
