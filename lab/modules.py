"""modules - loading a relocatable live patch object (.o) into the emulated kernel's module area.

The lab is this machine's insmod: it places the object's allocated sections in
the module area, resolves undefined symbols against the kernel's global
symbols (what EXPORT_SYMBOL would offer; static functions are reachable only
through kallsyms_lookup_name(), as in the kGraft article), applies the
relocations, and only then writes the result to emulated memory: a refused
object leaves memory as it was.  The init function runs inside the emulator.

Before anything else the object is checked the way Linux's
elf_validity_check() and its friends check a module, and more strictly:
check_object() reads the ELF header, the section header table, every
section's file range, the string tables, the symbol table and every
relocation with struct, and refuses what it cannot vouch for, in one line
naming the file, the section and what to do.  lief then reads only what
passed, and must read it the same way: a disagreement is a refusal, never a
guess.
"""
from __future__ import annotations

import hashlib
import pathlib
import struct
import warnings
from dataclasses import dataclass, field

import lief

from .area import Area, AreaFull
from .errors import ImageError
from .image import PAD_BYTES, PAD_SIZE

_PAGE = 4096
MODULE_AREA = (0x600000, 0x7F0000)   # trampolines live above, up to the end of RAM

# ---- ELF, as <elf.h> spells it ----
ET_REL, EM_X86_64, EV_CURRENT = 1, 62, 1
ELFCLASS64, ELFDATA2LSB = 2, 1
SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_HASH, SHT_DYNAMIC, SHT_NOTE, SHT_NOBITS, \
    SHT_REL, SHT_SHLIB, SHT_DYNSYM = range(12)
SHT_INIT_ARRAY, SHT_FINI_ARRAY, SHT_PREINIT_ARRAY, SHT_GROUP, SHT_SYMTAB_SHNDX = 14, 15, 16, 17, 18
SHT_X86_64_UNWIND = 0x70000001
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHN_UNDEF, SHN_LORESERVE, SHN_ABS, SHN_COMMON, SHN_XINDEX = 0, 0xFF00, 0xFFF1, 0xFFF2, 0xFFFF
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE, STT_COMMON, STT_TLS, STT_GNU_IFUNC = 0, 1, 2, 3, 4, 5, 6, 10
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")   # Elf64_Ehdr
_SHDR = struct.Struct("<IIQQQQIIQQ")         # Elf64_Shdr
_SYM = struct.Struct("<IBBHQQ")              # Elf64_Sym
_RELA = struct.Struct("<QQq")                # Elf64_Rela

# Sections that may be loaded, and section kinds a patch object never has.
_LOADABLE = {SHT_PROGBITS, SHT_NOBITS, SHT_NOTE, SHT_INIT_ARRAY, SHT_FINI_ARRAY, SHT_PREINIT_ARRAY,
             SHT_X86_64_UNWIND}
_FOREIGN = {SHT_HASH: "a symbol hash table", SHT_DYNAMIC: "dynamic linking information",
            SHT_REL: "REL relocations (x86-64 objects use RELA)", SHT_SHLIB: "an SHT_SHLIB section",
            SHT_DYNSYM: "a dynamic symbol table", SHT_SYMTAB_SHNDX: "extended section indexes"}

# What the loader accepts at most: far beyond any patch, small enough that a
# hostile header cannot make the lab read or allocate without bound.
MAX_OBJECT_BYTES = 16 << 20
MAX_SECTIONS = 1024
MAX_SYMBOLS = 65536
MAX_RELOCATIONS = 262144
MAX_ALIGN = 4096          # a page: the module area is laid out in pages at most

REBUILD = "rebuild it with `lab patch build SOURCE.c`"

R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_32, R_X86_64_32S, R_X86_64_PC64 = 1, 2, 4, 10, 11, 24
_SUPPORTED = {
    R_X86_64_64: ("R_X86_64_64", 8),
    R_X86_64_PC32: ("R_X86_64_PC32", 4),
    R_X86_64_PLT32: ("R_X86_64_PLT32", 4),
    R_X86_64_32: ("R_X86_64_32", 4),
    R_X86_64_32S: ("R_X86_64_32S", 4),
    R_X86_64_PC64: ("R_X86_64_PC64", 8),
}


class ModuleError(ImageError):
    """A patch object cannot be loaded."""


# ---- the object file as check_object() read it ----

@dataclass(frozen=True)
class ElfSection:
    index: int
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    align: int
    entsize: int

    @property
    def allocated(self):
        return bool(self.flags & SHF_ALLOC)

    @property
    def in_file(self):
        return self.type not in (SHT_NULL, SHT_NOBITS)

    @property
    def label(self):
        return f"section {self.name!r} [{self.index}]" if self.name else f"section [{self.index}]"


@dataclass(frozen=True)
class ElfSymbol:
    index: int
    name: str
    value: int
    size: int
    type: int
    bind: int
    shndx: int


@dataclass(frozen=True)
class ElfRela:
    offset: int
    sym: int
    type: int
    addend: int


