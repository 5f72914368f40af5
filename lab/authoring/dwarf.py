"""dwarf - what gcc wrote down about its decisions: inlined copies, clones, static locals, variables and types, read with pyelftools."""
from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError
from elftools.dwarf.dwarf_expr import DWARFExprParser
from elftools.elf.elffile import ELFFile

from .errors import AuthoringError

DW_OP_addr = 0x03
DW_OP_GNU_parameter_ref = 0xFA


@dataclass(frozen=True)
class InlinedCopy:
    """A copy of `function` that gcc inlined into the out-of-line function
    starting at `host_address`, for the call at file:line."""

    function: str
    host_address: int | None
    file: str
    line: int


@dataclass(frozen=True)
class Parameter:
    """A parameter of an out-of-line function as gcc passes it: `kept`,
    `fixed` (a constant folded in by IPA-CP, `value` holds it) or `dropped`
    (not passed: unused, or replaced by the values it pointed to, IPA-SRA)."""

    name: str
    how: str
    value: int | None = None


@dataclass(frozen=True)
class Subprogram:
    """An out-of-line function: a symbol's body.  `name` is its name in the
    source (a clone's is its origin's)."""

    name: str
    address: int | None
    cu: str
    decl_file: str
    decl_line: int
    external: bool
    params: tuple = ()            # Parameter, for every parameter of the source's prototype
    concrete_of_abstract: bool = False   # a concrete instance of an abstract (inlined or cloned) function


@dataclass(frozen=True)
class StaticLocal:
    """A variable with static storage declared inside a function."""

    function: str
    name: str
    address: int | None
    cu: str
    decl_line: int


@dataclass(frozen=True)
class Variable:
    """A variable declared at file scope of a compilation unit."""

    name: str
    cu: str
    decl_file: str
    decl_line: int
    external: bool
    definition: bool
    address: int | None
    die: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Struct:
    """A structure or union type's layout: its size and (member, offset, type) triples."""

    name: str
    kind: str
    size: int | None
    members: tuple
    cu: str
    decl_file: str


@dataclass
class DebugInfo:
    """The DWARF of one ELF file (a linked image or a relocatable object)."""

    path: pathlib.Path
    subprograms: list = field(default_factory=list)
    inlined: list = field(default_factory=list)
    static_locals: list = field(default_factory=list)
    variables: list = field(default_factory=list)
    structs: list = field(default_factory=list)
    signatures: dict = field(default_factory=dict)   # function name -> its C prototype's types, for defined functions
    _elf: object = field(default=None, repr=False)

    @classmethod
    def read(cls, path):
        path = pathlib.Path(path)
        try:
            stream = open(path, "rb")
        except OSError as exc:
            raise AuthoringError(f"{path}: cannot read it ({exc.strerror})") from None
        try:
            elf = ELFFile(stream)
            if not elf.has_dwarf_info():
                raise AuthoringError(f"{path}: has no DWARF; build it with -g (the firmware's flags have it)")
            info = cls(path, _elf=(stream, elf))
            _Reader(info, elf.get_dwarf_info()).read()
        except ELFError as exc:
            stream.close()
            raise AuthoringError(f"{path}: not an ELF file pyelftools can read ({exc})") from None
        except BaseException:
            stream.close()
            raise
        return info

    def close(self):
        if self._elf is not None:
            self._elf[0].close()
            self._elf = None

    def subprogram_at(self, address):
        for s in self.subprograms:
            if s.address == address:
                return s
        return None

    def inlined_copies_of(self, name):
        return [c for c in self.inlined if c.function == name]

    def struct_layouts(self):
        """{(kind, name): Struct} of the complete named structures and unions."""
        return {(s.kind, s.name): s for s in self.structs if s.size is not None}


def _text(value):
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


