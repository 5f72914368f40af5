"""modules - loading a relocatable live patch object (.o) into the emulated kernel's module area.

The lab is this machine's insmod: it places the object's allocated sections in
the module area, resolves undefined symbols against the kernel's global
symbols (what EXPORT_SYMBOL would offer; static functions are reachable only
through kallsyms_lookup_name(), as in the kGraft article), applies the
relocations, and only then writes the result to emulated memory: a refused
object leaves memory as it was.  The init function runs inside the emulator.
"""
from __future__ import annotations

import pathlib
import struct
from dataclasses import dataclass, field

import lief

from .errors import ImageError

MODULE_AREA = (0x600000, 0x7F0000)   # trampolines live above, up to the end of RAM
_SHF_ALLOC = 0x2
_SHN_UNDEF, _SHN_ABS, _SHN_COMMON = 0, 0xFFF1, 0xFFF2

_R = lief.ELF.Relocation.TYPE
_SUPPORTED = {
    _R.X86_64_64: "R_X86_64_64",
    _R.X86_64_PC32: "R_X86_64_PC32",
    _R.X86_64_PLT32: "R_X86_64_PLT32",
    _R.X86_64_32: "R_X86_64_32",
    _R.X86_64_32S: "R_X86_64_32S",
    _R.X86_64_PC64: "R_X86_64_PC64",
}


class ModuleError(ImageError):
    """A patch object cannot be loaded."""


@dataclass(frozen=True)
class ModuleSymbol:
    name: str
    address: int
    size: int
    kind: str
    local: bool


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

    def function_at(self, address):
        for s in self.symbols.values():
            if s.kind == "func" and s.address <= address < s.address + max(s.size, 1):
                return s
        return None

    def __contains__(self, address):
        return self.base <= address < self.base + self.size