@dataclass
class ObjectFile:
    """A checked relocatable object: its bytes and tables, every index in range."""
    name: str
    data: bytes
    sections: list
    symbols: list
    relocations: dict     # target section index -> [ElfRela]

    def content(self, section):
        if not section.in_file:
            return bytes(section.size)
        return self.data[section.offset:section.offset + section.size]


def _printable(raw, limit=64):
    """Bytes from the file, safe in a one-line message."""
    text = "".join(chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in raw[:limit])
    return text + ("..." if len(raw) > limit else "")


class _Checker:
    """check_object()'s state: the file's bytes and what has been read so far."""

    def __init__(self, data, name):
        self.data = data
        self.name = name
        self.sections = []

    def refuse(self, where, what, todo=REBUILD):
        raise ModuleError(f"{self.name}: {where}: {what}; {todo}")

    # ---- the ELF header ----
    def header(self):
        data = self.data
        if len(data) < 4 or data[:4] != b"\x7fELF":
            self.refuse("the ELF header", "not an ELF object (no \\x7fELF magic)", "build it with `lab patch build SOURCE.c`")
        if len(data) < _EHDR.size:
            self.refuse("the ELF header", f"the file ends after {len(data)} bytes, inside the {_EHDR.size}-byte header")
        (ident, e_type, machine, version, _entry, _phoff, shoff, _flags, ehsize, _phentsize, phnum,
         shentsize, shnum, shstrndx) = _EHDR.unpack_from(data)
        where = "the ELF header"
        if ident[4] != ELFCLASS64:
            self.refuse(where, f"ELF class {ident[4]}, not ELFCLASS64 (a 64-bit object)")
        if ident[5] != ELFDATA2LSB:
            what = "big-endian" if ident[5] == 2 else f"byte order {ident[5]}"
            self.refuse(where, f"{what}, not little-endian (ELFDATA2LSB) as x86-64 is")
        if ident[6] != EV_CURRENT or version != EV_CURRENT:
            self.refuse(where, f"ELF version {ident[6]}/{version}, not EV_CURRENT (1)")
        if e_type != ET_REL:
            self.refuse(where, f"type {e_type}, not a relocatable object (.o, ET_REL)",
                        "build it with `lab patch build SOURCE.c`")
        if machine != EM_X86_64:
            self.refuse(where, f"machine {machine}, not an x86-64 object (EM_X86_64)")
        if ehsize != _EHDR.size:
            self.refuse(where, f"e_ehsize {ehsize}, not {_EHDR.size}")
        if phnum != 0:
            self.refuse(where, f"{phnum} program headers; a relocatable object has none")
        if shentsize != _SHDR.size:
            self.refuse(where, f"e_shentsize {shentsize}, not {_SHDR.size} (sizeof(Elf64_Shdr))")
        if shoff == 0 or shnum == 0:
            self.refuse("the section header table", "absent (e_shoff or e_shnum is 0)")
        if shnum > MAX_SECTIONS:
            self.refuse("the section header table", f"{shnum} sections, more than the {MAX_SECTIONS} a patch may have")
        if shoff + shnum * _SHDR.size > len(data):
            self.refuse("the section header table",
                        f"{shnum} entries at {shoff:#x} end past the end of the file ({len(data):#x} bytes)")
        if shstrndx == SHN_UNDEF or shstrndx >= shnum:
            self.refuse("the ELF header", f"e_shstrndx {shstrndx} is not a section (there are {shnum})")
        return shoff, shnum, shstrndx

    # ---- the section header table ----
    def section_table(self, shoff, shnum, shstrndx):
        data = self.data
        raw = [_SHDR.unpack_from(data, shoff + i * _SHDR.size) for i in range(shnum)]
        if any(raw[0]):
            self.refuse("section [0]", "the null section header is not all zero")
        # the section name table first: every other name is read from it
        name, kind, _fl, _ad, off, size, *_ = raw[shstrndx]
        if kind != SHT_STRTAB:
            self.refuse(f"section [{shstrndx}]", f"the section name table (e_shstrndx) has type {kind}, not STRTAB")
        if off + size > len(data):
            self.refuse(f"section [{shstrndx}]", f"the section name table ({off:#x}+{size:#x}) ends past the end "
                                                 f"of the file ({len(data):#x} bytes)")
        self.strtab(f"section [{shstrndx}]", data[off:off + size], "the section name table")
        shstrtab = data[off:off + size]
        for i, (name, kind, flags, _addr, off, size, link, info, align, entsize) in enumerate(raw):
            where = f"section [{i}]"
            if name >= len(shstrtab):
                self.refuse(where, f"its name (offset {name:#x}) lies outside the section name table "
                                   f"({len(shstrtab):#x} bytes)")
            text = self.name_at(where, shstrtab, name, "its name")
            self.sections.append(ElfSection(i, text, kind, flags, off, size, link, info, align, entsize))
        for s in self.sections[1:]:
            self.section(s)
        self.overlaps(shoff, shnum)

    def name_at(self, where, table, offset, what):
        raw = table[offset:table.index(b"\0", offset)]
        if any(not 0x20 <= b < 0x7F for b in raw):
            self.refuse(where, f"{what} '{_printable(raw)}' has bytes that no compiler writes in a name")
        return raw.decode("ascii")

    def strtab(self, where, table, what):
        if not table or table[0] != 0 or table[-1] != 0:
            self.refuse(where, f"{what} does not start and end with a NUL byte (a string would run off its end)")

    def section(self, s):
        where, n = s.label, len(self.data)
        if s.type in _FOREIGN:
            self.refuse(where, f"{_FOREIGN[s.type]} in a relocatable patch object")
        if s.type == SHT_NULL and (s.flags or s.size):
            self.refuse(where, "a NULL section with flags or a size")
        if s.allocated and s.type not in _LOADABLE:
            self.refuse(where, f"allocated, but of type {s.type:#x}, which the loader cannot place")
        if s.in_file and s.offset + s.size > n:
            self.refuse(where, f"its contents ({s.offset:#x}+{s.size:#x}) end past the end of the file ({n:#x} bytes)")
        if s.align & (s.align - 1):
            self.refuse(where, f"alignment {s.align:#x} is not a power of two")
        if s.allocated and s.align > MAX_ALIGN:
            self.refuse(where, f"alignment {s.align:#x} is larger than a page ({MAX_ALIGN:#x})")
        if s.type in (SHT_SYMTAB, SHT_RELA):
            if s.entsize != 24:
                self.refuse(where, f"entry size {s.entsize}, not 24 (sizeof(Elf64_{'Sym' if s.type == SHT_SYMTAB else 'Rela'}))")
            if s.size % 24:
                self.refuse(where, f"size {s.size:#x} is not a whole number of 24-byte entries")
        if s.type == SHT_STRTAB:
            self.strtab(where, self.data[s.offset:s.offset + s.size], "the string table")
        if s.name == "__mcount_loc" and s.size % 8:
            self.refuse(where, f"size {s.size:#x} is not a whole number of 8-byte pad addresses")

    def overlaps(self, shoff, shnum):
        ranges = [(0, _EHDR.size, "the ELF header"), (shoff, shoff + shnum * _SHDR.size, "the section header table")]
        ranges += [(s.offset, s.offset + s.size, s.label) for s in self.sections if s.in_file and s.size]
        ranges.sort()
        for (lo, hi, what), (lo2, hi2, what2) in zip(ranges, ranges[1:]):
            if lo2 < hi:
                first, second = (what, what2) if what.startswith("section") else (what2, what)
                self.refuse(first, f"its bytes in the file ({lo2:#x}..{min(hi, hi2):#x}) overlap those of {second}")

    # ---- the symbol table ----
    def symbols(self):
        tabs = [s for s in self.sections if s.type == SHT_SYMTAB]
        if not tabs:
            self.refuse("the section header table", "no symbol table (.symtab); the loader cannot find init_module")
        if len(tabs) > 1:
            self.refuse(tabs[1].label, "a second symbol table")
        symtab = tabs[0]
        count = symtab.size // _SYM.size
        if count == 0:
            self.refuse(symtab.label, "an empty symbol table")
        if count > MAX_SYMBOLS:
            self.refuse(symtab.label, f"{count} symbols, more than the {MAX_SYMBOLS} a patch may have")
        if not 0 < symtab.link < len(self.sections) or self.sections[symtab.link].type != SHT_STRTAB:
            self.refuse(symtab.label, f"sh_link {symtab.link} is not a string table")
        if symtab.info > count:
            self.refuse(symtab.label, f"sh_info {symtab.info} (the first global symbol) is past its {count} symbols")
        strsec = self.sections[symtab.link]
        strtab = self.data[strsec.offset:strsec.offset + strsec.size]
        symbols = []
        for i in range(count):
            name, info, _other, shndx, value, size = _SYM.unpack_from(self.data, symtab.offset + i * _SYM.size)
            where = f"{symtab.label}, symbol {i}"
            if i == 0:
                if any((name, info, shndx, value, size)):
                    self.refuse(where, "the null symbol is not all zero")
                symbols.append(ElfSymbol(0, "", 0, 0, STT_NOTYPE, STB_LOCAL, SHN_UNDEF))
                continue
            if name >= len(strtab):
                self.refuse(where, f"its name (offset {name:#x}) lies outside {strsec.label} ({len(strtab):#x} bytes)")
            text = self.name_at(where, strtab, name, "its name")
            where = f"{symtab.label}, symbol {i} {text!r}" if text else where
            kind, bind = info & 0xF, info >> 4
            if kind in (STT_COMMON,) or shndx == SHN_COMMON:
                self.refuse(where, "a common symbol", "build with -fno-common (`lab patch build SOURCE.c` does)")
            if kind in (STT_TLS, STT_GNU_IFUNC):
                self.refuse(where, "thread-local, and the kernel has no TLS" if kind == STT_TLS
                                   else "an indirect function (ifunc), which the kernel does not resolve")
            if kind > STT_TLS:
                self.refuse(where, f"unknown symbol type {kind}")
            if bind not in (STB_LOCAL, STB_GLOBAL, STB_WEAK):
                self.refuse(where, f"unknown symbol binding {bind}")
            if shndx != SHN_ABS and shndx != SHN_UNDEF and (shndx >= SHN_LORESERVE or shndx >= len(self.sections)):
                self.refuse(where, f"its section index {shndx:#x} is out of range (there are {len(self.sections)})")
            if shndx not in (SHN_UNDEF, SHN_ABS):
                home = self.sections[shndx]
                if home.type == SHT_NULL:
                    self.refuse(where, f"defined in {home.label}, which is empty")
                if home.allocated and (value > home.size or value + size > home.size):
                    self.refuse(home.label, f"symbol {i} {text!r} ({value:#x}+{size:#x}) lies outside the section "
                                            f"({home.size:#x} bytes)")
            symbols.append(ElfSymbol(i, text, value, size, kind, bind, shndx))
        return symtab, symbols

    # ---- relocations ----
    def relocations(self, symtab, symbols):
        out, total = {}, 0
        for s in self.sections:
            if s.type != SHT_RELA:
                continue
            if s.link != symtab.index:
                self.refuse(s.label, f"sh_link {s.link} is not the symbol table [{symtab.index}]")
            if not 0 < s.info < len(self.sections):
                self.refuse(s.label, f"sh_info {s.info} (the section it relocates) is not a section")
            target = self.sections[s.info]
            if not target.in_file or target.type in (SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_GROUP):
                self.refuse(s.label, f"it relocates {target.label}, which has no code or data to relocate")
            count = s.size // _RELA.size
            total += count
            if total > MAX_RELOCATIONS:
                self.refuse(s.label, f"more than the {MAX_RELOCATIONS} relocations a patch may have")
            rels = []
            for j in range(count):
                offset, info, addend = _RELA.unpack_from(self.data, s.offset + j * _RELA.size)
                sym, kind = info >> 32, info & 0xFFFFFFFF
                where = f"{s.label}, relocation {j}"
                if sym >= len(symbols):
                    self.refuse(where, f"symbol index {sym} is past the {len(symbols)} symbols")
                if not target.allocated:
                    rels.append(ElfRela(offset, sym, kind, addend))
                    continue   # debug information stays in the file; only its indexes must be sane
                if kind not in _SUPPORTED:
                    self.refuse(where, f"type {kind} in {target.label} is not supported",
                                "build with the firmware's flags (`lab patch build SOURCE.c`)")
                name, width = _SUPPORTED[kind]
                if offset + width > target.size:
                    self.refuse(target.label, f"{name} relocation at +{offset:#x} lies outside the section "
                                              f"({target.size:#x} bytes); the object is malformed")
                if sym == 0:
                    self.refuse(where, "a relocation with no symbol")
                home = symbols[sym].shndx
                if home not in (SHN_UNDEF, SHN_ABS) and not (self.sections[home].allocated and self.sections[home].size):
                    self.refuse(where, f"against symbol {sym} in {self.sections[home].label}, which is not loaded")
                rels.append(ElfRela(offset, sym, kind, addend))
            out.setdefault(target.index, []).extend(rels)
        return out

    def layout_size(self):
        """The bytes the object takes in the module area, checked against its size."""
        cursor, area = 0, MODULE_AREA[1] - MODULE_AREA[0]
        for s in self.sections:
            if s.allocated and s.size:
                align = max(s.align, 1)
                cursor = (cursor + align - 1) & ~(align - 1)
                cursor += s.size
                if cursor > area:
                    self.refuse(s.label, f"{s.size:#x} bytes that take the module past the module area "
                                         f"({area:#x} bytes)")
        return cursor


