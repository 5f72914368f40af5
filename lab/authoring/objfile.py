"""objfile - a relocatable object built with -ffunction-sections -fdata-sections, as create-diff-object reads it: every function and variable with its bytes and the symbols its relocations point to."""
from __future__ import annotations

import bisect
import hashlib
import pathlib
import re
from dataclasses import dataclass
from functools import cached_property

import capstone

from ..modules import (R_X86_64_64, R_X86_64_PC32, R_X86_64_PC64, R_X86_64_PLT32, SHF_EXECINSTR, SHF_WRITE, SHN_ABS,
                       SHN_UNDEF, SHT_NOBITS, STB_LOCAL, STT_FUNC, STT_OBJECT, STT_SECTION, ModuleError,
                       check_object)
from .errors import AuthoringError

SHF_STRINGS = 0x20
_PC_RELATIVE = {R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_PC64}
_WIDTH = {R_X86_64_64: 8, R_X86_64_PC64: 8}
_NUMBERING = re.compile(r"\.\d+(?=\.|$)")
_cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def normalized(name):
    """A symbol name without gcc's numbering: wb_bandwidth.isra.0 -> wb_bandwidth.isra,
    wb_report_last.3 -> wb_report_last.  Two builds of one source number their
    clones and static locals independently."""
    return _NUMBERING.sub("", name)


@dataclass(frozen=True)
class Item:
    """A function or a variable of the object, as compared: its bytes with
    every relocated field zeroed and its relocations, each naming what it
    points to (a symbol, a string's text, a constant's bytes), never an address."""

    name: str
    kind: str             # "function" or "object"
    section: str
    size: int
    bound: str            # "global" or "static"
    writable: bool
    code: bytes
    relocations: tuple    # (offset, type, target key, addend)

    def fingerprint(self):
        return (self.kind, self.size, self.code, self.relocations)

    def references(self):
        """The symbols (normalized names) this item's relocations point to."""
        return {key[1] for _o, _t, key, _a in self.relocations if key[0] in ("sym", "obj", "func")}


