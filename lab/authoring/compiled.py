"""compiled - what gcc made of the kernel: its DWARF read together with its symbols, fentry pads and calls."""
from __future__ import annotations

import re
from functools import cached_property

from ..disasm import disassemble
from .dwarf import DebugInfo

# The suffixes gcc gives the functions it makes out of one in the source.
CLONE_KINDS = {
    "isra": "IPA-SRA clone: parameters dropped or passed by value",
    "constprop": "IPA-CP clone: constant arguments folded in",
    "part": "ipa-split: the out-of-line part of a partly inlined function",
    "cold": "the cold part of a function, split off by -freorder-blocks-and-partition",
    "lto_priv": "a static function made unique by LTO",
    "localalias": "a local alias of a global function",
}
_SUFFIX = re.compile(r"\.(isra|constprop|part|cold|lto_priv|localalias)(?:\.\d+)?")


def clone_kinds(symbol):
    """The clone kinds in a symbol name, in order: ('constprop', 'isra') for foo.constprop.0.isra.0."""
    return tuple(m.group(1) for m in _SUFFIX.finditer(symbol))


def base_name(symbol):
    """The source function a symbol was made from: foo for foo.isra.0."""
    m = _SUFFIX.search(symbol)
    return symbol[:m.start()] if m else symbol


_LOADED = {}


class CompiledKernel:
    """A kernel image and its DWARF, with the questions a patch author asks.
    One per image file: CompiledKernel.of(image)."""

    def __init__(self, image):
        self.image = image
        self.debug = DebugInfo.read(image.path)
        self.debug.close()
        self._subs = {s.address: s for s in self.debug.subprograms}

    @classmethod
    def of(cls, image):
        st = image.path.stat()
        key = (str(image.path.resolve()), st.st_size, st.st_mtime_ns)
        ck = _LOADED.get(key)
        if ck is None or ck.image is not image:
            ck = cls(image)
            _LOADED.clear()
            _LOADED[key] = ck
        return ck

    # ---- symbols ----
    @cached_property
    def kernel_functions(self):
        """The kernel's function symbols (the user programs' left out)."""
        return tuple(f for f in self.image.functions if not self.image.in_user(f.address))

    def symbol(self, name):
        sym = self.image.lookup(name)
        return sym if sym is not None and sym.kind == "func" and not self.image.in_user(sym.address) else None

    def source_name(self, symbol):
        """The name in the source of the function a symbol's body was compiled from."""
        sub = self._subs.get(symbol.address)
        return sub.name if sub is not None else base_name(symbol.name)

    def subprogram(self, symbol):
        return self._subs.get(symbol.address)

    def is_clone(self, symbol):
        return bool(clone_kinds(symbol.name))

    def count(self, name):
        """How many kernel symbols have this name (kallsyms_lookup_name() returns the first)."""
        return sum(1 for s in self.image.symbols if s.name == name)

    def clones(self, name):
        """The symbols gcc made from function `name` other than its plain copy."""
        return [f for f in self.kernel_functions
                if f.name != name and clone_kinds(f.name) and self.source_name(f) == name]

    def inlined_into(self, name):
        """[(host symbol, file, line)] for every inlined copy of `name`, by host address."""
        out = []
        for c in self.debug.inlined_copies_of(name):
            host = self.image.function_at(c.host_address) if c.host_address is not None else None
            if host is not None:
                out.append((host, c.file, c.line))
        return sorted(out, key=lambda x: (x[0].address, x[2]))

    def static_locals(self, name):
        """[(StaticLocal, kernel symbol name or None)] of function `name`."""
        out, seen = [], set()
        for v in self.debug.static_locals:
            if v.function != name or (v.name, v.address) in seen:
                continue
            seen.add((v.name, v.address))
            sym = next((s for s in self.image.symbols if s.address == v.address and s.kind == "object"), None) \
                if v.address is not None else None
            out.append((v, sym.name if sym else None))
        return out

    def static_local_symbol(self, function, name):
        """The kernel symbol of static local `name` of `function` (wb_report_last.0), or None."""
        for v, sym in self.static_locals(function):
            if v.name == name:
                return sym
        return None

    def source_function_names(self):
        """Every function name DWARF knows of: out of line, cloned or only inlined."""
        names = {s.name for s in self.debug.subprograms}
        names |= {c.function for c in self.debug.inlined}
        return names

    # ---- calls ----
    @cached_property
    def _edges(self):
        """callee address -> [(caller symbol, 'call' | 'jmp')], from disassembling every kernel function."""
        entries = {f.address for f in self.kernel_functions}
        edges = {}
        for f in self.kernel_functions:
            code = self.image.read(f.address, f.size)
            for insn in disassemble(code, f.address):
                m = insn.mnemonic
                if not (m == "call" or m.startswith("j")):
                    continue
                try:
                    target = int(insn.operands, 16)
                except ValueError:
                    continue        # through a register or memory
                if target in entries and target != f.address:
                    edges.setdefault(target, []).append((f, "call" if m == "call" else "jmp"))
        return edges

    def callers(self, symbol, kind=None):
        """The functions that call (kind 'call') or jump to (kind 'jmp': a tail call) symbol's entry."""
        seen, out = set(), []
        for caller, k in self._edges.get(symbol.address, ()):
            if (kind is None or k == kind) and caller.name not in seen:
                seen.add(caller.name)
                out.append(caller)
        return out

    def has_pad(self, symbol):
        return self.image.pad(symbol.name) is not None and self.image.pad(symbol.name).address == symbol.address