def check_object(data, name):
    """Check a relocatable object's bytes; an ObjectFile whose every offset,
    size and index is in range, or a ModuleError naming what is wrong."""
    if len(data) > MAX_OBJECT_BYTES:
        raise ModuleError(f"{name}: the file: {len(data):#x} bytes, more than the {MAX_OBJECT_BYTES:#x} a patch "
                          f"object may have; {REBUILD}")
    c = _Checker(bytes(data), name)
    c.section_table(*c.header())
    symtab, symbols = c.symbols()
    relocations = c.relocations(symtab, symbols)
    c.layout_size()
    for entry in ("init_module", "cleanup_module"):
        sym = next((s for s in symbols if s.name == entry and s.bind != STB_LOCAL and s.shndx != SHN_UNDEF), None)
        if sym is None:
            continue
        home = c.sections[sym.shndx] if sym.shndx != SHN_ABS else None
        if sym.type != STT_FUNC or home is None or not home.flags & SHF_EXECINSTR or not home.allocated:
            where = home.label if home is not None else f"{symtab.label}, symbol {sym.index}"
            c.refuse(where, f"{entry} is not a function in loaded code")
    return ObjectFile(name, c.data, c.sections, symbols, relocations)


_CHECKED = {}          # (sha256 of the bytes, name) -> ObjectFile, most recent last
_CHECKED_MAX = 64


