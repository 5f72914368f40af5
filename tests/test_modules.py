"""The module loader (the lab's insmod): layout in the module area, the
relocations applied, kernel symbols resolved, and objects it must refuse
without writing a byte to guest memory."""
import re
import struct

import lief
import pytest

from lab import LabError
from lab.disasm import disassemble
from lab.modules import MODULE_AREA, ModuleError

from livepatch_helpers import build_patch  # noqa: F401  (the fixture)
from livepatch_helpers import CAPABLE, CMDLINE, KALLSYMS, LIMIT, PROTO_PAIR, boot, gcc_test, module_area, pad_bytes


@pytest.fixture
def system():
    s = boot()
    s.run(600_000)
    return s


def function_code(system, module, name):
    f = module.symbols[name]
    return disassemble(system.machine.read(f.address, f.size), f.address)


def object_section(path, name):
    """(file offset, size, content) of a section of an object file."""
    binary = lief.parse(str(path))   # keep the binary alive while its sections are read
    sec = next(s for s in binary.sections if s.name == name)
    return sec.offset, sec.size, bytes(sec.content)


def branch_targets(insns, mnemonic):
    return [int(i.operands, 16) for i in insns if i.mnemonic == mnemonic and re.fullmatch(r"0x[0-9a-f]+", i.operands)]


def rip_targets(insns):
    out = []
    for i in insns:
        m = re.search(r"\[rip ([+-]) (0x[0-9a-f]+)\]", i.operands)
        if m:
            disp = int(m.group(2), 16)
            out.append(i.address + i.size + (disp if m.group(1) == "+" else -disp))
    return out


# ---- layout and relocations ----

def test_a_module_is_placed_in_the_module_area_with_its_init_module_inside_it(system):
    module = system.modules.load(CAPABLE)
    assert module.base == MODULE_AREA[0]
    assert MODULE_AREA[0] <= module.base < module.base + module.size <= MODULE_AREA[1]
    assert module.init == module.symbols["init_module"].address == module.symbols["kgr_patcher_init"].address
    assert module.base <= module.init < module.base + module.size
    for name, (address, size) in module.sections.items():
        assert module.base <= address and address + size <= module.base + module.size, name
    # the loaded .text is the object's code, relocated in place
    _, text_size, text = object_section(CAPABLE, ".text")
    address, size = module.sections[".text"]
    assert size == text_size
    assert system.machine.read(address, 5) == text[:5] == bytes.fromhex("0f1f440000")


def test_plt32_relocations_make_the_module_call_the_kernels_printk_and_ns_capable(system):
    module = system.modules.load(CAPABLE)
    insns = function_code(system, module, "kgr_new_capable")
    assert system.image.address("printk") in branch_targets(insns, "call")
    assert system.image.address("ns_capable") in branch_targets(insns, "jmp")
    init = function_code(system, module, "kgr_patcher_init")
    calls = branch_targets(init, "call") + branch_targets(init, "jmp")
    assert system.image.address("kgr_patch_kernel") in calls


def test_pc32_relocations_point_rip_relative_accesses_at_the_modules_own_data(system):
    module = system.modules.load(CAPABLE)
    insns = function_code(system, module, "kgr_new_capable")
    targets = rip_targets(insns)
    assert targets and set(targets) == {module.symbols["kgr_capable_calls"].address}


def test_abs32_relocations_load_kernel_and_module_addresses_as_immediates(system):
    module = system.modules.load(CAPABLE)
    insns = function_code(system, module, "kgr_new_capable")
    immediates = [int(i.operands.split(", ")[1], 16) for i in insns
                  if i.mnemonic == "mov" and re.fullmatch(r"edi, 0x[0-9a-f]+", i.operands)]
    assert system.image.address("init_user_ns") in immediates
    strings = [system.machine.cstring(a) for a in immediates if a in module]
    assert any(s.endswith("we added a printk to capable()\n") for s in strings), strings


def test_abs32s_relocations_index_kernel_arrays(system):
    module = system.modules.load(PROTO_PAIR)
    insns = function_code(system, module, "kgr_do_gethostname")
    nodename = system.image.address("utsname_nodename")
    assert any(f"+ {nodename:#x}]" in i.operands for i in insns)


def test_abs64_relocations_fill_the_patch_description_the_core_reads(system):
    module = system.modules.load(CAPABLE)
    m, c = system.machine, system.kernel.c
    desc = module.symbols["patch"].address
    assert m.cstring(m.u64(desc + c["KGR_PATCH_name"])) == "sample_kgraft_patch"
    first = desc + c["KGR_PATCH_patches"]
    assert m.cstring(m.u64(first + c["KGR_FUN_name"])) == "capable"
    assert m.u64(first + c["KGR_FUN_new_fun"]) == module.symbols["kgr_new_capable"].address
    assert m.u64(first + c["KGR_FUN_SIZE"] + c["KGR_FUN_name"]) == 0, "KGR_PATCH_END"


def test_the_modules_own_fentry_pads_are_listed_at_its_functions(system):
    module = system.modules.load(CAPABLE)
    assert dict((name, addr) for addr, name in module.pads) == {
        name: module.symbols[name].address for name in ("kgr_new_capable", "kgr_patcher_init", "kgr_patcher_cleanup")}
    assert all(system.machine.read(addr, 5) == bytes.fromhex("0f1f440000") for addr, _ in module.pads)


