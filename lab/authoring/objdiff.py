"""objdiff - two builds of one compilation unit compared function by function and variable by variable, relocations compared by what they point to."""
from __future__ import annotations

from dataclasses import dataclass, field

from .objfile import normalized


@dataclass(frozen=True)
class Change:
    """One function or variable of a compilation unit that differs."""

    name: str               # its symbol in the kernel (the original build), or in the patched build if new
    kind: str               # "function" or "object"
    status: str             # "changed", "new" or "gone"
    unit: str
    bound: str              # "global" or "static"
    writable: bool = False
    patched_name: str | None = None    # its symbol in the patched build, when numbering differs
    detail: str = ""

    def to_dict(self):
        d = {"name": self.name, "kind": self.kind, "status": self.status, "unit": self.unit, "bound": self.bound}
        if self.kind == "object":
            d["writable"] = self.writable
        if self.patched_name and self.patched_name != self.name:
            d["patched_name"] = self.patched_name
        if self.detail:
            d["detail"] = self.detail
        return d


@dataclass(frozen=True)
class LayoutChange:
    """A structure or union whose layout differs between the builds."""

    name: str
    unit: str
    what: str

    def to_dict(self):
        return {"type": self.name, "unit": self.unit, "what": self.what}


@dataclass
class UnitDiff:
    unit: str
    changes: list = field(default_factory=list)
    layouts: list = field(default_factory=list)
    pairs: dict = field(default_factory=dict)       # original name -> patched name, for every item in both

    def functions(self, status):
        return [c for c in self.changes if c.kind == "function" and c.status == status]

    def variables(self, status):
        return [c for c in self.changes if c.kind == "object" and c.status == status]


def correlate(old, new):
    """Pair the names of two builds: the same name, else the same name
    without gcc's numbering (foo.isra.0 and foo.isra.1), in order."""
    pairs = {n: n for n in old if n in new}
    rest_old = [n for n in old if n not in pairs]
    rest_new = [n for n in new if n not in pairs.values()]
    by_norm = {}
    for n in rest_new:
        by_norm.setdefault(normalized(n), []).append(n)
    for n in rest_old:
        cands = by_norm.get(normalized(n))
        if cands:
            pairs[n] = cands.pop(0)
    return pairs


def compare_units(unit, old_view, new_view, old_debug=None, new_debug=None):
    """The UnitDiff of one compilation unit (ObjectViews of both builds;
    their DebugInfo for the structure layouts)."""
    diff = UnitDiff(unit)
    old_items, new_items = old_view.items, new_view.items
    pairs = correlate(list(old_items), list(new_items))
    diff.pairs = pairs
    for o, n in pairs.items():
        a, b = old_items[o], new_items[n]
        if a.kind != b.kind:
            diff.changes.append(Change(o, a.kind, "changed", unit, a.bound, a.writable, n, f"now a {b.kind}"))
        elif a.fingerprint() != b.fingerprint():
            detail = _what_differs(a, b)
            diff.changes.append(Change(o, a.kind, "changed", unit, a.bound, a.writable, n, detail))
        elif a.bound != b.bound:
            diff.changes.append(Change(o, a.kind, "changed", unit, a.bound, a.writable, n,
                                       f"{a.bound} -> {b.bound}"))
    matched = set(pairs.values())
    for n, b in new_items.items():
        if n not in matched:
            diff.changes.append(Change(n, b.kind, "new", unit, b.bound, b.writable, n))
    for o, a in old_items.items():
        if o not in pairs:
            diff.changes.append(Change(o, a.kind, "gone", unit, a.bound, a.writable))
    if old_debug is not None and new_debug is not None:
        diff.layouts = compare_layouts(unit, old_debug, new_debug)
    return diff


def _what_differs(a, b):
    if a.size != b.size:
        return f"{a.size} -> {b.size} bytes"
    if a.code != b.code:
        return "code" if a.kind == "function" else "contents"
    old = {(o, t): (k, ad) for o, t, k, ad in a.relocations}
    for o, t, k, ad in b.relocations:
        if (o, t) in old and old[(o, t)] != (k, ad):
            ka = old[(o, t)][0]
            if ka[0] == "str" and k[0] == "str":
                return f"string {ka[1].decode(errors='replace')!r} -> {k[1].decode(errors='replace')!r}"
            return f"reference at +{o:#x}: {_key(ka)} -> {_key(k)}"
    return "references"


def _key(k):
    kind, what = k[0], k[1]
    if kind == "str":
        return repr(what.decode(errors="replace"))
    return str(what)


def compare_layouts(unit, old_debug, new_debug):
    old, new = old_debug.struct_layouts(), new_debug.struct_layouts()
    out = []
    for key in sorted(old.keys() & new.keys()):
        a, b = old[key], new[key]
        label = f"{key[0]} {key[1]}"
        if a.size != b.size:
            out.append(LayoutChange(label, unit, f"{a.size} -> {b.size} bytes"))
            continue
        if a.members != b.members:
            ma = {m[0]: m for m in a.members}
            for m in b.members:
                if m[0] not in ma:
                    out.append(LayoutChange(label, unit, f"new member {m[0]}"))
                    break
                if ma[m[0]] != m:
                    out.append(LayoutChange(label, unit, f"member {m[0]} moves or changes type "
                                                         f"(+{ma[m[0]][1]} {ma[m[0]][3]} -> +{m[1]} {m[3]})"))
                    break
            else:
                out.append(LayoutChange(label, unit, "a member is gone"))
    return out