def checked_object(data, name):
    """check_object(), then the same bytes read by lief must agree; an
    ObjectFile or a ModuleError.  Both are pure functions of the bytes and
    the name, so an object checked once is not checked again (an explorer
    loads the same patch in every schedule); ObjectFiles are never changed."""
    key = (hashlib.sha256(data).digest(), name)
    obj = _CHECKED.pop(key, None)
    if obj is None:
        obj = check_object(data, name)
        why = _lief_agrees(obj)
        if why is not None:
            raise ModuleError(f"{name}: the object: {why}; {REBUILD}")
        while len(_CHECKED) >= _CHECKED_MAX:
            del _CHECKED[next(iter(_CHECKED))]
    _CHECKED[key] = obj
    return obj


def _lief_agrees(obj):
    """Parse obj's bytes with lief and compare what it reads with what
    check_object() read; a one-line reason when they differ, else None."""
    try:
        with warnings.catch_warnings():   # lief warns about section types it has no name for
            warnings.simplefilter("ignore")
            return _lief_compare(obj)
    except Exception as exc:   # lief must not decide anything by raising
        return f"lief cannot read it ({type(exc).__name__})"


def _lief_compare(obj):
    binary = lief.ELF.parse(list(obj.data))
    if binary is None or not isinstance(binary, lief.ELF.Binary):
        return "lief cannot parse it"
    sections = [(s.name, int(s.type.value) & 0xFFFFFFFF, int(s.flags), s.offset, s.size, s.link, s.information,
                 s.alignment, s.entry_size) for s in binary.sections]
    symbols = [(s.name, s.value, s.size, s.shndx) for s in binary.symtab_symbols]
    index = {(s.name, s.offset, s.size): i for i, s in enumerate(binary.sections)}
    rels = []
    for r in binary.relocations:
        if r.has_section and int(r.section.flags) & SHF_ALLOC:
            info = r.r_info(lief.ELF.Header.CLASS.ELF64)
            rels.append((index.get((r.section.name, r.section.offset, r.section.size), -1), r.address,
                         info & 0xFFFFFFFF, info >> 32, r.addend))
    rels.sort()
    mine = [(s.name, s.type, s.flags, s.offset, s.size, s.link, s.info, s.align, s.entsize) for s in obj.sections]
    for a, b in zip(sections, mine):
        if a != b:
            return f"lief reads section [{mine.index(b)}] {b[0]!r} differently"
    if len(sections) != len(mine):
        return f"lief reads {len(sections)} sections, the section header table has {len(mine)}"
    if symbols != [(s.name, s.value, s.size, s.shndx) for s in obj.symbols]:
        return "lief reads the symbol table differently"
    own = sorted((t, r.offset, r.type, r.sym, r.addend) for t, rs in obj.relocations.items()
                 if obj.sections[t].allocated for r in rs)
    if rels != own:
        return "lief reads the relocations of the loaded sections differently"
    return None


