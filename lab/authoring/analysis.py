"""analyze - what gcc did to a function, and every function a live patch of it must replace (lab patch analyze)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .compiled import CLONE_KINDS, CompiledKernel, base_name, clone_kinds
from .errors import AuthoringError


@dataclass(frozen=True)
class Clone:
    """A function gcc made out of the analyzed one, with its own symbol."""

    symbol: str
    address: int
    kinds: tuple               # ('isra',), ('constprop', 'isra'), ('part',), ...
    params: tuple              # dwarf.Parameter: how it passes each parameter of the source
    pad: bool
    callers: tuple             # symbols that call or jump to it

    def changes(self):
        """What the clone dropped or fixed, in words."""
        out = []
        for p in self.params:
            if p.how == "fixed":
                out.append(f"{p.name} fixed to {p.value}")
            elif p.how == "dropped":
                out.append(f"{p.name} not passed")
        return out

    def to_dict(self):
        return {"symbol": self.symbol, "address": self.address, "kinds": list(self.kinds),
                "what": [CLONE_KINDS[k] for k in self.kinds],
                "parameters": [{"name": p.name, "how": p.how, **({"value": p.value} if p.how == "fixed" else {})}
                               for p in self.params],
                "changes": self.changes(), "pad": self.pad, "callers": list(self.callers)}


@dataclass(frozen=True)
class Replacement:
    """A function a patch must replace, and why."""

    function: str
    why: str
    patchable: bool = True

    def to_dict(self):
        return {"function": self.function, "why": self.why, "patchable": self.patchable}


@dataclass(frozen=True)
class FunctionAnalysis:
    """lab patch analyze's answer for one function."""

    name: str
    file: str | None
    line: int | None
    symbol: str | None           # the plain out-of-line copy, if there is one
    address: int | None
    static: bool
    pad: bool
    inlined_into: tuple          # (host, file, line)
    clones: tuple                # Clone
    called_from: tuple           # direct callers of the plain copy
    tail_called_from: tuple      # callers that reach the plain copy by a jmp (a tail call)
    static_locals: tuple         # (name in the source, kernel symbol)
    must_replace: tuple          # Replacement
    notes: tuple = field(default=())

    @property
    def patchable(self):
        return bool(self.must_replace) and all(r.patchable for r in self.must_replace)

    def to_dict(self):
        return {
            "function": self.name, "file": self.file, "line": self.line,
            "symbol": self.symbol, "address": self.address,
            "static": self.static, "needs_kallsyms": self.static,
            "pad": self.pad, "traceable": self.pad,
            "inlined_into": [{"function": h, "file": f, "line": n} for h, f, n in self.inlined_into],
            "clones": [c.to_dict() for c in self.clones],
            "called_from": list(self.called_from), "tail_called_from": list(self.tail_called_from),
            "static_locals": [{"name": n, "symbol": s} for n, s in self.static_locals],
            "must_replace": [r.to_dict() for r in self.must_replace],
            "patchable": self.patchable,
            "notes": list(self.notes),
        }


def analyze(image, names):
    """FunctionAnalysis of each function name (a source name, or a clone's symbol)."""
    kernel = CompiledKernel.of(image)
    return [analyze_one(kernel, n) for n in names]