class _Reader:
    def __init__(self, info, dwarf):
        self.info = info
        self.dwarf = dwarf

    def read(self):
        for cu in self.dwarf.iter_CUs():
            top = cu.get_top_DIE()
            self.cu_name = _text(top.attributes["DW_AT_name"].value) if "DW_AT_name" in top.attributes else "?"
            self.cu = cu
            self.files = self._files(cu)
            self.expr = DWARFExprParser(cu.structs)
            for die in top.iter_children():
                self._top(die)

    def _files(self, cu):
        lp = self.dwarf.line_program_for_CU(cu)
        if lp is None:
            return {}
        entries = lp["file_entry"]
        base = 0 if cu.header.version >= 5 else 1   # DWARF 5 numbers files from 0
        return {i + base: pathlib.PurePosixPath(_text(fe.name)).name for i, fe in enumerate(entries)}

    # ---- names through abstract origins ----
    def _origin(self, die):
        for attr in ("DW_AT_abstract_origin", "DW_AT_specification"):
            if attr in die.attributes:
                return die.get_DIE_from_attribute(attr)
        return None

    def _attr(self, die, name, default=None):
        seen = 0
        while die is not None and seen < 8:
            if name in die.attributes:
                return die.attributes[name].value
            die, seen = self._origin(die), seen + 1
        return default

    def _name(self, die):
        value = self._attr(die, "DW_AT_name")
        return _text(value) if value is not None else None

    def _low_pc(self, die):
        return die.attributes["DW_AT_low_pc"].value if "DW_AT_low_pc" in die.attributes else None

    def _addr_of(self, die):
        """The address of a variable with static storage (DW_OP_addr), else None."""
        loc = die.attributes.get("DW_AT_location")
        if loc is None or loc.form not in ("DW_FORM_exprloc", "DW_FORM_block1", "DW_FORM_block"):
            return None
        expr = loc.value
        if expr and expr[0] == DW_OP_addr:
            ops = self.expr.parse_expr(expr)
            return ops[0].args[0] if ops else None
        return None

    def _static_storage(self, die):
        loc = die.attributes.get("DW_AT_location")
        return loc is not None and loc.form in ("DW_FORM_exprloc", "DW_FORM_block1", "DW_FORM_block") \
            and bool(loc.value) and loc.value[0] == DW_OP_addr

    # ---- the DIEs ----
    def _top(self, die):
        tag = die.tag
        if tag == "DW_TAG_subprogram":
            self._subprogram(die)
        elif tag == "DW_TAG_variable":
            self._variable(die)
        elif tag in ("DW_TAG_structure_type", "DW_TAG_union_type"):
            self._struct(die)

    def _decl(self, die):
        f = self._attr(die, "DW_AT_decl_file")
        line = self._attr(die, "DW_AT_decl_line") or 0
        return self.files.get(f, self.cu_name), line

    def _subprogram(self, die):
        name = self._name(die)
        if name is None:
            return
        if "DW_AT_name" in die.attributes and "DW_AT_declaration" not in die.attributes:
            self.info.signatures.setdefault(name, self._signature(die))
        decl_file, decl_line = self._decl(die)
        low = self._low_pc(die)
        # static locals are described in the abstract instance (or the only one)
        self._locals(die, name)
        if low is None:
            return
        external = bool(self._attr(die, "DW_AT_external", False))
        origin = self._origin(die)
        params = self._params(die, origin) if origin is not None else ()
        sub = Subprogram(name, low, self.cu_name, decl_file, decl_line, external, params,
                         concrete_of_abstract=origin is not None)
        self.info.subprograms.append(sub)
        self._inlined(die, low)

    def _signature(self, die):
        params = []
        for c in die.iter_children():
            if c.tag == "DW_TAG_formal_parameter":
                params.append(type_name(c))
            elif c.tag == "DW_TAG_unspecified_parameters":
                params.append("...")
        ret = type_name(die) if "DW_AT_type" in die.attributes else "void"
        return f"{ret} ({', '.join(params)})"

    def _params(self, concrete, abstract):
        """How the concrete instance passes each parameter of the abstract one."""
        declared = [c for c in abstract.iter_children() if c.tag == "DW_TAG_formal_parameter"]
        present = {}
        for c in concrete.iter_children():
            if c.tag != "DW_TAG_formal_parameter":
                continue
            o = self._origin(c)
            if o is not None:
                present[o.offset] = c
        out = []
        for p in declared:
            name = _text(p.attributes["DW_AT_name"].value) if "DW_AT_name" in p.attributes else "?"
            c = present.get(p.offset)
            if c is None:
                out.append(Parameter(name, "dropped"))
            elif "DW_AT_const_value" in c.attributes:
                out.append(Parameter(name, "fixed", c.attributes["DW_AT_const_value"].value))
            elif self._parameter_ref(c):
                out.append(Parameter(name, "dropped"))
            else:
                out.append(Parameter(name, "kept"))
        return tuple(out)

    def _parameter_ref(self, die):
        """True if every location of die is a DW_OP_GNU_parameter_ref: the
        value lives in the caller only (IPA-SRA did not pass it)."""
        loc = die.attributes.get("DW_AT_location")
        if loc is None:
            return True
        if loc.form == "DW_FORM_exprloc":
            return bool(loc.value) and loc.value[0] == DW_OP_GNU_parameter_ref
        try:
            entries = self.dwarf.location_lists().get_location_list_at_offset(loc.value, die=die)
        except Exception:   # a location list pyelftools cannot read: say kept
            return False
        exprs = [e.loc_expr for e in entries if hasattr(e, "loc_expr")]
        return bool(exprs) and all(x and x[0] == DW_OP_GNU_parameter_ref for x in exprs)

    def _inlined(self, die, host):
        # (DIE, the function whose code encloses it); a copy nested in a
        # copy of the same function is gcc's bookkeeping, not another call
        todo = [(c, self._name(die)) for c in die.iter_children()]
        while todo:
            d, outer = todo.pop()
            inner = outer
            if d.tag == "DW_TAG_inlined_subroutine":
                name = inner = self._name(d)
                f = d.attributes.get("DW_AT_call_file")
                line = d.attributes.get("DW_AT_call_line")
                if name is not None and name != outer:
                    self.info.inlined.append(InlinedCopy(name, host, self.files.get(f.value, "?") if f else "?",
                                                         line.value if line else 0))
            if d.tag in ("DW_TAG_inlined_subroutine", "DW_TAG_lexical_block"):
                todo.extend((c, inner) for c in d.iter_children())

    def _locals(self, die, function):
        todo = list(die.iter_children())
        while todo:
            d = todo.pop()
            if d.tag == "DW_TAG_variable" and self._static_storage(d):
                name = self._name(d)
                if name is not None:
                    self.info.static_locals.append(StaticLocal(function, name, self._addr_of(d), self.cu_name,
                                                               self._attr(d, "DW_AT_decl_line") or 0))
            elif d.tag == "DW_TAG_lexical_block":
                todo.extend(d.iter_children())

    def _variable(self, die):
        name = self._name(die)
        if name is None:
            return
        decl_file, decl_line = self._decl(die)
        spec = die.attributes.get("DW_AT_specification")
        definition = "DW_AT_declaration" not in die.attributes
        external = bool(self._attr(die, "DW_AT_external", False))
        typed = die if "DW_AT_type" in die.attributes else (die.get_DIE_from_attribute("DW_AT_specification")
                                                            if spec else die)
        self.info.variables.append(Variable(name, self.cu_name, decl_file, decl_line, external, definition,
                                            self._addr_of(die), typed))

    def _struct(self, die):
        if "DW_AT_name" not in die.attributes or "DW_AT_declaration" in die.attributes:
            return
        members = []
        for m in die.iter_children():
            if m.tag != "DW_TAG_member":
                continue
            off = m.attributes.get("DW_AT_data_member_location")
            bit = m.attributes.get("DW_AT_data_bit_offset")
            members.append((self._name(m) or "", off.value if off is not None else None,
                            bit.value if bit is not None else None, type_name(m)))
        size = die.attributes.get("DW_AT_byte_size")
        kind = "struct" if die.tag == "DW_TAG_structure_type" else "union"
        self.info.structs.append(Struct(_text(die.attributes["DW_AT_name"].value), kind,
                                        size.value if size else None, tuple(members), self.cu_name,
                                        self._decl(die)[0]))


