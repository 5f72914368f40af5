"""create - a live patch from a source diff, as kpatch-build and klp-build make one: both trees built, every function compared, what cannot be live-patched refused, the module generated and built (lab patch create)."""
from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from ..image import Image
from ..patchbuild import BuildError, firmware_cflags
from .compiled import CompiledKernel, base_name, clone_kinds
from .dwarf import DebugInfo
from .errors import AuthoringError
from .generate import GenerationError, generate_unit, glue
from .objdiff import compare_units
from .objfile import ObjectView, normalized
from .tree import apply_diff, compile_units, original_objects

KGR_PATCH_MAX_FUNS = 16      # firmware/include/kgraft.h


@dataclass(frozen=True)
class Refusal:
    """Why a diff cannot become a live patch, and the way out."""

    what: str
    why: str
    way_out: str
    rule: str

    def __str__(self):
        return f"{self.what}: {self.why}; {self.way_out}"

    def to_dict(self):
        return {"rule": self.rule, "what": self.what, "why": self.why, "way_out": self.way_out}


@dataclass(frozen=True)
class Target:
    """A kernel function the patch replaces."""

    symbol: str
    unit: str
    why: str

    def to_dict(self):
        return {"function": self.symbol, "unit": self.unit, "why": self.why}


@dataclass
class Creation:
    """Everything `lab patch create` found and made for one diff."""

    diff: pathlib.Path
    name: str
    files: list = field(default_factory=list)          # firmware files the diff changes
    units: list = field(default_factory=list)          # compilation units rebuilt
    changes: list = field(default_factory=list)        # objdiff.Change
    layouts: list = field(default_factory=list)        # objdiff.LayoutChange
    refusals: list = field(default_factory=list)       # Refusal
    targets: list = field(default_factory=list)        # Target
    generated: list = field(default_factory=list)      # generate.GeneratedUnit
    module: pathlib.Path | None = None
    sources: pathlib.Path | None = None
    check: object = None                               # check.CheckReport
    seconds: dict = field(default_factory=dict)

    @property
    def verdict(self):
        if self.refusals:
            return "refused"
        if not self.targets:
            return "nothing to patch"
        if self.check is not None and not self.check.passed:
            return "failed its check"
        return "patchable"

    @property
    def ok(self):
        return self.verdict == "patchable"

    def changed_functions(self):
        return sorted(c.name for c in self.changes if c.kind == "function" and c.status == "changed")

    def replaced(self):
        return sorted(t.symbol for t in self.targets)

    def to_dict(self):
        return {
            "diff": str(self.diff), "name": self.name, "verdict": self.verdict,
            "files": self.files, "units": self.units,
            "changed": [c.to_dict() for c in self.changes],
            "changed_functions": self.changed_functions(),
            "layouts": [x.to_dict() for x in self.layouts],
            "refusals": [r.to_dict() for r in self.refusals],
            "replaced": [t.to_dict() for t in sorted(self.targets, key=lambda t: t.symbol)],
            "carried": sorted({c for g in self.generated for c in g.carried}),
            "resolved": [r.to_dict() for g in self.generated for r in g.resolved],
            "linked": sorted({s for g in self.generated for s in g.linked}),
            "notes": [n for g in self.generated for n in g.notes],
            "module": str(self.module) if self.module else None,
            "sources": str(self.sources) if self.sources else None,
            "check": self.check.to_dict() if self.check is not None else None,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def patch_name(diff):
    name = re.sub(r"\W", "_", pathlib.Path(diff).stem).strip("_") or "patch"
    return name if not name[0].isdigit() else f"lp_{name}"


def create(diff, output=None, *, image=None, check=True, workload=None, schedules=None, cc="gcc", keep=True):
    """Make a live patch module from diff (a unified diff of firmware/);
    a Creation.  Refusals are part of the answer, not exceptions: an
    AuthoringError means the diff or the tools could not be used at all."""
    started = time.perf_counter()
    diff = pathlib.Path(diff)
    if not diff.is_file():
        raise AuthoringError(f"{diff}: no such diff; make one with `git diff -- firmware/ > FIX.diff`")
    img = image if isinstance(image, Image) else Image.load(image)
    kernel = CompiledKernel.of(img)
    result = Creation(diff, patch_name(diff))
    clock = _Clock(result)
    with clock("original"):
        originals = original_objects(img, cc)
    tree = apply_diff(diff)
    try:
        result.files = tree.changed + tree.added + tree.removed
        _refuse_files(result, tree)
        units = tree.units()
        result.units = units
        with clock("patched"):
            patched = compile_units(tree.root, units, tree.root / "build" / "authoring", cc) if units else {}
        with clock("compare"):
            views = {}
            for u in units:
                old, new = ObjectView(originals[u], u), ObjectView(patched[u], u)
                old_dbg, new_dbg = DebugInfo.read(originals[u]), DebugInfo.read(patched[u])
                try:
                    d = compare_units(u, old, new, old_dbg, new_dbg)
                finally:
                    old_dbg.close()
                views[u] = (old, new, d)
                result.changes += d.changes
                result.layouts += d.layouts
            _decide(result, kernel, views, originals, patched)
        if result.refusals or not result.targets:
            return result
        with clock("generate"):
            out = pathlib.Path(output) if output else diff.with_suffix(".o")
            _generate(result, kernel, tree, views, originals, patched, out, cc)
    finally:
        tree.cleanup()
        result.seconds["total"] = time.perf_counter() - started
    if check:
        from .check import check_patch
        with clock("check"):
            result.check = check_patch(result, img, workload=workload, schedules=schedules)
        result.seconds["total"] = time.perf_counter() - started
    return result


class _Clock:
    def __init__(self, result):
        self.result = result

    def __call__(self, name):
        clock = self

        class _Span:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                clock.result.seconds[name] = clock.result.seconds.get(name, 0) + time.perf_counter() - self.t
        return _Span()


# ---- what cannot be live-patched ----

def _refuse_files(result, tree):
    for path in tree.changed:
        if path.endswith(".S"):
            result.refusals.append(Refusal(
                f"firmware/{path}", "changes assembly: entry code and other asm functions have no fentry pad and "
                "run where no consistency model can switch them", "make the fix in C code the asm calls, or "
                "apply it with a reboot", "asm"))
        elif path.startswith("user/"):
            result.refusals.append(Refusal(
                f"firmware/{path}", "changes a user program, not the kernel", "a live patch replaces kernel "
                "functions only; rebuild the image for user space changes", "user"))
        elif path in ("Makefile", "kernel.ld") or path.startswith("tools/"):
            result.refusals.append(Refusal(
                f"firmware/{path}", "changes how the kernel is built or laid out", "a live patch is built with the "
                "running kernel's flags and layout; apply this change with a reboot", "build"))
    for path in tree.added:
        result.refusals.append(Refusal(f"firmware/{path}", "is a new source file", "put the new code into the "
                                       "file that calls it (static functions come with the patch)", "new-file"))
    for path in tree.removed:
        result.refusals.append(Refusal(f"firmware/{path}", "removes a source file", "a live patch cannot remove "
                                       "code from the running kernel; leave the file and stop calling it",
                                       "removed-file"))


def _decide(result, kernel, views, originals, patched):
    """The refusals and the functions to replace, from the changes."""
    targets, clones = {}, []

    def add(symbol, unit, why):
        if symbol.name not in targets or why == "changed":
            targets[symbol.name] = Target(symbol.name, unit, why)

    for lay in result.layouts:
        result.refusals.append(Refusal(
            lay.name, f"changes layout ({lay.what}); every {lay.name} already in the running kernel keeps the old "
            "one, and old and new code would read each other's fields", "keep the layout and attach the new "
            "data with a shadow variable (klp_shadow_get_or_alloc() keyed by the object)", "layout"))
    for u, (old, new, d) in views.items():
        for c in d.variables("changed"):
            if c.writable:
                result.refusals.append(Refusal(
                    f"{c.name} ({u})", f"initialized data changes ({c.detail}): the running kernel's {c.name} "
                    "holds the value it has now, not the one in the source", "leave the initializer and set the "
                    "new value from the patch (a shadow variable, or a write in the patch's init)", "data"))
            else:
                readers = _readers(kernel, views, originals, c.name)
                for unit, sym in readers:
                    add(sym, unit, f"reads the changed constant {c.name}")
        for c in d.variables("new"):
            if c.bound == "global":
                result.refusals.append(Refusal(
                    f"{c.name} ({u})", "is a new global variable: the kernel's code cannot refer to a variable "
                    "of a module, and a later patch could not find it", "make it static to the patch (a static "
                    "local or a static variable of the file), or attach it to an object with a shadow variable",
                    "new-global"))
    for u, (old, new, d) in views.items():
        for c in d.functions("changed"):
            sym = kernel.symbol(c.name)
            if sym is None:
                raise AuthoringError(f"{c.name} ({u}) is in the comparison build but not in {kernel.image.path.name}; "
                                     "rebuild the image with `make -C firmware`")
            if clone_kinds(sym.name):
                clones.append((sym, u))
            elif not kernel.has_pad(sym):
                result.refusals.append(Refusal(
                    f"{sym.name}()", "is notrace (it has no fentry pad), so ftrace cannot redirect it",
                    "move the fix into a traceable function it calls, or apply it with a reboot", "notrace"))
            else:
                add(sym, u, "changed")
    for sym, u in clones:
        _through_callers(result, kernel, sym, u, add, f"calls {sym.name}, which changed", set())
    _prototypes(result, kernel, views, targets)
    for t in targets.values():
        if kernel.count(t.symbol) > 1:
            result.refusals.append(Refusal(
                f"{t.symbol}()", f"names {kernel.count(t.symbol)} kernel symbols; kGraft finds a function by name",
                "rename one of the static functions", "ambiguous"))
    if len(targets) > KGR_PATCH_MAX_FUNS:
        result.refusals.append(Refusal(
            "the patch", f"replaces {len(targets)} functions, more than a struct kgr_patch holds "
            f"({KGR_PATCH_MAX_FUNS})", "split the fix into patches applied one after the other", "too-many"))
    result.targets = sorted(targets.values(), key=lambda t: t.symbol)


def _through_callers(result, kernel, clone, unit, add, why, seen):
    """A changed clone is replaced through its callers: its parameters are
    gcc's, so no C function of the source's prototype can stand in for it."""
    if clone.name in seen:
        return
    seen.add(clone.name)
    callers = kernel.callers(clone)
    if "cold" in clone_kinds(clone.name):
        parent = kernel.symbol(base_name(clone.name))
        callers = [parent] if parent is not None else callers
    for caller in callers:
        if clone_kinds(caller.name):
            _through_callers(result, kernel, caller, unit, add, f"calls {caller.name}, which calls {clone.name}",
                             seen)
        elif not kernel.has_pad(caller):
            result.refusals.append(Refusal(
                f"{caller.name}()", f"calls {clone.name}, which changed, and is notrace (no fentry pad)",
                "move the fix so that no notrace function's code changes, or apply it with a reboot", "notrace"))
        else:
            add(caller, unit, why)


def _readers(kernel, views, originals, name):
    """(unit, kernel symbol) of every function whose code refers to variable name."""
    out = []
    key = normalized(name)
    for unit, path in originals.items():
        view = views[unit][0] if unit in views else ObjectView(path, unit)
        for fname, item in view.functions.items():
            if key in item.references():
                sym = kernel.symbol(fname)
                if sym is not None:
                    out.append((unit, sym))
    return out


def _prototypes(result, kernel, views, targets):
    """A function whose prototype changes needs every caller replaced with it,
    and must not be called through a pointer."""
    for u, (old, new, d) in views.items():
        old_sig, new_sig = _signatures(old.path), _signatures(new.path)
        for c in d.functions("changed"):
            name = base_name(c.name)
            if name not in old_sig or name not in new_sig or old_sig[name] == new_sig[name]:
                continue
            sym = kernel.symbol(c.name)
            if sym is None or clone_kinds(sym.name):
                continue
            missing = [x.name for x in kernel.callers(sym) if x.name not in targets]
            if missing:
                result.refusals.append(Refusal(
                    f"{name}()", f"changes prototype ({old_sig[name]} -> {new_sig[name]}) but its caller"
                    f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} would go on calling it the old way",
                    "change the callers in the same diff, or keep the prototype and add a new function", "prototype"))
            pointers = _address_taken(kernel, views, c.name)
            if pointers:
                result.refusals.append(Refusal(
                    f"{name}()", f"changes prototype and its address is taken (in {', '.join(pointers)}): a call "
                    "through the pointer would pass the old arguments to the new function",
                    "keep the prototype and add a new function", "prototype"))


