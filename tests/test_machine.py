"""Tests for lab.machine: the instruction clock, the hypercall port, memory, faults,
and regression tests for the Unicorn 2.1.4 behaviour the lab relies on (UNICORN.md)."""
import struct

import pytest

import lab
from lab.machine import RAM_BASE, RAM_END, X86_EFLAGS_IF, Machine

CODE = RAM_BASE + 0x1000  # scratch code, away from anything else
ENTRY = RAM_BASE + 0x2000

# hand-encoded instructions
NOP = "90"
HLT = "f4"
OUT_E9_EAX = "e7e9"          # out 0xe9, eax: the hypercall
SYSCALL = "0f05"
SPIN = "ebfe"                # jmp $
INC_EAX_LOOP = "ffc0ebfc"    # 1: inc eax; jmp 1b


def mov_eax(imm):
    return "b8" + struct.pack("<I", imm).hex()


def mov_edi(imm):
    return "bf" + struct.pack("<I", imm).hex()


def hypercall(nr):
    return mov_eax(nr) + OUT_E9_EAX


@pytest.fixture
def machine():
    return Machine()


@pytest.fixture
def calls(machine):
    """Hypercalls 1 and 2 record (number, clock, rdi) and answer nothing."""
    seen = []
    for nr in (1, 2):
        machine.hypercalls[nr] = lambda a, b, c, nr=nr: seen.append((nr, machine.clock, a))
    return seen


def load(machine, hexcode, address=CODE):
    machine.write_code(address, bytes.fromhex(hexcode))


# ---- the clock ----

@pytest.mark.parametrize("nops", [0, 1, 7, 300])
def test_a_hypercall_sees_the_clock_of_its_own_instruction(machine, calls, nops):
    load(machine, NOP * nops + hypercall(1) + SPIN)
    machine.run(nops + 10, rip=CODE)
    # retired before the out: the nops and the mov eax
    assert calls == [(1, nops + 1, 0)]


def test_the_hook_clock_counts_instructions_retired_in_earlier_slices(machine, calls):
    load(machine, NOP * 5 + hypercall(1) + NOP * 3 + hypercall(2) + SPIN)
    assert machine.run(2, rip=CODE) == 2
    assert machine.run(3) == 3
    machine.run(20)
    assert [(nr, clock) for nr, clock, _ in calls] == [(1, 6), (2, 6 + 1 + 3 + 1)]


def test_run_returns_the_count_and_advances_the_clock_by_it(machine):
    load(machine, INC_EAX_LOOP)
    machine.set_regs(rax=0)
    assert machine.run(1000, rip=CODE) == 1000
    assert machine.clock == 1000
    assert machine.reg("rax") == 500   # every other instruction is the inc
    assert machine.run(777) == 777
    assert machine.clock == 1777
    assert machine.reg("rax") == 889


def test_a_hook_that_stops_the_slice_keeps_the_clock_exact(machine, calls):
    def stop_here(a, b, c):
        calls.append(("stop", machine.clock))
        machine.stop()

    machine.hypercalls[1] = stop_here
    load(machine, NOP + hypercall(1) + NOP * 2 + hypercall(2) + SPIN)
    assert machine.run(100, rip=CODE) == 3   # nop, mov, out: the out retires
    assert machine.clock == 3
    machine.run(10)
    assert [(nr, clock) for nr, clock, *_ in calls] == [("stop", 2), (2, 6)]


def test_hlt_ends_the_slice_and_counts_as_retired(machine, calls):
    load(machine, NOP + HLT + NOP + hypercall(1) + SPIN)
    assert machine.run(100, rip=CODE) == 2
    assert machine.reg("rip") == CODE + 2
    machine.run(100)
    assert calls[0][1] == 4   # nop, hlt, nop, mov


def test_a_slice_must_run_at_least_one_instruction(machine):
    with pytest.raises(lab.MachineError, match="at least one instruction"):
        machine.run(0, rip=CODE)


