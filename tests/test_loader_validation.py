"""The loader as a referee of malformed objects: every rule of check_object()
refuses a mutant of patches/kgr_capable.o in one line that names the file,
the section and what to do, before lief sees it and before a byte of guest
memory changes; a good patch still loads afterwards."""
import hashlib
import struct

import pytest

from lab import LabError
from lab import modules as loader
from lab.modules import MODULE_AREA, ModuleError, check_object

from livepatch_helpers import CAPABLE, boot

ORIGINAL = CAPABLE.read_bytes()

# ---- the object's layout, read here with struct (independently of the loader) ----
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
SHDR = struct.Struct("<IIQQQQIIQQ")
E_TYPE, E_MACHINE, E_VERSION, E_SHOFF, E_EHSIZE, E_PHNUM, E_SHENTSIZE, E_SHNUM, E_SHSTRNDX = \
    16, 18, 20, 40, 52, 56, 58, 60, 62
SH_NAME, SH_TYPE, SH_FLAGS, SH_OFFSET, SH_SIZE, SH_LINK, SH_INFO, SH_ALIGN, SH_ENTSIZE = 0, 4, 8, 24, 32, 40, 44, 48, 56
ST_NAME, ST_INFO, ST_SHNDX, ST_VALUE, ST_SIZE = 0, 4, 6, 8, 16
R_OFFSET, R_INFO = 0, 8


def headers(data=ORIGINAL):
    """[(name, offset of its header in the file, fields)] of every section."""
    fields = EHDR.unpack_from(data)
    shoff, shnum, shstrndx = fields[6], fields[12], fields[13]
    rows = [SHDR.unpack_from(data, shoff + i * SHDR.size) for i in range(shnum)]
    strtab = data[rows[shstrndx][4]:rows[shstrndx][4] + rows[shstrndx][5]]
    return [(strtab[r[0]:strtab.index(b"\0", r[0])].decode(), shoff + i * SHDR.size, r) for i, r in enumerate(rows)]


def section(name):
    """(index, header offset, file offset, size) of a section of kgr_capable.o."""
    for i, (n, at, r) in enumerate(headers()):
        if n == name:
            return i, at, r[4], r[5]
    raise KeyError(name)


def symbol_entry(name):
    """File offset of the symbol table entry of name."""
    _, _, off, size = section(".symtab")
    _, _, stroff, strsize = section(".strtab")
    strtab = ORIGINAL[stroff:stroff + strsize]
    for at in range(off, off + size, 24):
        st_name = struct.unpack_from("<I", ORIGINAL, at)[0]
        if strtab[st_name:strtab.index(b"\0", st_name)] == name.encode():
            return at
    raise KeyError(name)


def label(name):
    return f"'{name}' [{section(name)[0]}]"


# ---- the mutants: (what to write, where the message must point) ----

def pack(data, fmt, offset, value):
    struct.pack_into(fmt, data, offset, value)


def sh(name, field, fmt, value):
    return lambda d: pack(d, fmt, section(name)[1] + field, value)


def mutate_text_overlapping_data(d):
    pack(d, "<Q", section(".data")[1] + SH_OFFSET, section(".text")[2] + 0x10)


def mutate_strtab_unterminated(d):
    _, _, off, size = section(".strtab")
    d[off + size - 1] = ord("x")


def mutate_symbol_outside_section(d):   # an audit case: a symbol outside its section
    pack(d, "<Q", symbol_entry("kgr_new_capable") + ST_VALUE, section(".text")[3] - 8)


def mutate_symbol_shndx(d):
    pack(d, "<H", symbol_entry("kgr_patcher_init") + ST_SHNDX, 200)


def mutate_symbol_name(d):
    pack(d, "<I", symbol_entry("kgr_patcher_init") + ST_NAME, 0x10000)


def mutate_symbol_name_bytes(d):
    _, _, off, size = section(".strtab")
    at = ORIGINAL.index(b"kgr_patcher_init\0", off)
    d[at + 3] = 0x0A   # a newline in a name: the message must still be one line