@dataclass(frozen=True)
class ModuleSymbol:
    name: str
    address: int
    size: int
    kind: str
    local: bool

    def __deepcopy__(self, memo):
        return self         # frozen, and every field immutable: a snapshot shares it


@dataclass
class Module:
    name: str
    path: pathlib.Path
    base: int
    size: int
    symbols: dict = field(default_factory=dict)   # name -> ModuleSymbol
    sections: dict = field(default_factory=dict)  # name -> (address, size)
    pads: tuple = ()                              # (address, function) from its __mcount_loc
    init: int | None = None
    exit: int | None = None
    loaded: bool = True
    read_only: int = 0                            # bytes from base mapped read-only (text, rodata)
    modinfo: dict = field(default_factory=dict)   # .modinfo: tag -> value (livepatch=Y, license, ...)
    this_module: int | None = None                # its struct module (modpost's __this_module), if any
    params: dict = field(default_factory=dict)    # module_param(): name -> (address, size, signed)

    def __deepcopy__(self, memo):
        """A snapshot's copy: every field holds immutable values (ints,
        strings, a path, tuples, frozen ModuleSymbols) or a dict of them,
        so copying the dicts is copying it all."""
        new = Module.__new__(Module)
        memo[id(self)] = new
        new.__dict__.update({k: dict(v) if type(v) is dict else v for k, v in self.__dict__.items()})
        return new

    @property
    def is_livepatch(self):
        """MODULE_INFO(livepatch, "Y"), as Linux's check_modinfo_livepatch() reads it."""
        return self.modinfo.get("livepatch") == "Y"

    def function_at(self, address):
        for s in self.symbols.values():
            if s.kind == "func" and s.address <= address < s.address + max(s.size, 1):
                return s
        return None

    def writable(self):
        """(address, size) of what the module's code may write: everything
        above its read-only pages (.data, .bss)."""
        return [(self.base + self.read_only, self.size - self.read_only)] if self.size > self.read_only else []

    def __contains__(self, address):
        return self.base <= address < self.base + self.size


MODULE_STATE_LIVE, MODULE_STATE_COMING, MODULE_STATE_GOING, MODULE_STATE_UNFORMED = range(4)
_BOOLS = {"y": 1, "yes": 1, "true": 1, "on": 1, "n": 0, "no": 0, "false": 0, "off": 0}