def analyze_one(kernel, name):
    img = kernel.image
    known = kernel.source_function_names()
    sym = kernel.symbol(name)
    if sym is not None and clone_kinds(sym.name):
        name = kernel.source_name(sym)          # a clone given: analyze its source function
        sym = kernel.symbol(name)
    if sym is None and name not in known:
        close = sorted(n for n in known if name.lower() in n.lower())[:5]
        hint = f"; did you mean {', '.join(close)}?" if close else "; `lab symbols` lists the kernel's functions"
        raise AuthoringError(f"no function {name!r} in {img.path.name} (neither out of line nor inlined){hint}")
    sub = kernel.subprogram(sym) if sym is not None else None
    decl = sub or next((s for s in kernel.debug.subprograms if s.name == name), None)
    pad = sym is not None and kernel.has_pad(sym)
    inlined = tuple((h.name, f, line) for h, f, line in kernel.inlined_into(name))
    clones = tuple(Clone(c.name, c.address, clone_kinds(c.name),
                         kernel.subprogram(c).params if kernel.subprogram(c) else (),
                         kernel.has_pad(c), tuple(x.name for x in kernel.callers(c)))
                   for c in kernel.clones(name))
    called = tuple(c.name for c in kernel.callers(sym, "call")) if sym else ()
    tail = tuple(c.name for c in kernel.callers(sym, "jmp")
                 if base_name(c.name) != name) if sym else ()
    locals_ = tuple((v.name, s) for v, s in kernel.static_locals(name))
    static = sym.local if sym is not None else not (decl.external if decl else False)
    notes = []
    if sym is None and clones:
        notes.append(f"{name} has no out-of-line copy with its own prototype: its callers reach "
                     f"{', '.join(c.symbol for c in clones)}, whose parameters are gcc's, so a patch replaces "
                     "those callers")
    elif sym is None:
        notes.append(f"{name} exists only inlined: it has no symbol of its own, so a patch replaces the functions "
                     "that hold its copies")
    elif not pad:
        notes.append(f"{name} is notrace (no fentry pad): it cannot be patched; a fix in it needs a reboot, or "
                     "a change in its callers")
    if static and sym is not None:
        notes.append(f"{name} is static: a patch module cannot link against it; it finds it with "
                     f"kallsyms_lookup_name(\"{name}\")" + (f" ({kernel.count(name)} symbols of that name: "
                                                             "ambiguous)" if kernel.count(name) > 1 else ""))
    if tail:
        notes.append(f"{', '.join(tail)} reach{'es' if len(tail) == 1 else ''} {name} by a jmp (a tail call): while "
                     f"{name} runs, the caller has no frame on the stack, so a stack check does not see it")
    for v, s in locals_:
        notes.append(f"static local {v}: a new version of {name} must use the kernel's "
                     f"{s or v} (kallsyms), not a copy of its own")
    return FunctionAnalysis(name, decl.decl_file if decl else None, decl.decl_line if decl else None,
                            sym.name if sym else None, sym.address if sym else None, static, pad, inlined, clones,
                            called, tail, locals_, tuple(must_replace(kernel, name)), tuple(notes))


def must_replace(kernel, name):
    """The functions whose code holds `name`'s code, as a patch replaces them:
    its own copy, every function it was inlined into, and for a clone (whose
    prototype is gcc's, not the source's) the functions that call the clone."""
    out = {}

    def add(symbol, why):
        if symbol.name not in out:
            out[symbol.name] = Replacement(symbol.name, why, kernel.has_pad(symbol))

    def through_callers(clone, what, seen):
        # what: the clone in words; its callers are replaced instead of it
        if clone.name in seen:
            return
        seen.add(clone.name)
        for caller in kernel.callers(clone):
            if clone_kinds(caller.name):
                through_callers(caller, f"{caller.name}, which calls {what}", seen)
            else:
                add(caller, f"calls {what}")

    sym = kernel.symbol(name)
    if sym is not None:
        add(sym, "itself" if kernel.has_pad(sym) else "itself, but it is notrace: no fentry pad")
    for host, f, line in kernel.inlined_into(name):
        if clone_kinds(host.name):
            through_callers(host, f"{host.name}, which holds an inlined copy ({f}:{line})", set())
        else:
            add(host, f"holds an inlined copy ({f}:{line})")
    for c in kernel.clones(name):
        if "cold" in clone_kinds(c.name) and sym is not None:
            continue    # replaced with the function it was split from
        through_callers(c, f"the clone {c.name}", set())
    return sorted(out.values(), key=lambda r: (r.why != "itself", r.function))