def mutate_symbol_common(d):
    pack(d, "<H", symbol_entry("kgr_capable_calls") + ST_SHNDX, 0xFFF2)


def mutate_symbol_tls(d):
    at = symbol_entry("kgr_capable_calls") + ST_INFO
    d[at] = (d[at] & 0xF0) | 6


def first_rela(name):
    return section(name)[2]


def mutate_rela_offset(d):
    pack(d, "<Q", first_rela(".rela.text") + R_OFFSET, section(".text")[3] - 2)


def mutate_rela_symbol(d):
    info = struct.unpack_from("<Q", ORIGINAL, first_rela(".rela.text") + R_INFO)[0]
    pack(d, "<Q", first_rela(".rela.text") + R_INFO, (5000 << 32) | (info & 0xFFFFFFFF))


def mutate_rela_type(d):
    info = struct.unpack_from("<Q", ORIGINAL, first_rela(".rela.text") + R_INFO)[0]
    pack(d, "<Q", first_rela(".rela.text") + R_INFO, (info & ~0xFFFFFFFF) | 16)   # R_X86_64_DTPMOD64


def mutate_mcount_mid_function(d):
    pack(d, "<q", first_rela(".rela__mcount_loc") + 16, 0x10)   # r_addend: .text+0x10, inside kgr_new_capable


def mutate_mcount_into_data(d):
    info = struct.unpack_from("<Q", ORIGINAL, first_rela(".rela__mcount_loc") + R_INFO)[0]
    data_symbol = 3   # the section symbol of .data
    pack(d, "<Q", first_rela(".rela__mcount_loc") + R_INFO, (data_symbol << 32) | (info & 0xFFFFFFFF))


def mutate_init_module_object(d):
    at = symbol_entry("init_module") + ST_INFO
    d[at] = (d[at] & 0xF0) | 1   # STT_OBJECT


def mutate_null_section(d):
    pack(d, "<Q", headers()[0][1] + SH_SIZE, 99)


def mutate_null_symbol(d):
    pack(d, "<H", section(".symtab")[2] + ST_SHNDX, 1)