# ---- the hypercall port ----

def test_a_hypercall_handler_gets_rdi_rsi_rdx_and_answers_in_rax(machine):
    machine.hypercalls[3] = lambda a, b, c: a + b + c
    load(machine, "48c7c705000000" "48c7c606000000" "48c7c207000000" + hypercall(3) + SPIN)
    machine.run(6, rip=CODE)
    assert machine.reg("rax") == 18


def test_an_unknown_hypercall_is_a_fault_of_the_running_context_naming_it(machine):
    load(machine, hypercall(99) + SPIN)
    with pytest.raises(lab.MachineFault, match="an unknown hypercall 99"):
        machine.run(10, rip=CODE)


def test_a_hypercall_from_outside_the_kernels_text_is_a_fault(machine, calls):
    machine.hypercall_text = (CODE + 0x1000, CODE + 0x2000)
    load(machine, hypercall(1) + SPIN)
    with pytest.raises(lab.MachineFault, match="a hypercall from outside the kernel's text"):
        machine.run(10, rip=CODE)
    assert calls == []


def test_a_handler_that_finds_its_arguments_impossible_faults_the_caller(machine):
    from lab.errors import GuestFault

    def refuse(a, b, c):
        raise GuestFault(f"task {a:#x} is no task")
    machine.hypercalls[3] = refuse
    load(machine, mov_edi(0x137F2F) + hypercall(3) + SPIN)
    with pytest.raises(lab.MachineFault, match=r"a bad hypercall 3: task 0x137f2f is no task"):
        machine.run(10, rip=CODE)


# ---- faults ----

def test_a_read_of_the_unmapped_first_page_faults_with_its_address(machine):
    load(machine, NOP * 2 + "488b042510000000" + SPIN)   # mov rax, [0x10]
    with pytest.raises(lab.MachineFault) as info:
        machine.run(100, rip=CODE)
    fault = info.value
    assert fault.kind == "read of unmapped memory"
    assert fault.address == 0x10
    assert fault.rip == CODE + 2
    assert machine.clock == 2   # the nops retired, the faulting load did not


def test_a_jump_to_unmapped_memory_faults_as_a_fetch(machine):
    load(machine, mov_eax(0x1000) + "ffe0")   # jmp rax
    with pytest.raises(lab.MachineFault, match="fetch from unmapped memory") as info:
        machine.run(100, rip=CODE)
    assert info.value.rip == 0x1000


def test_a_jump_to_address_zero_faults_as_a_fetch(machine):
    load(machine, "31c0" "ffe0")   # xor eax, eax; jmp rax
    with pytest.raises(lab.MachineFault, match="fetch from unmapped memory"):
        machine.run(100, rip=CODE)


# ---- memory ----

def test_typed_accessors_read_back_what_they_wrote(machine):
    machine.set_u64(CODE, 2**64 - 1)
    machine.set_u32(CODE + 8, 0xDEADBEEF)
    machine.set_u8(CODE + 12, 0x1FF)
    assert machine.u64(CODE) == 2**64 - 1
    assert machine.u32(CODE + 8) == 0xDEADBEEF
    assert machine.u8(CODE + 12) == 0xFF
    assert machine.i32(CODE) == -1
    machine.write(CODE + 16, b"hello\0world")
    assert machine.cstring(CODE + 16) == "hello"


def test_guest_stores_are_visible_through_the_ram_view(machine):
    # mov dword ptr [rip + 0x100], 0x12345678 ; jmp $
    load(machine, "c705" + struct.pack("<i", 0x100).hex() + "78563412" + SPIN)
    machine.run(1, rip=CODE)
    assert machine.u32(CODE + 10 + 0x100) == 0x12345678


def test_access_outside_ram_raises_naming_the_range(machine):
    with pytest.raises(lab.MachineError, match="outside RAM"):
        machine.read(RAM_END - 4, 8)
    with pytest.raises(lab.MachineError, match="outside RAM"):
        machine.write(RAM_BASE - 1, b"x")