class ModuleLoader:
    """Places patch objects in the module area.  A freed module's range is
    reused only after the live patching core has established that nothing
    (pad, trampoline, task stack) can still reach it (Livepatch._reclaim)."""

    _ALIGN = _PAGE   # a module's base: its read-only part is whole pages

    def __init__(self, image, machine):
        self.image = image
        self.machine = machine
        self.area = Area(*MODULE_AREA)
        # module space that holds no module is not mapped for the CPU, as
        # unused vmalloc space is not: a stray access faults
        machine.guard(MODULE_AREA[0], MODULE_AREA[1] - MODULE_AREA[0])
        self.modules = []        # the loaded ones
        self.history = []        # every module ever loaded, for names in traces and reports

    def parse(self, path):
        """Read and check a patch object (an ObjectFile); nothing is written to memory."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise ModuleError(f"{path}: no such patch object; build one with `lab patch build SOURCE.c`")
        if path.stat().st_size > MAX_OBJECT_BYTES:
            raise ModuleError(f"{path.name}: the file: {path.stat().st_size:#x} bytes, more than the "
                              f"{MAX_OBJECT_BYTES:#x} a patch object may have; {REBUILD}")
        return checked_object(path.read_bytes(), path.name)

    def load(self, path, image=None):
        """Relocate the object into the module area and return the Module.
        image: the object's bytes, as init_module() hands them over (path
        then only names it; the module takes the name it gives itself)."""
        path = pathlib.Path(path)
        if image is None:
            obj = self.parse(path)
        else:
            if len(image) > MAX_OBJECT_BYTES:
                raise ModuleError(f"{path.name}: {len(image):#x} bytes, more than the {MAX_OBJECT_BYTES:#x} a "
                                  f"module may have")
            obj = checked_object(bytes(image), path.name)
        sections, symbols = obj.sections, obj.symbols
        # 1. lay out the allocated sections
        # Read-only sections (text, rodata) first, then, from a new page on,
        # the writable ones: the CPU gets the first pages read-only, as
        # Linux's module_enable_ro() maps a module's text and rodata.
        layout = {}
        cursor = 0
        align_all = self._ALIGN
        for writable in (False, True):
            if writable:
                cursor = read_only = (cursor + _PAGE - 1) & ~(_PAGE - 1)
            for sec in sections:
                if not sec.allocated or sec.size == 0 or bool(sec.flags & SHF_WRITE) != writable:
                    continue
                align = max(sec.align, 1)
                align_all = max(align_all, align)
                cursor = (cursor + align - 1) & ~(align - 1)
                layout[sec.index] = cursor
                cursor += sec.size
        size = max((cursor + 0xF) & ~0xF, 0x10)
        try:
            base = self.area.find(size, align_all)
        except AreaFull:
            raise ModuleError(f"{path.name}: the module area is full ({self.area.used:#x} of "
                              f"{MODULE_AREA[1] - MODULE_AREA[0]:#x} bytes in use); revert patches or reboot "
                              "to load more") from None
        layout = {idx: base + off for idx, off in layout.items()}
        blob = bytearray(size)
        for idx, addr in layout.items():
            sec = sections[idx]
            if sec.type != SHT_NOBITS:
                blob[addr - base:addr - base + sec.size] = obj.content(sec)
        # 2. symbols
        syms = {}
        local_funcs = []
        for s in symbols:
            if s.type == STT_FILE:
                continue
            if s.shndx in layout and s.name and s.type != STT_SECTION:
                kind = "func" if s.type == STT_FUNC else "object"
                ms = ModuleSymbol(s.name, layout[s.shndx] + s.value, s.size, kind, s.bind == STB_LOCAL)
                syms.setdefault(s.name, ms)
                local_funcs.append(ms)

        def resolve(sym, where):
            if sym.type == STT_SECTION or (not sym.name and sym.shndx in layout):
                return layout.get(sym.shndx)
            if sym.shndx == SHN_ABS:
                return sym.value
            if sym.shndx != SHN_UNDEF and sym.shndx in layout:
                return layout[sym.shndx] + sym.value
            if sym.shndx == SHN_UNDEF:
                ksym = self.image.lookup(sym.name)
                if ksym is None or ksym.kind == "abs":
                    raise ModuleError(f"{path.name}: unresolved symbol {sym.name!r}: the kernel has no such symbol")
                if ksym.local:
                    raise ModuleError(
                        f"{path.name}: unresolved symbol {sym.name!r}: it is static in the kernel; "
                        "find its address with kallsyms_lookup_name() instead of calling it directly")
                return ksym.address
            raise ModuleError(f"{path.name}: {where}: symbol {sym.name!r} is in section [{sym.shndx}], "
                              f"which is not loaded; {REBUILD}")

        # 3. relocations into allocated sections (check_object() vouched for their bounds)
        for tidx, rels in obj.relocations.items():
            if tidx not in layout:
                continue  # debug sections and the like stay where they are
            target = sections[tidx]
            for rel in rels:
                kind, _width = _SUPPORTED[rel.type]
                where = f"{target.label}+{rel.offset:#x}"
                value = resolve(symbols[rel.sym], where)
                if value is None:
                    raise ModuleError(f"{path.name}: {where}: relocation against an unloaded section; {REBUILD}")
                place = layout[tidx] + rel.offset
                s_a = value + rel.addend
                off = place - base
                if kind == "R_X86_64_64":
                    struct.pack_into("<Q", blob, off, s_a & (2**64 - 1))
                elif kind == "R_X86_64_PC64":
                    struct.pack_into("<Q", blob, off, (s_a - place) & (2**64 - 1))
                elif kind in ("R_X86_64_PC32", "R_X86_64_PLT32"):
                    v = s_a - place
                    if not -2**31 <= v < 2**31:
                        raise ModuleError(f"{path.name}: {where}: {kind} out of range; {REBUILD}")
                    struct.pack_into("<i", blob, off, v)
                elif kind == "R_X86_64_32":
                    if not 0 <= s_a < 2**32:
                        raise ModuleError(f"{path.name}: {where}: {kind} out of range; {REBUILD}")
                    struct.pack_into("<I", blob, off, s_a)
                else:  # R_X86_64_32S
                    if not -2**31 <= s_a < 2**31:
                        raise ModuleError(f"{path.name}: {where}: {kind} out of range; {REBUILD}")
                    struct.pack_into("<i", blob, off, s_a)

        # 4. what the core needs: entry points, pads, section map
        sec_map = {sections[i].name: (a, sections[i].size) for i, a in layout.items()}
        module = Module(path.stem, path, base, size, syms, sec_map, read_only=read_only)
        init, exit_ = syms.get("init_module"), syms.get("cleanup_module")
        module.init = init.address if init else None
        module.exit = exit_.address if exit_ else None
        if "__mcount_loc" in sec_map:
            # Each entry must be a pad gcc made: a 5-byte NOP at the start of
            # a function in the module's code (Linux's ftrace_process_locs()
            # checks the instruction it finds there before it touches it).
            mcount = next(s for s in sections if s.name == "__mcount_loc" and s.index in layout)
            code = [(layout[s.index], layout[s.index] + s.size) for s in sections
                    if s.index in layout and s.flags & SHF_EXECINSTR]
            a, n = sec_map["__mcount_loc"]
            pads = []
            for k, (addr,) in enumerate(struct.iter_unpack("<Q", bytes(blob[a - base:a - base + n]))):
                func = next((f for f in local_funcs if f.kind == "func" and f.address == addr), None)
                inside = any(lo <= addr and addr + PAD_SIZE <= hi for lo, hi in code)
                if func is None or not inside or bytes(blob[addr - base:addr - base + PAD_SIZE]) != PAD_BYTES:
                    raise ModuleError(f"{path.name}: {mcount.label}: entry {k} points to {addr:#x}, which is not a "
                                      f"{PAD_SIZE}-byte NOP at the start of a function of the module; {REBUILD}")
                pads.append((addr, func.name))
            module.pads = tuple(pads)
        if module.init is None:
            raise ModuleError(f"{path.name}: no init_module; declare one with module_init(fn)")
        self._module_info(module, obj, sections, layout, blob, base, path, named_by_image=image is not None)
        # a free place in the kernel's module list, found before anything is written
        slot = self._free_slot(module) if module.this_module is not None else None
        # 5. commit: only now does anything reach emulated memory
        self.machine.write_code(base, bytes(blob))
        mapped = (size + _PAGE - 1) & ~(_PAGE - 1)
        if read_only:
            self.machine.read_only(base, read_only)
        if mapped > read_only:
            self.machine.writable(base + read_only, mapped - read_only)
        self.area.take(base, size)
        if slot is not None:
            self.machine.set_u64(self.image.address("lab_modules") + 8 * slot, module.this_module)
        self.modules.append(module)
        self.history.append(module)
        return module

    def _module_info(self, module, obj, sections, layout, blob, base, path, named_by_image=False):
        """What Linux's loader reads besides code: .modinfo (tag=value
        strings), the module's own struct module and its parameters."""
        info = next((sec for sec in sections if sec.name == ".modinfo"), None)
        if info is not None:
            for raw in obj.content(info).split(b"\0"):
                tag, eq, value = raw.decode("ascii", "replace").partition("=")
                if eq:
                    module.modinfo.setdefault(tag, value)
        this = module.symbols.get("__this_module")
        if this is not None:
            c = self.image.const
            if this.size < c("MODULE_SIZE") or this.local:
                raise ModuleError(f"{path.name}: __this_module is not a struct module of this kernel "
                                  f"({this.size} bytes); {REBUILD}")
            off = this.address - base + c("MODULE_name")
            declared = bytes(blob[off:off + c("MODULE_NAME_SIZE")]).split(b"\0")[0].decode("ascii", "replace")
            if named_by_image and declared.isidentifier():
                module.name = declared
            if declared != module.name:
                raise ModuleError(f"{path.name}: the module calls itself {declared!r} (KBUILD_MODNAME) but the "
                                  f"file is {module.name}.o; build it with `lab patch build` or patches/Makefile")
            module.this_module = this.address
            at = this.address - base
            struct.pack_into("<i", blob, at + c("MODULE_state"), MODULE_STATE_COMING)
            blob[at + c("MODULE_klp")] = int(module.is_livepatch)
            struct.pack_into("<QQ", blob, at + c("MODULE_init"), module.init or 0, module.exit or 0)
        params = next((sec for sec in sections if sec.name == ".modparams" and sec.index in layout), None)
        if params is not None:
            c = self.image.const
            start = layout[params.index] - base
            for k in range(params.size // c("KPARAM_SIZE")):
                rec = start + k * c("KPARAM_SIZE")
                name_ptr, = struct.unpack_from("<Q", blob, rec + c("KPARAM_name"))
                arg, = struct.unpack_from("<Q", blob, rec + c("KPARAM_arg"))
                size, signed = struct.unpack_from("<ii", blob, rec + c("KPARAM_size"))
                num, = struct.unpack_from("<Q", blob, rec + c("KPARAM_num"))
                most, = struct.unpack_from("<I", blob, rec + c("KPARAM_max"))
                name = bytes(blob[name_ptr - base:name_ptr - base + 64]).split(b"\0")[0].decode() \
                    if base <= name_ptr < base + len(blob) else ""
                if name and base <= arg and arg + size * max(most, 1) <= base + len(blob) and size in (1, 4, 8):
                    count = num if num and base <= num and num + 4 <= base + len(blob) else None
                    module.params[name] = (arg, size, bool(signed), count, max(most, 1))
            if this is not None:
                struct.pack_into("<QI", blob, this.address - base + c("MODULE_kp"), layout[params.index],
                                 params.size // c("KPARAM_SIZE"))

    def _free_slot(self, module):
        """A free entry of the kernel's list of modules (lab_modules[],
        Linux's modules list, where find_module() looks)."""
        base = self.image.address("lab_modules")
        for i in range(self.image.const("MAX_MODULES_NR")):
            if not self.machine.u64(base + 8 * i):
                return i
        raise ModuleError(f"{module.name}: the kernel's module list is full "
                          f"({self.image.const('MAX_MODULES_NR')} modules); rmmod some modules")

    def _register(self, module, remove=False):
        """Take the module off the kernel's list of modules."""
        base = self.image.address("lab_modules")
        for i in range(self.image.const("MAX_MODULES_NR")):
            if self.machine.u64(base + 8 * i) == module.this_module:
                self.machine.set_u64(base + 8 * i, 0)
                return

    def set_params(self, module, values):
        """insmod's NAME=VALUE arguments, written before the init runs."""
        for name, value in values.items():
            if name not in module.params:
                known = ", ".join(sorted(module.params)) or "none"
                raise ModuleError(f"{module.name}: unknown parameter '{name}' (its parameters: {known})")
            address, size, signed, count, most = module.params[name]
            items = value.split(",") if isinstance(value, str) and count is not None else [value]
            if len(items) > most:
                raise ModuleError(f"{module.name}: parameter {name} takes at most {most} values, not {len(items)}")
            raws = []
            for item in items:
                try:
                    if size == 1 and isinstance(item, str) and item.lower() in _BOOLS:
                        item = _BOOLS[item.lower()]      # a bool parameter, as param_set_bool() reads it
                    number = int(item, 0) if isinstance(item, str) else int(item)
                    raws.append(number.to_bytes(size, "little", signed=signed))
                except (ValueError, OverflowError):
                    raise ModuleError(f"{module.name}: parameter {name}={value!r} is not a {size * 8}-bit "
                                      f"{'signed ' if signed else ''}integer"
                                      f"{' list' if count is not None else ''}") from None
            self.machine.write(address, b"".join(raws))
            if count is not None:      # module_param_array(): how many were given
                self.machine.set_u32(count, len(raws))

    def set_state(self, module, state):
        """struct module .state, as the loader moves it (COMING, LIVE, GOING)."""
        if module.this_module is not None:
            self.machine.set_u32(module.this_module + self.image.const("MODULE_state"), state)

    def refcnt(self, module):
        if module.this_module is None:
            return 0
        return self.machine.i32(module.this_module + self.image.const("MODULE_refcnt"))

    def unload(self, module):
        """Clear the module's memory and give its range back.  The caller
        makes sure nothing can reach it any more."""
        if module.loaded:
            if module.this_module is not None:
                self._register(module, remove=True)
            self.machine.write_code(module.base, bytes(module.size))
            self.machine.guard(module.base, (module.size + _PAGE - 1) & ~(_PAGE - 1))
            module.loaded = False
            self.area.free(module.base, module.size)
            # forget it: a later module may reuse the range (a trace keeps its own copy of the symbols)
            self.modules = [m for m in self.modules if m is not module]

    def lookup(self, name):
        """A symbol of a loaded module, for kallsyms_lookup_name()."""
        for m in self.modules:
            if m.loaded and name in m.symbols:
                return m.symbols[name].address
        return None

    def module_at(self, address):
        for m in self.modules:
            if m.loaded and address in m:
                return m
        return None