# ---- types as C ----

def _type(die):
    return die.get_DIE_from_attribute("DW_AT_type") if "DW_AT_type" in die.attributes else None


def type_name(die):
    """The C spelling of die's type (die has a DW_AT_type), for comparisons and messages."""
    t = _type(die)
    try:
        return c_declaration(t, "").strip()
    except TypeError_:
        return "(an anonymous type)"


class TypeError_(AuthoringError):
    """A type the C printer cannot spell."""


def c_declaration(type_die, declarator):
    """A C declaration of declarator with the DWARF type type_die (None: void)."""
    if type_die is None:
        return f"void {declarator}".rstrip()
    tag = type_die.tag
    if tag in ("DW_TAG_base_type", "DW_TAG_typedef"):
        return f"{_text(type_die.attributes['DW_AT_name'].value)} {declarator}".rstrip()
    if tag in ("DW_TAG_structure_type", "DW_TAG_union_type", "DW_TAG_enumeration_type"):
        if "DW_AT_name" not in type_die.attributes:
            raise TypeError_("an anonymous struct, union or enum type cannot be named in a declaration")
        kw = {"DW_TAG_structure_type": "struct", "DW_TAG_union_type": "union",
              "DW_TAG_enumeration_type": "enum"}[tag]
        return f"{kw} {_text(type_die.attributes['DW_AT_name'].value)} {declarator}".rstrip()
    if tag == "DW_TAG_pointer_type":
        target = _type(type_die)
        inner = f"*{declarator}"
        bare = _strip_cv(target)
        if bare is not None and bare.tag in ("DW_TAG_array_type", "DW_TAG_subroutine_type"):
            inner = f"(*{declarator})"
        return c_declaration(target, inner)
    if tag in ("DW_TAG_const_type", "DW_TAG_volatile_type"):
        q = "const" if tag == "DW_TAG_const_type" else "volatile"
        target = _type(type_die)
        if target is not None and target.tag == "DW_TAG_pointer_type":
            return c_declaration(target, f"{q} {declarator}".rstrip())
        return f"{q} {c_declaration(target, declarator)}"
    if tag == "DW_TAG_array_type":
        dims = ""
        for sub in type_die.iter_children():
            if sub.tag != "DW_TAG_subrange_type":
                continue
            if "DW_AT_count" in sub.attributes:
                dims += f"[{sub.attributes['DW_AT_count'].value}]"
            elif "DW_AT_upper_bound" in sub.attributes:
                dims += f"[{sub.attributes['DW_AT_upper_bound'].value + 1}]"
            else:
                dims += "[]"
        inner = f"({declarator})" if declarator.startswith("*") else declarator
        return c_declaration(_type(type_die), f"{inner}{dims}")
    if tag == "DW_TAG_subroutine_type":
        params = []
        for p in type_die.iter_children():
            if p.tag == "DW_TAG_formal_parameter":
                params.append(c_declaration(_type(p), ""))
            elif p.tag == "DW_TAG_unspecified_parameters":
                params.append("...")
        if not params and type_die.attributes.get("DW_AT_prototyped"):
            params = ["void"]
        return c_declaration(_type(type_die), f"{declarator}({', '.join(params)})")
    raise TypeError_(f"a type the declaration printer does not know ({tag})")


def _strip_cv(die):
    while die is not None and die.tag in ("DW_TAG_const_type", "DW_TAG_volatile_type"):
        die = _type(die)
    return die