# ---- Unicorn 2.1.4 facts the lab relies on ----

def test_rewriting_code_with_write_code_takes_effect(machine, calls):
    load(machine, mov_edi(1) + hypercall(1) + SPIN)
    machine.run(3, rip=CODE)
    machine.write_code(CODE + 1, struct.pack("<I", 2))   # the imm32 of mov edi
    machine.run(3, rip=CODE)
    assert [a for _, _, a in calls] == [1, 2]


def test_a_plain_write_over_translated_code_does_not_take_effect(machine, calls):
    # Unicorn keeps running its stale translation: the reason write_code exists.
    load(machine, mov_edi(1) + hypercall(1) + SPIN)
    machine.run(3, rip=CODE)
    machine.write(CODE + 1, struct.pack("<I", 2))
    machine.run(3, rip=CODE)
    assert [a for _, _, a in calls] == [1, 1]


def test_syscall_jumps_to_syscall_entry_with_rcx_and_r11_as_the_cpu_sets_them(machine):
    seen = []
    machine.hypercalls[1] = lambda a, b, c: seen.append(machine.regs())
    machine.syscall_entry = ENTRY
    load(machine, NOP + SYSCALL + SPIN)
    load(machine, hypercall(1) + SPIN, address=ENTRY)
    machine.set_regs(rflags=0x2 | X86_EFLAGS_IF | 0x1)
    machine.run(4, rip=CODE)
    assert len(seen) == 1, "the entry code never ran"
    regs = seen[0]
    assert regs["rcx"] == CODE + 1 + 2                 # the instruction after syscall
    assert regs["r11"] == 0x2 | X86_EFLAGS_IF | 0x1     # rflags at the syscall
    assert not regs["rflags"] & X86_EFLAGS_IF          # FMASK clears IF
    assert ENTRY <= regs["rip"] < ENTRY + 16


def test_a_code_hook_added_after_its_code_ran_still_fires_and_can_be_removed(machine):
    load(machine, NOP * 3 + SPIN)
    machine.run(5, rip=CODE)          # translated now
    hits = []
    handle = machine.add_code_hook(CODE + 1, hits.append)
    machine.run(5, rip=CODE)
    assert hits == [CODE + 1]
    machine.remove_code_hook(handle)
    machine.run(5, rip=CODE)
    assert hits == [CODE + 1]


def test_an_interrupt_pushes_the_cpu_frame_on_the_given_stack_and_clears_if(machine):
    machine.set_regs(rip=CODE, rsp=RAM_BASE + 0x5008, rflags=0x2 | X86_EFLAGS_IF)
    stack = RAM_BASE + 0x8008
    machine.interrupt(ENTRY, cs=0x33, ss=0x2B, stack=stack)
    frame = (stack & ~0xF) - 40
    assert machine.reg("rsp") == frame
    assert machine.reg("rip") == ENTRY
    assert not machine.interrupts_enabled()
    assert struct.unpack("<5Q", machine.read(frame, 40)) == (
        CODE, 0x33, 0x2 | X86_EFLAGS_IF, RAM_BASE + 0x5008, 0x2B)


def test_a_saved_context_restores_the_registers(machine):
    machine.set_regs(rax=1, rbx=2, rip=CODE)
    ctx = machine.save_context()
    machine.set_regs(rax=10, rbx=20, rip=ENTRY)
    machine.restore_context(ctx)
    regs = machine.regs()
    assert (regs["rax"], regs["rbx"], regs["rip"]) == (1, 2, CODE)