def test_modules_never_overlap_and_an_unloaded_modules_range_is_reused(system):
    first = system.modules.load(CAPABLE)
    second = system.modules.load(CMDLINE)
    assert second.base >= first.base + first.size
    system.modules.unload(first)
    assert module_area(system)[:first.size] == bytes(first.size)
    assert system.modules.module_at(first.base) is None
    third = system.modules.load(CAPABLE)
    assert third.base == first.base       # the lowest free range that fits
    assert system.modules.module_at(third.init) is third
    assert system.modules.module_at(second.init) is second


# ---- unexported symbols ----

def test_a_patch_reaches_a_static_kernel_function_through_kallsyms_lookup_name():
    system = boot(signal_after=300_000)
    system.run(1_000_000)
    patch = system.apply_patch(KALLSYMS)
    system.run_until_patched(LIMIT)
    system.run(300_000)
    assert patch.state.value == "complete"
    address = system.image.address("checksum_range")
    assert f"kgr_kallsyms: called the static checksum_range() at {address:#x}" in system.console


@gcc_test
def test_calling_a_static_kernel_function_directly_is_refused_pointing_at_kallsyms(system, build_patch):
    obj = build_patch("kgr_static_direct")
    ram, pads = module_area(system), pad_bytes(system)
    with pytest.raises(ModuleError) as info:
        system.apply_patch(obj)
    message = str(info.value)
    assert "checksum_range" in message and "static" in message and "kallsyms_lookup_name" in message
    assert module_area(system) == ram and pad_bytes(system) == pads
    assert system.patches == [] and system.modules.modules == []


# ---- objects the loader refuses, leaving memory as it was ----

def _truncated(tmp_path):
    data = CAPABLE.read_bytes()
    path = tmp_path / "truncated.o"
    path.write_bytes(data[:len(data) // 2])
    return path


def _random(tmp_path):
    path = tmp_path / "random.o"
    path.write_bytes(bytes((i * 7919 + 13) % 251 for i in range(4096)))
    return path


def _random_with_elf_magic(tmp_path):
    path = tmp_path / "elfnoise.o"
    path.write_bytes(b"\x7fELF" + bytes((i * 104729 + 7) % 253 for i in range(4096)))
    return path


def _text(tmp_path):
    path = tmp_path / "notes.o"
    path.write_text("this is not an object file\n")
    return path


def _kernel_image(tmp_path):
    from lab.image import DEFAULT_IMAGE
    return DEFAULT_IMAGE   # ELF and x86-64, but linked, not relocatable


def _missing(tmp_path):
    return tmp_path / "no_such_patch.o"


BAD_OBJECTS = {"truncated": _truncated, "random-bytes": _random, "elf-magic-then-noise": _random_with_elf_magic,
               "text-file": _text, "linked-executable": _kernel_image, "missing-file": _missing}


@pytest.mark.parametrize("make", BAD_OBJECTS.values(), ids=BAD_OBJECTS.keys())
def test_a_bad_object_is_refused_with_one_lab_error_and_memory_is_left_as_it_was(system, tmp_path, make):
    path = make(tmp_path)
    ram, pads = module_area(system), pad_bytes(system)
    with pytest.raises(LabError) as info:
        system.apply_patch(path)
    assert path.name in str(info.value)
    assert module_area(system) == ram
    assert pad_bytes(system) == pads
    assert system.patches == [] and system.modules.modules == []
    # the kernel runs on, and a good patch still loads at the start of the area
    system.run(100_000)
    assert system.apply_patch(CAPABLE).module.base == MODULE_AREA[0]


def _with_first_text_relocation_at(tmp_path, offset):
    """kgr_capable.o with the first relocation of .text moved to offset."""
    data = bytearray(CAPABLE.read_bytes())
    rela_offset, _, _ = object_section(CAPABLE, ".rela.text")
    struct.pack_into("<Q", data, rela_offset, offset)
    path = tmp_path / f"reloc_at_{offset:#x}.o"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("where", ["just-past-the-section", "far-outside"])
def test_a_relocation_outside_its_section_is_refused_and_memory_is_left_as_it_was(system, tmp_path, where):
    _, text_size, _ = object_section(CAPABLE, ".text")
    path = _with_first_text_relocation_at(tmp_path, text_size if where == "just-past-the-section" else 0x10000)
    ram, pads = module_area(system), pad_bytes(system)
    with pytest.raises(ModuleError, match="relocation"):
        system.apply_patch(path)
    assert module_area(system) == ram and pad_bytes(system) == pads



@gcc_test
def test_lab_patch_build_gives_the_committed_bytes_from_any_directory(tmp_path, monkeypatch):
    from lab.patchbuild import build_patch
    monkeypatch.chdir(tmp_path)
    out = build_patch(CAPABLE.with_suffix(".c"), tmp_path / "kgr_capable.o")
    assert out.read_bytes() == CAPABLE.read_bytes()


@gcc_test
def test_lab_patch_build_writes_into_the_current_directory_unless_told(tmp_path, monkeypatch):
    """As gcc -c: the object goes where the command runs; the committed one
    next to the source is rewritten only with -o."""
    from lab.cli import main
    monkeypatch.chdir(tmp_path)
    before, mtime = CAPABLE.read_bytes(), CAPABLE.stat().st_mtime_ns
    assert main(["patch", "build", str(CAPABLE.with_suffix(".c"))]) == 0
    assert (tmp_path / "kgr_capable.o").read_bytes() == before
    assert CAPABLE.stat().st_mtime_ns == mtime        # the committed object was not written