def _signatures(path):
    dbg = DebugInfo.read(path)
    try:
        return dict(dbg.signatures)
    finally:
        dbg.close()


def _address_taken(kernel, views, name):
    """Where the original build takes name's address rather than calling it."""
    from ..modules import R_X86_64_PLT32, R_X86_64_PC32
    key = normalized(name)
    out = []
    for unit, (old, _new, _d) in views.items():
        for iname, item in old.items.items():
            for off, rtype, target, _a in item.relocations:
                if target[0] in ("sym", "func") and target[1] == key:
                    if item.kind == "object" or rtype not in (R_X86_64_PLT32, R_X86_64_PC32) \
                            or not _is_branch(item, off):
                        out.append(iname)
                        break
    return sorted(set(out))


def _is_branch(item, offset):
    """Whether the relocated field at offset is a call's or jmp's operand (e8/e9 rel32)."""
    code = item.code
    if offset >= 1 and code[offset - 1] in (0xE8, 0xE9):
        return True
    return offset >= 2 and code[offset - 2] == 0x0F and 0x80 <= code[offset - 1] <= 0x8F


# ---- the module ----

def _generate(result, kernel, tree, views, originals, patched, output, cc):
    by_unit = {}
    for t in result.targets:
        by_unit.setdefault(t.unit, {})[base_name(t.symbol)] = t.symbol
    changed = {base_name(c.name) for c in result.changes if c.status == "changed"}
    new = {base_name(c.name) for c in result.changes if c.status == "new"}
    output = pathlib.Path(output)
    sources = output.with_suffix(".src") if output.suffix == ".o" else output.parent / (output.name + ".src")
    if sources.exists():
        if not (sources.is_dir() and (sources / "patch.c").is_file()):
            raise AuthoringError(f"{sources}: exists and is not the sources of an earlier `lab patch create`; "
                                 "move it, or choose another -o")
        shutil.rmtree(sources)
    sources.mkdir(parents=True)
    units = []
    for unit, targets in sorted(by_unit.items()):
        path = patched.get(unit) or originals[unit]
        dbg = DebugInfo.read(path)
        try:
            g = generate_unit(kernel, unit, (tree.root / unit).read_text(), dbg, targets, changed, new, result.name)
        except GenerationError as exc:
            result.refusals.append(Refusal(unit, str(exc).split(": ", 1)[-1], "simplify the change, or write the "
                                           "patch by hand (see patches/kgr_kallsyms.c)", "generator"))
            return
        finally:
            dbg.close()
        (sources / unit).write_text(g.text)
        units.append(g)
    (sources / "patch.c").write_text(glue(result.name, units))
    result.generated = units
    result.sources = sources
    try:
        flags = firmware_cflags()
    except BuildError as exc:
        raise AuthoringError(str(exc)) from None
    objects = []
    for name in [g.unit for g in units] + ["patch.c"]:
        obj = sources / (pathlib.Path(name).stem + ".o")
        cmd = [cc, *flags, f"-I{tree.root / 'include'}", f"-I{tree.root}", f"-fdebug-prefix-map={sources}=.",
               "-c", "-o", str(obj), name]
        proc = subprocess.run(cmd, cwd=sources, capture_output=True, text=True)
        if proc.returncode != 0:
            first = next((line for line in proc.stderr.splitlines() if "error" in line), proc.stderr.strip())
            raise AuthoringError(f"the generated {sources / name} does not compile: {first}; "
                                 "this is a defect of lab patch create: write the patch by hand meanwhile")
        objects.append(obj)
    ld = shutil.which("ld")
    if ld is None:
        raise AuthoringError("ld is not installed; install binutils")
    proc = subprocess.run([ld, "-r", "-o", str(output), *map(str, objects)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise AuthoringError(f"ld -r could not link the module: {proc.stderr.strip()}")
    for obj in objects:
        obj.unlink()
    result.module = output