# name: (mutate(bytearray), the words the message must hold)
RULES = {
    "wrong magic": (lambda d: d.__setitem__(slice(1, 4), b"ELG"), ["ELF header", "magic"]),
    "32-bit class": (lambda d: d.__setitem__(4, 1), ["ELF header", "ELFCLASS64"]),
    "big-endian header": (lambda d: d.__setitem__(5, 2), ["ELF header", "big-endian"]),   # an audit case
    "ident version": (lambda d: d.__setitem__(6, 0), ["ELF header", "version"]),
    "header version": (lambda d: pack(d, "<I", E_VERSION, 7), ["ELF header", "version"]),
    "executable, not relocatable": (lambda d: pack(d, "<H", E_TYPE, 2), ["ELF header", "ET_REL"]),
    "i386 machine": (lambda d: pack(d, "<H", E_MACHINE, 3), ["ELF header", "EM_X86_64"]),
    "ehsize": (lambda d: pack(d, "<H", E_EHSIZE, 52), ["ELF header", "e_ehsize"]),
    "program headers": (lambda d: pack(d, "<H", E_PHNUM, 2), ["ELF header", "program headers"]),
    "shentsize": (lambda d: pack(d, "<H", E_SHENTSIZE, 40), ["ELF header", "e_shentsize"]),
    "section table past the end": (lambda d: pack(d, "<Q", E_SHOFF, len(ORIGINAL) - 64),
                                   ["section header table", "past the end of the file"]),
    "no section table": (lambda d: pack(d, "<H", E_SHNUM, 0), ["section header table", "absent"]),
    "shstrndx out of range": (lambda d: pack(d, "<H", E_SHSTRNDX, 27), ["ELF header", "e_shstrndx 27"]),
    "shstrndx not a string table": (lambda d: pack(d, "<H", E_SHSTRNDX, 1), ["section [1]", "STRTAB"]),
    "null section not empty": (mutate_null_section, ["section [0]", "null section"]),
    "size past the end of the file": (sh(".text", SH_SIZE, "<Q", 1 << 20),   # an audit case
                                      [label(".text"), "past the end of the file"]),
    "offset past the end of the file": (sh(".data", SH_OFFSET, "<Q", len(ORIGINAL) - 8),
                                        [label(".data"), "past the end of the file"]),
    "overlapping sections": (mutate_text_overlapping_data, [label(".data"), "overlap", label(".text")]),
    "section over the section table": (sh(".comment", SH_OFFSET, "<Q", headers()[1][1]),
                                       [label(".comment"), "overlap", "section header table"]),
    "string table not NUL-terminated": (mutate_strtab_unterminated, [label(".strtab"), "NUL"]),
    "section name out of range": (sh(".data", SH_NAME, "<I", 0x5000), ["section [3]", "section name table"]),
    "symbol name out of range": (mutate_symbol_name, [label(".symtab"), "outside", label(".strtab")]),
    "symbol name with a newline": (mutate_symbol_name_bytes, [label(".symtab"), "\\x0a"]),
    "symtab linked to a non-string table": (sh(".symtab", SH_LINK, "<I", 1), [label(".symtab"), "sh_link 1"]),
    "symtab sh_info past its symbols": (sh(".symtab", SH_INFO, "<I", 500), [label(".symtab"), "sh_info 500"]),
    "symtab entry size": (sh(".symtab", SH_ENTSIZE, "<Q", 16), [label(".symtab"), "entry size 16"]),
    "symtab size not whole entries": (sh(".symtab", SH_SIZE, "<Q", section(".symtab")[3] - 4),
                                      [label(".symtab"), "24-byte entries"]),
    "rela linked to a non-symbol table": (sh(".rela.text", SH_LINK, "<I", 25), [label(".rela.text"), "sh_link 25"]),
    "rela relocating no section": (sh(".rela.text", SH_INFO, "<I", 99), [label(".rela.text"), "sh_info 99"]),
    "rela relocating the symbol table": (sh(".rela.text", SH_INFO, "<I", 24), [label(".rela.text"), label(".symtab")]),
    "rela entry size": (sh(".rela.data", SH_ENTSIZE, "<Q", 16), [label(".rela.data"), "entry size 16"]),
    "a REL section": (sh(".rela.data", SH_TYPE, "<I", 9), [label(".rela.data"), "REL relocations"]),
    "symbol section index out of range": (mutate_symbol_shndx, [label(".symtab"), "section index 0xc8"]),
    "symbol outside its section": (mutate_symbol_outside_section,   # an audit case
                                   [label(".text"), "'kgr_new_capable'", "outside the section"]),
    "common symbol": (mutate_symbol_common, [label(".symtab"), "common", "-fno-common"]),
    "thread-local symbol": (mutate_symbol_tls, [label(".symtab"), "thread-local"]),
    "null symbol not empty": (mutate_null_symbol, [label(".symtab"), "null symbol"]),
    "relocation outside its section": (mutate_rela_offset, [label(".text"), "relocation", "outside the section"]),
    "relocation symbol out of range": (mutate_rela_symbol, [label(".rela.text"), "symbol index 5000"]),
    "unsupported relocation type": (mutate_rela_type, [label(".rela.text"), "type 16", "not supported"]),
    "alignment not a power of two": (sh(".data", SH_ALIGN, "<Q", 24), [label(".data"), "power of two"]),
    "alignment beyond a page": (sh(".data", SH_ALIGN, "<Q", 1 << 20), [label(".data"), "larger than a page"]),
    "allocated size beyond the module area": (sh(".bss", SH_SIZE, "<Q", 1 << 40),
                                              [label(".bss"), "past the module area"]),
    "mcount_loc not whole addresses": (sh("__mcount_loc", SH_SIZE, "<Q", 0x14),
                                       [label("__mcount_loc"), "8-byte pad addresses"]),
    "mcount entry inside a function": (mutate_mcount_mid_function,
                                       [label("__mcount_loc"), "entry 0", "5-byte NOP at the start of a function"]),
    "mcount entry in data": (mutate_mcount_into_data, [label("__mcount_loc"), "entry 0", "not a 5-byte NOP"]),
    "init_module not a function": (mutate_init_module_object, [label(".text"), "init_module is not a function"]),
    "allocated section of a foreign type": (sh(".data", SH_TYPE, "<I", 0x6FFFFFF0), [label(".data"), "cannot place"]),
}