class ObjectView:
    """One object file read for comparison (see Item)."""

    def __init__(self, path, source=None):
        self.path = pathlib.Path(path)
        self.source = source or self.path.stem + ".c"
        try:
            self.obj = check_object(self.path.read_bytes(), self.path.name)
        except (OSError, ModuleError) as exc:
            raise AuthoringError(f"{self.path}: cannot read the object: {exc}") from None
        self.sections = self.obj.sections
        self.symbols = self.obj.symbols
        self._named = {}    # section index -> sorted [(value, symbol)] of its named symbols
        for s in self.symbols:
            if s.name and s.type in (STT_FUNC, STT_OBJECT) and s.shndx not in (SHN_UNDEF, SHN_ABS) \
                    and s.shndx < len(self.sections):
                self._named.setdefault(s.shndx, []).append((s.value, s))
        for v in self._named.values():
            v.sort(key=lambda x: (x[0], x[1].index))

    # ---- items ----
    @cached_property
    def items(self):
        """{name: Item} of every defined function and variable."""
        out = {}
        for s in self.symbols:
            if not s.name or s.type not in (STT_FUNC, STT_OBJECT) or s.shndx in (SHN_UNDEF, SHN_ABS):
                continue
            out.setdefault(s.name, self._item(s))
        return out

    @property
    def functions(self):
        return {n: i for n, i in self.items.items() if i.kind == "function"}

    @property
    def variables(self):
        return {n: i for n, i in self.items.items() if i.kind == "object"}

    def undefined(self):
        return {s.name for s in self.symbols if s.name and s.shndx == SHN_UNDEF}

    def _item(self, sym):
        sec = self.sections[sym.shndx]
        data = self.obj.content(sec)[sym.value:sym.value + sym.size] if sec.type != SHT_NOBITS else bytes(sym.size)
        rels = [r for r in self.obj.relocations.get(sec.index, ()) if sym.value <= r.offset < sym.value + sym.size]
        code = bytearray(data)
        ends = self._instruction_ends(data, sym.value) if sym.type == STT_FUNC else None
        out = []
        for r in sorted(rels, key=lambda r: r.offset):
            width = _WIDTH.get(r.type, 4)
            rel_off = r.offset - sym.value
            code[rel_off:rel_off + width] = bytes(width)
            bias = 0
            if r.type in _PC_RELATIVE and ends is not None:
                bias = ends(r.offset) - r.offset
            key, addend = self._target(r, bias, sym)
            out.append((rel_off, r.type, key, addend))
        kind = "function" if sym.type == STT_FUNC else "object"
        return Item(sym.name, kind, sec.name, sym.size, "static" if sym.bind == STB_LOCAL else "global",
                    bool(sec.flags & SHF_WRITE), bytes(code), tuple(out))

    def _instruction_ends(self, code, base):
        starts, ends = [], []
        for addr, size, _m, _o in _cs.disasm_lite(bytes(code), base):
            starts.append(addr)
            ends.append(addr + size)

        def end_of(offset):
            i = bisect.bisect_right(starts, offset) - 1
            return ends[i] if i >= 0 else offset + 4
        return end_of

    def _target(self, rel, bias, site):
        """What a relocation points to, as a key independent of layout, and
        the addend that is left once the target is named."""
        sym = self.symbols[rel.sym]
        if sym.type != STT_SECTION and sym.name:
            return ("sym", normalized(sym.name)), rel.addend
        if sym.shndx in (SHN_UNDEF, SHN_ABS) or sym.shndx >= len(self.sections):
            return ("abs", sym.value), rel.addend
        sec = self.sections[sym.shndx]
        offset = rel.addend + bias + sym.value
        if sec.flags & SHF_STRINGS:
            data = self.obj.content(sec)
            end = data.find(b"\0", offset)
            return ("str", data[offset:end if end >= 0 else len(data)]), -bias
        named = self._symbol_in(sec.index, offset)
        if named is not None:
            kind = "func" if named.type == STT_FUNC else "obj"
            return (kind, normalized(named.name)), offset - named.value - bias
        if sec.index == self.sections[site.shndx].index:
            return ("self", None), offset - site.value - bias
        # an unnamed constant (a jump table, a .rodata.cst* literal): by its contents
        return ("data", self._section_digest(sec.index)), offset - bias

    def _symbol_in(self, shndx, offset):
        best = None
        for value, s in self._named.get(shndx, ()):
            if value <= offset < value + max(s.size, 1):
                best = s
                break
        return best

    def _section_digest(self, shndx, depth=0):
        sec = self.sections[shndx]
        code = bytearray(self.obj.content(sec)) if sec.type != SHT_NOBITS else bytearray(sec.size)
        for r in self.obj.relocations.get(shndx, ()):
            width = _WIDTH.get(r.type, 4)
            code[r.offset:r.offset + width] = bytes(width)
        h = hashlib.sha256(bytes(code))
        for r in sorted(self.obj.relocations.get(shndx, ()), key=lambda r: r.offset):
            sym = self.symbols[r.sym]
            if sym.type == STT_SECTION and sym.shndx == shndx:
                target = ("self", r.addend)
            elif sym.type == STT_SECTION and depth < 4 and sym.shndx < len(self.sections) \
                    and not self.sections[sym.shndx].flags & SHF_EXECINSTR:
                target = ("data", self._section_digest(sym.shndx, depth + 1), r.addend)
            elif sym.type == STT_SECTION and sym.shndx < len(self.sections):
                named = self._symbol_in(sym.shndx, r.addend)
                target = ("func", normalized(named.name) if named else self.sections[sym.shndx].name,
                          r.addend - (named.value if named else 0))
            else:
                target = ("sym", normalized(sym.name), r.addend)
            h.update(repr((r.offset, r.type, target)).encode())
        return h.hexdigest()[:16]