class ModuleLoader:
    """Places patch objects in the module area.  Addresses are never reused:
    a stale pointer into an unloaded module cannot land in a newer one."""

    def __init__(self, image, machine):
        self.image = image
        self.machine = machine
        self._next = MODULE_AREA[0]
        self.modules = []

    def parse(self, path):
        """Read and check a patch object; nothing is written to memory."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise ModuleError(f"{path}: no such patch object; build one with `lab patch build SOURCE.c`")
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                raise ModuleError(f"{path}: not an ELF object; build it with `lab patch build SOURCE.c`")
        binary = lief.parse(str(path))
        if binary is None or not isinstance(binary, lief.ELF.Binary):
            raise ModuleError(f"{path}: malformed ELF object; rebuild it with `lab patch build SOURCE.c`")
        if binary.header.file_type != lief.ELF.Header.FILE_TYPE.REL:
            raise ModuleError(f"{path}: not a relocatable object (.o); build it with `lab patch build SOURCE.c`")
        if binary.header.machine_type != lief.ELF.ARCH.X86_64:
            raise ModuleError(f"{path}: not an x86-64 object")
        return binary

    def load(self, path):
        """Relocate the object into the module area and return the Module."""
        path = pathlib.Path(path)
        binary = self.parse(path)
        sections = list(binary.sections)
        # 1. lay out the allocated sections
        layout = {}
        cursor = self._next
        for idx, sec in enumerate(sections):
            if not (sec.flags & _SHF_ALLOC) or sec.size == 0:
                continue
            align = max(sec.alignment, 1)
            cursor = (cursor + align - 1) & ~(align - 1)
            layout[idx] = cursor
            cursor += sec.size
        size = ((cursor - self._next) + 0xF) & ~0xF
        base = self._next
        if cursor > MODULE_AREA[1]:
            raise ModuleError(f"{path}: the module area is full ({MODULE_AREA[1] - MODULE_AREA[0]:#x} bytes); reboot to load more")
        blob = bytearray(size)
        for idx, addr in layout.items():
            sec = sections[idx]
            if sec.type != lief.ELF.Section.TYPE.NOBITS:
                data = bytes(sec.content)
                blob[addr - base:addr - base + len(data)] = data
        # 2. symbols
        syms = {}
        local_funcs = []
        for s in binary.symtab_symbols:
            if s.type == lief.ELF.Symbol.TYPE.FILE:
                continue
            if s.shndx in layout and s.name and s.type != lief.ELF.Symbol.TYPE.SECTION:
                kind = "func" if s.type == lief.ELF.Symbol.TYPE.FUNC else "object"
                ms = ModuleSymbol(s.name, layout[s.shndx] + s.value, s.size, kind,
                                  s.binding == lief.ELF.Symbol.BINDING.LOCAL)
                syms.setdefault(s.name, ms)
                local_funcs.append(ms)

        def resolve(sym):
            if sym.type == lief.ELF.Symbol.TYPE.SECTION or (not sym.name and sym.shndx in layout):
                if sym.shndx not in layout:
                    return None
                return layout[sym.shndx]
            if sym.shndx == _SHN_ABS:
                return sym.value
            if sym.shndx != _SHN_UNDEF and sym.shndx in layout:
                return layout[sym.shndx] + sym.value
            if sym.shndx == _SHN_UNDEF:
                ksym = self.image.lookup(sym.name)
                if ksym is None or ksym.kind == "abs":
                    raise ModuleError(f"{path.name}: unresolved symbol {sym.name!r}: the kernel has no such symbol")
                if ksym.local:
                    raise ModuleError(
                        f"{path.name}: unresolved symbol {sym.name!r}: it is static in the kernel; "
                        "find its address with kallsyms_lookup_name() instead of calling it directly")
                return ksym.address
            raise ModuleError(f"{path.name}: symbol {sym.name!r} is in section {sym.shndx}, which is not loaded")

        # 3. relocations into allocated sections
        for rel in binary.relocations:
            target = rel.section
            if target is None:
                continue
            tidx = sections.index(target) if target in sections else None
            if tidx is None or tidx not in layout:
                continue  # debug sections and the like stay where they are
            kind = _SUPPORTED.get(rel.type)
            if kind is None:
                raise ModuleError(f"{path.name}: relocation {rel.type} in {target.name} is not supported; "
                                  "build with the firmware's flags (`lab patch build`)")
            width = 8 if kind in ("R_X86_64_64", "R_X86_64_PC64") else 4
            if rel.address < 0 or rel.address + width > target.size:
                raise ModuleError(f"{path.name}: relocation at {target.name}+{rel.address:#x} lies outside "
                                  f"the section ({target.size:#x} bytes); the object is malformed")
            where = layout[tidx] + rel.address
            if not rel.has_symbol:
                raise ModuleError(f"{path.name}: relocation at {target.name}+{rel.address:#x} has no symbol")
            value = resolve(rel.symbol)
            if value is None:
                raise ModuleError(f"{path.name}: relocation against an unloaded section in {target.name}")
            s_a = value + rel.addend
            off = where - base
            if kind == "R_X86_64_64":
                struct.pack_into("<Q", blob, off, s_a & (2**64 - 1))
            elif kind == "R_X86_64_PC64":
                struct.pack_into("<q", blob, off, s_a - where)
            elif kind in ("R_X86_64_PC32", "R_X86_64_PLT32"):
                v = s_a - where
                if not -2**31 <= v < 2**31:
                    raise ModuleError(f"{path.name}: {kind} at {target.name}+{rel.address:#x} out of range")
                struct.pack_into("<i", blob, off, v)
            elif kind == "R_X86_64_32":
                if not 0 <= s_a < 2**32:
                    raise ModuleError(f"{path.name}: {kind} at {target.name}+{rel.address:#x} out of range")
                struct.pack_into("<I", blob, off, s_a)
            else:  # R_X86_64_32S
                if not -2**31 <= s_a < 2**31:
                    raise ModuleError(f"{path.name}: {kind} at {target.name}+{rel.address:#x} out of range")
                struct.pack_into("<i", blob, off, s_a)

        # 4. what the core needs: entry points, pads, section map
        sec_map = {sections[i].name: (a, sections[i].size) for i, a in layout.items()}
        module = Module(path.stem, path, base, size, syms, sec_map)
        init, exit_ = syms.get("init_module"), syms.get("cleanup_module")
        module.init = init.address if init else None
        module.exit = exit_.address if exit_ else None
        if "__mcount_loc" in sec_map:
            a, n = sec_map["__mcount_loc"]
            pads = []
            for (addr,) in struct.iter_unpack("<Q", bytes(blob[a - base:a - base + n])):
                func = next((f for f in local_funcs if f.kind == "func" and f.address == addr), None)
                pads.append((addr, func.name if func else f"{addr:#x}"))
            module.pads = tuple(pads)
        if module.init is None:
            raise ModuleError(f"{path.name}: no init_module; declare one with module_init(fn)")
        # 5. commit: only now does anything reach emulated memory
        self.machine.write_code(base, bytes(blob))
        self._next = base + size
        self.modules.append(module)
        return module

    def unload(self, module):
        """Clear the module's memory (its range is not reused)."""
        if module.loaded:
            self.machine.write_code(module.base, bytes(module.size))
            module.loaded = False

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