def state(system):
    """What a refusal must leave as it was: the lab's state digest and all of RAM."""
    return system.state_digest(), hashlib.sha256(bytes(system.machine.ram)).hexdigest()


@pytest.fixture(scope="module")
def settled_system():
    system = boot()
    system.run(300_000)
    return system


def refused(system, path, words):
    before = state(system)
    with pytest.raises(ModuleError) as info:
        system.apply_patch(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path.name}: "), message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "lab patch build" in message, message
    assert state(system) == before
    assert system.patches == [] and system.modules.modules == []
    return message


@pytest.mark.parametrize("rule", RULES, ids=[r.replace(" ", "-") for r in RULES])
def test_each_malformation_is_refused_in_one_line_naming_the_section_and_nothing_is_written(
        settled_system, tmp_path, rule):
    mutate, words = RULES[rule]
    data = bytearray(ORIGINAL)
    mutate(data)
    assert bytes(data) != ORIGINAL
    path = tmp_path / "mutant.o"
    path.write_bytes(bytes(data))
    refused(settled_system, path, words)


@pytest.mark.parametrize("limit,value,words", [
    ("MAX_SECTIONS", 20, ["section header table", "27 sections", "more than the 20"]),
    ("MAX_SYMBOLS", 10, [label(".symtab"), "26 symbols", "more than the 10"]),
    ("MAX_RELOCATIONS", 5, [label(".rela.text"), "more than the 5 relocations"]),
    ("MAX_OBJECT_BYTES", 4096, ["the file", "more than the 0x1000"]),
])
def test_objects_beyond_the_loaders_limits_are_refused(settled_system, monkeypatch, tmp_path, limit, value, words):
    monkeypatch.setattr(loader, limit, value)
    path = tmp_path / "big.o"
    path.write_bytes(ORIGINAL)
    refused(settled_system, path, words)


def test_the_three_audit_cases_are_refused_and_a_good_patch_then_loads(tmp_path):
    system = boot()
    system.run(300_000)
    for rule in ("symbol outside its section", "size past the end of the file", "big-endian header"):
        data = bytearray(ORIGINAL)
        RULES[rule][0](data)
        path = tmp_path / f"{rule.replace(' ', '_')}.o"
        path.write_bytes(bytes(data))
        refused(system, path, RULES[rule][1])
    patch = system.apply_patch(CAPABLE)
    assert patch.module.base == MODULE_AREA[0]
    system.run_until_patched(6_000_000)
    assert patch.state.value in ("transition", "complete")


def test_every_bundled_patch_passes_the_checks_and_lief_reads_it_the_same_way():
    for path in sorted(CAPABLE.parent.glob("*.o")):
        obj = check_object(path.read_bytes(), path.name)
        assert loader._lief_agrees(obj) is None, path.name
        assert any(s.name == "init_module" for s in obj.symbols), path.name


def test_lief_raising_is_a_refusal_not_a_crash(settled_system, tmp_path, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("lief broke")
    monkeypatch.setattr(loader.lief.ELF, "parse", broken)
    path = tmp_path / "capable.o"
    path.write_bytes(ORIGINAL)
    message = refused(settled_system, path, ["lief cannot read it (RuntimeError)"])
    assert isinstance(ModuleError(message), LabError)


def test_a_checked_object_that_lief_reads_differently_is_refused(settled_system, tmp_path, monkeypatch):
    real = loader.lief.ELF.parse

    def one_section_short(data):
        binary = real(data)
        binary.remove(binary.get_section(".comment"))
        return binary
    monkeypatch.setattr(loader.lief.ELF, "parse", one_section_short)
    path = tmp_path / "capable.o"
    path.write_bytes(ORIGINAL)
    refused(settled_system, path, ["lief reads"])