def test_replacing_ram_runs_the_new_code_and_keeps_what_did_not_change(machine, calls):
    """replace_ram() copies only the pages that differ and drops only their
    translations: the code replaced runs as it now is, the rest as before."""
    load(machine, mov_edi(1) + hypercall(1) + "e9" + struct.pack("<i", 0x1000 - 12 - 5).hex())  # ...; jmp ENTRY
    load(machine, mov_edi(2) + hypercall(2) + HLT, ENTRY)
    machine.run(100, rip=CODE)
    assert [(nr, rdi) for nr, _clock, rdi in calls] == [(1, 1), (2, 2)]
    image = bytearray(machine.ram)
    off = CODE - RAM_BASE
    image[off:off + 5] = bytes.fromhex(mov_edi(7))           # the first page's code, changed
    image[RAM_END - RAM_BASE - 8:] = b"\xaa" * 8               # data in the last page
    machine.replace_ram(image)
    assert bytes(machine.ram) == bytes(image)
    calls.clear()
    machine.run(100, rip=CODE)
    assert [(nr, rdi) for nr, _clock, rdi in calls] == [(1, 7), (2, 2)]
    with pytest.raises(lab.LabError, match="bytes for"):
        machine.replace_ram(b"\0" * 10)


@pytest.fixture(params=["native", "python"])
def page_loop(request, monkeypatch):
    """Machine._copy_changed_pages in C (lab/_pages.c) and in Python: each
    test of it runs both."""
    from lab import _native
    if request.param == "python":
        monkeypatch.setattr(_native, "pages", lambda: None)
    elif _native.pages() is None:
        pytest.skip("no C compiler: the page loop runs in Python only")
    return request.param


@pytest.mark.parametrize("seed", range(6))
def test_copying_changed_pages_copies_and_drops_the_translations_of_exactly_the_pages_that_differ(seed, page_loop):
    """Machine._copy_changed_pages (a restore, a seek): compared in blocks,
    then 16 KiB pieces, then pages, within the page runs given (or all of
    RAM); every page that differs is copied and its translations dropped,
    and no other."""
    import ctypes
    import random
    rng = random.Random(seed)
    m = Machine()
    size = RAM_END - RAM_BASE
    pages = size // 4096
    other = (ctypes.c_ubyte * size)()
    differ = set(rng.sample(range(pages), rng.randrange(1, 40)))
    differ |= {p + 1 for p in list(differ)[:5] if p + 1 < pages}           # some adjacent ones
    for p in differ:
        other[p * 4096 + rng.randrange(4096)] = rng.randrange(1, 256)
    runs = None
    if seed % 2:
        # page runs that cover every differing page: short ones (1 to 6 pages, smaller
        # than a 16 KiB piece or not a multiple of one) and a long one
        cuts, at = [0], 0
        while at < pages:
            at = min(at + (rng.randrange(1, 7) if at < pages // 2 else pages), pages)
            cuts.append(at)
        runs = list(zip(cuts, cuts[1:]))
    dropped = []
    remove = m._drop_translations
    m._drop_translations = lambda lo, hi: (dropped.append((lo, hi)), remove(lo, hi))
    m._copy_changed_pages(ctypes.addressof(other), runs)
    assert bytes(m.ram) == bytes(other)
    assert {(lo - RAM_BASE) // 4096 + i for lo, hi in dropped for i in range((hi - lo) // 4096)} == differ


def test_in_read_only_text_only_the_bytes_that_differ_lose_their_translations(page_loop):
    """A restore that puts a pad back drops the translations of the bytes
    from the first that differs to the last, not of the whole page: the
    rest of a text page is code that did not change."""
    import ctypes
    m = Machine()
    size = RAM_END - RAM_BASE
    text = RAM_BASE + 0x3000
    m.read_only(text, 0x2000)
    other = (ctypes.c_ubyte * size)()
    ctypes.memmove(other, ctypes.addressof(m._ram), size)
    for address in (text + 0x210, text + 0x214, text + 0x1F00, RAM_BASE + 0x9010):
        other[address - RAM_BASE] = 0xE8
    dropped = []
    remove = m._drop_translations
    m._drop_translations = lambda lo, hi: (dropped.append((lo, hi)), remove(lo, hi))
    m._copy_changed_pages(ctypes.addressof(other))
    assert bytes(m.ram) == bytes(other)
    assert dropped == [(text + 0x210, text + 0x1F01), (RAM_BASE + 0x9000, RAM_BASE + 0xA000)]


@pytest.mark.parametrize("seed", range(8))
def test_the_runs_of_touched_pages_are_every_run_of_ones_in_the_flags(seed):
    """TouchedPages.read() finds runs with bytes.find; a regex says the same."""
    import random
    import re
    from lab.machine import _runs_of_ones
    rng = random.Random(seed)
    n = rng.choice([1, 2, 7, 1792])
    flags = bytes(rng.random() < rng.choice([0.05, 0.5, 0.95]) for _ in range(n))
    assert _runs_of_ones(flags) == [m.span() for m in re.finditer(b"\x01+", flags)]
    assert _runs_of_ones(b"") == [] and _runs_of_ones(b"\x01" * 5) == [(0, 5)] and _runs_of_ones(b"\x00" * 5) == []


@pytest.mark.parametrize("seed", range(8))
def test_the_bytes_that_differ_in_a_page_are_found_by_halving(seed):
    """_differing(): from the first byte that differs to the last, as a byte
    by byte comparison finds them, within any range that differs."""
    import ctypes
    import random
    from lab.machine import _differing
    rng = random.Random(seed)
    a = (ctypes.c_ubyte * 8192)(*(rng.randrange(256) for _ in range(8192)))
    b = (ctypes.c_ubyte * 8192)()
    ctypes.memmove(b, a, 8192)
    lo, hi = rng.choice([(0, 4096), (4096, 8192), (0, 8192), (100, 101)])
    for i in rng.sample(range(lo, hi), min(hi - lo, rng.randrange(1, 4))):
        b[i] ^= 0xFF
    memcmp = ctypes.CDLL(None).memcmp
    memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    differ = [i for i in range(lo, hi) if a[i] != b[i]]
    assert _differing(memcmp, ctypes.addressof(a), ctypes.addressof(b), lo, hi) == (differ[0], differ[-1] + 1)


def _ranges(rng, pages, base):
    """Random disjoint read-only and guard ranges over pages pages from base."""
    kinds = [rng.choice("rrn..") for _ in range(pages)]
    out = {"r": [], "n": []}
    for i, k in enumerate(kinds):
        if k == ".":
            continue
        runs = out[k]
        if runs and runs[-1][1] == base + i * 4096:
            runs[-1][1] += 4096
        else:
            runs.append([base + i * 4096, base + (i + 1) * 4096])
    return tuple(map(tuple, out["r"])), tuple(map(tuple, out["n"]))


@pytest.mark.parametrize("seed", range(10))
def test_a_restore_changes_the_access_of_exactly_the_pages_whose_access_differs(seed):
    """_protection_changes(): applied page by page to the access the ranges
    give now, the calls give the access the target ranges give, and they
    touch no page whose access is already right."""
    import random
    from lab.machine import _protection_changes
    from unicorn import UC_PROT_ALL, UC_PROT_EXEC, UC_PROT_NONE, UC_PROT_READ
    rng = random.Random(seed)
    pages, base = 40, RAM_BASE + 0x100000

    def access(read_only, guards):
        got = {}
        for prot, ranges in ((UC_PROT_READ | UC_PROT_EXEC, read_only), (UC_PROT_NONE, guards)):
            for lo, hi in ranges:
                for p in range(lo, hi, 4096):
                    got[p] = prot
        return [got.get(base + i * 4096, UC_PROT_ALL) for i in range(pages)]
    now, then = _ranges(rng, pages, base), _ranges(rng, pages, base)
    if seed == 0:
        then = now
    pages_now, want = access(*now), access(*then)
    calls = _protection_changes(*now, *then)
    got = list(pages_now)
    touched = set()
    for lo, hi, prot in calls:
        for p in range(lo, hi, 4096):
            got[(p - base) // 4096] = prot
            touched.add((p - base) // 4096)
    assert got == want
    assert touched == {i for i in range(pages) if pages_now[i] != want[i]}
    # adjacent pages that end the same way are one call
    assert all(not (a[1] == b[0] and a[2] == b[2]) for a, b in zip(calls, calls[1:]))


@pytest.mark.parametrize("seed", range(4))
def test_the_page_loop_in_c_does_what_the_python_one_does(seed, monkeypatch):
    """The same RAM, the same copy, the same runs: the same bytes after and
    the same translations dropped, in the same order, text runs narrowed
    alike (adjacent changed pages across the runs given, a run that ends
    RAM, pages that differ in their last byte only)."""
    import ctypes
    import random
    from lab import _native
    if _native.pages() is None:
        pytest.skip("no C compiler")
    rng = random.Random(seed)
    size = RAM_END - RAM_BASE
    pages = size // 4096
    other = (ctypes.c_ubyte * size)(*(rng.randrange(256) if rng.random() < 0.001 else 0 for _ in range(size)))
    for p in rng.sample(range(pages), 30):
        other[p * 4096 + rng.choice([0, 4095, rng.randrange(4096)])] ^= 0x5A
    other[0x4000 + rng.randrange(4096)] ^= 0x77                          # text, changed on both sides
    runs = [(2, 8)] + [(a, a + rng.randrange(1, 9)) for a in sorted(rng.sample(range(9, pages - 12, 9), 40))]
    runs.append((pages - 3, pages))
    ends = []
    for native in (True, False):
        if not native:
            monkeypatch.setattr(_native, "pages", lambda: None)
        m = Machine()
        m.read_only(RAM_BASE + 0x3000, 0x4000)
        m.write(RAM_BASE + 0x5000, bytes(range(256)) * 16)
        dropped = []
        remove = m._drop_translations
        m._drop_translations = lambda lo, hi, dropped=dropped, remove=remove: (dropped.append((lo, hi)),
                                                                                remove(lo, hi))
        m._copy_changed_pages(ctypes.addressof(other), runs)
        ends.append((bytes(m.ram), dropped))
    assert ends[0][1] and ends[0] == ends[1]


def test_without_a_working_compiler_the_page_loop_runs_in_python(tmp_path, monkeypatch):
    """A compiler that fails (or LAB_NATIVE=0) leaves lab/_pages.c unbuilt:
    pages() says so and a restore still brings RAM back."""
    from lab import _native
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'cc: no' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(_native, "_cache_dirs", lambda: iter([tmp_path / "cache" / "kgraft-lab"]))
    monkeypatch.setattr(_native, "_pages", _native._UNSET)
    assert _native.pages() is None
    assert not list((tmp_path / "cache" / "kgraft-lab").glob("*.so"))
    monkeypatch.setattr(_native, "_pages", _native._UNSET)
    monkeypatch.setenv("LAB_NATIVE", "0")
    monkeypatch.delenv("CC")
    assert _native.pages() is None
    from lab.snapshot import snapshot
    with lab.boot() as system:
        snap = snapshot(system)
        ram = bytes(system.machine.ram)
        system.run(300_000)
        snap.restore()
        assert bytes(system.machine.ram) == ram


def test_a_cached_page_library_that_does_not_load_is_built_again(tmp_path, monkeypatch):
    import shutil
    from lab import _native
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    cache = tmp_path / "kgraft-lab"
    monkeypatch.setattr(_native, "_cache_dirs", lambda: iter([cache]))
    monkeypatch.setattr(_native, "_pages", _native._UNSET)
    lib = _native._build(_native.SOURCE)
    lib.write_bytes(b"cut short")
    assert _native.pages() is not None
    assert lib.read_bytes().startswith(b"\x7fELF")
