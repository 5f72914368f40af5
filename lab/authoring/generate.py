"""generate - the C source of a kGraft patch module made from a patched compilation unit: replaced functions renamed, the kernel's static symbols reached through pointers filled in with kallsyms_lookup_name() (the klp-convert idea, done in the module's init as the kGraft article does)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .compiled import clone_kinds
from .csource import pieces, statement_at, without_initializers
from .dwarf import TypeError_, c_declaration
from .errors import AuthoringError

NEW_PREFIX = "kgr_new_"
SYMBOL_PREFIX = "kgr_sym_"
# words that make a function's prototype say more than its type; a pointer declared from it must not carry them
_ATTRIBUTE_WORDS = {"inline", "__inline", "__inline__", "notrace", "__noinline", "noinline", "__used", "__init",
                    "__exit", "__always_inline", "__cold", "__hot"}


class GenerationError(AuthoringError):
    """A patched compilation unit the generator cannot turn into a module."""


@dataclass(frozen=True)
class Resolved:
    """A static kernel symbol the module reaches through a pointer."""

    pointer: str       # the module's pointer variable
    symbol: str        # the kernel symbol kallsyms_lookup_name() is asked for
    what: str          # "function", "variable" or "static local of FUNC"

    def to_dict(self):
        return {"pointer": self.pointer, "symbol": self.symbol, "what": self.what}


@dataclass
class GeneratedUnit:
    unit: str
    prepare: str                        # the name of its kgr_prepare_*() function
    text: str = ""
    replaced: dict = field(default_factory=dict)     # kernel symbol -> new function's name
    carried: list = field(default_factory=list)      # functions and variables the module has its own copy of
    resolved: list = field(default_factory=list)     # Resolved
    linked: list = field(default_factory=list)       # global kernel symbols the loader links
    new_statics: list = field(default_factory=list)  # static locals / variables new in the patch (their own copies)
    notes: list = field(default_factory=list)


def _c_ident(text):
    return re.sub(r"\W", "_", text)


def generate_unit(kernel, unit, source, debug, targets, changed, new, patch_name):
    """The module source for one patched compilation unit.

    kernel: CompiledKernel of the running kernel; source: the patched text;
    debug: DebugInfo of the patched unit's object; targets: {source name:
    kernel symbol} of the functions of this unit the patch replaces;
    changed / new: source names whose code or data changed / that only the
    patched build has."""
    ps = pieces(source)
    funcs = {p.name: p for p in ps if p.kind == "function" and p.name}
    taken = {t.text for p in ps for t in p.tokens if t.kind == "id"}
    gen = GeneratedUnit(unit, f"kgr_prepare_{_c_ident(unit.rsplit('.', 1)[0])}")

    def fresh(name):
        out = name
        while out in taken:
            out += "_"
        taken.add(out)
        return out

    # file-scope variables defined here, from the patched build's DWARF
    variables = {}
    for v in debug.variables:
        if v.cu.endswith(unit) and v.decl_file == unit and v.definition:
            variables.setdefault(v.name, v)
    holder = {}
    for name, v in variables.items():
        p = next((p for p in ps if p.kind == "declaration" and p.first_line <= v.decl_line <= p.last_line), None)
        if p is not None:
            holder[name] = p

    kept = {}             # function name -> "target" | "carried"
    fate = {}             # other names -> ("resolve", pointer, symbol, what) | ("link",) | ("carry",) | ("rename", new)
    for name, sym in targets.items():
        if name not in funcs:
            raise GenerationError(f"{unit}: the patched source defines no function {name}(); gcc made {sym} from it")
        kept[name] = "target"
        fate[name] = ("rename", fresh(NEW_PREFIX + name))
        gen.replaced[sym] = fate[name][1]
    refs = set()
    for p in ps:
        if p.kind == "directive":
            refs |= p.identifiers()
    todo = list(kept)
    while todo:
        refs |= funcs[todo.pop()].identifiers()
        for name in sorted(refs):
            if name in fate or name in kept:
                continue
            if name in funcs:
                decision = _function_fate(kernel, name, funcs[name], changed, new)
                if decision == "carry":
                    kept[name] = "carried"
                    fate[name] = ("carry",)
                    gen.carried.append(name)
                    todo.append(name)
                elif decision == "resolve":
                    fate[name] = ("resolve", fresh(SYMBOL_PREFIX + name), name, "function")
                else:
                    fate[name] = ("link",)
            elif name in variables:
                fate[name] = _variable_fate(kernel, unit, name, variables[name], changed, new, fresh)
                if fate[name][0] in ("carry", "rename"):
                    gen.carried.append(name)
                    if name in new:
                        gen.new_statics.append(name)

    # static locals of the functions the module has: the kernel's own, through pointers
    hoisted = {}          # function -> [(local name, pointer, statement (start, end), text)]
    for fname in kept:
        p = funcs[fname]
        for local in [v for v in debug.static_locals if v.function == fname and v.cu.endswith(unit)]:
            ksym = kernel.static_local_symbol(fname, local.name)
            found = statement_at(source, p, local.decl_line, local.name)
            if found is None:
                continue
            if ksym is None:
                gen.new_statics.append(f"{fname}:{local.name}")
                gen.notes.append(f"the static local {local.name} of {fname}() is new: the module has its own, "
                                 "which starts at its initial value when the patch is loaded")
                continue
            if kernel.count(ksym) != 1:
                raise GenerationError(f"{unit}: the static local {local.name} of {fname}() is {ksym} in the kernel, "
                                      f"and {kernel.count(ksym)} symbols have that name: kallsyms cannot tell them "
                                      "apart; rename it in the source")
            start, end, toks = found
            if sum(1 for t in toks if t.text == ",") and not _one_declarator(toks):
                raise GenerationError(f"{unit}: {fname}() declares {local.name} together with other static locals "
                                      "in one statement; give it a statement of its own")
            pointer = fresh(f"{SYMBOL_PREFIX}{fname}__{local.name}")
            hoisted.setdefault(fname, []).append((local.name, pointer, (start, end),
                                                  without_initializers(toks, source)))
            gen.resolved.append(Resolved(pointer, ksym, f"static local of {fname}"))

    for name, f in fate.items():
        if f[0] == "resolve":
            gen.resolved.append(Resolved(f[1], f[2], f[3]))
        elif f[0] == "link":
            gen.linked.append(name)

    gen.text = _emit(source, ps, funcs, kept, fate, holder, variables, hoisted, gen, patch_name)
    return gen


def _function_fate(kernel, name, piece, changed, new):
    static = _is_static(piece)
    sym = kernel.symbol(name)
    if static:
        usable = sym is not None and sym.local and kernel.count(name) == 1 and not clone_kinds(sym.name)
        if usable and name not in changed and name not in new:
            return "resolve"
        return "carry"
    if sym is not None and not sym.local and name not in new:
        return "link"
    return "carry"


def _variable_fate(kernel, unit, name, var, changed, new, fresh):
    sym = kernel.image.lookup(name)
    if not var.external:
        if name in new:
            return ("carry",)
        if name in changed and not _read_only(var):
            raise GenerationError(f"{unit}: the static variable {name} changes; its value in the running kernel "
                                  "is not the one in the source (see the refusal)")
        if name in changed:
            return ("carry",)
        if sym is not None and sym.kind == "object" and kernel.count(name) == 1:
            return ("resolve", fresh(SYMBOL_PREFIX + name), name, "variable")
        if _read_only(var):
            return ("carry",)
        raise GenerationError(f"{unit}: the static variable {name} has no symbol of its own in the kernel "
                              f"({'ambiguous' if sym is not None else 'gcc removed it'}); kallsyms cannot find it")
    if name in changed and _read_only(var):
        return ("rename", fresh(NEW_PREFIX + name))
    if sym is None:
        raise GenerationError(f"{unit}: the global variable {name} is not in the kernel (see the refusal)")
    return ("link",)


def _read_only(var):
    t = var.die.get_DIE_from_attribute("DW_AT_type") if var.die is not None and "DW_AT_type" in var.die.attributes \
        else None
    while t is not None and t.tag in ("DW_TAG_array_type", "DW_TAG_typedef", "DW_TAG_volatile_type"):
        if t.tag == "DW_TAG_volatile_type":
            return False
        t = t.get_DIE_from_attribute("DW_AT_type") if "DW_AT_type" in t.attributes else None
    return t is not None and t.tag == "DW_TAG_const_type"


def _is_static(piece):
    head = [t for t in piece.tokens if piece.body_start is None or t.start < piece.body_start]
    return any(t.kind == "id" and t.text == "static" for t in head)


def _one_declarator(toks):
    depth = 0
    for t in toks:
        if t.text in "([{":
            depth += 1
        elif t.text in ")]}":
            depth -= 1
        elif t.text == "," and depth == 0:
            return False
    return True


def _prototype(source, piece):
    """A function definition's head as a declaration, without attribute words."""
    head = [t for t in piece.tokens if t.start < piece.body_start]
    out, i = [], 0
    while i < len(head):
        t = head[i]
        if t.kind == "id" and t.text in ("__attribute__", "__attribute"):
            depth, i = 0, i + 1
            while i < len(head):
                if head[i].text == "(":
                    depth += 1
                elif head[i].text == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i += 1
            continue
        if not (t.kind == "id" and t.text in _ATTRIBUTE_WORDS):
            out.append(t)
        i += 1
    text = ""
    for a, b in zip(out, out[1:] + [None]):
        text += source[a.start:a.end]
        if b is not None and source[a.end:b.start]:
            text += " "
    return re.sub(r"\s+", " ", text).strip() + ";"


def _emit(source, ps, funcs, kept, fate, holder, variables, hoisted, gen, patch_name):
    out = []
    first_c = next((i for i, p in enumerate(ps) if p.kind != "directive"), len(ps))
    defines = ["", "/* ---- lab patch create: the patch module's view of this file ----",
               " * Functions the patch replaces are renamed; the kernel's static",
               " * symbols are reached through pointers that " + gen.prepare + "()",
               " * fills in with kallsyms_lookup_name() before the patch is enabled. */",
               '#include "kgraft.h"']
    for name in sorted(fate):
        f = fate[name]
        if f[0] == "rename":
            defines.append(f"#define {name} {f[1]}")
        elif f[0] == "resolve":
            defines.append(f"#define {name} (*{f[1]})")
    defines.append("")
    written_vars = set()
    for i, p in enumerate(ps):
        if i == first_c:
            out.append("\n".join(defines))
        lead = source[p.lead:p.start]
        if p.kind == "directive":
            out.append(lead + p.text(source))
        elif p.kind == "function":
            if p.name in kept:
                out.append(_kept_function(source, p, hoisted.get(p.name, ()), kept[p.name]))
            elif p.name in fate and fate[p.name][0] in ("resolve", "link"):
                out.append("\n" + _prototype(source, p))
        else:
            here = [n for n, h in holder.items() if h is p]
            if not here:
                out.append(lead + p.text(source))
                continue
            fates = {n: fate.get(n) for n in here}
            used = {n: f for n, f in fates.items() if f is not None}
            if used and all(f[0] in ("carry", "rename") for f in used.values()):
                out.append(lead + p.text(source))
                continue
            if any(f[0] in ("carry", "rename") for f in used.values()):
                raise GenerationError(f"{gen.unit}: line {p.first_line} declares variables the module must copy "
                                      "together with ones it must not; declare them apart")
            for n, f in used.items():
                if n in written_vars:
                    continue
                written_vars.add(n)
                try:
                    decl = c_declaration(_type_of(variables[n]), n)
                except TypeError_ as exc:
                    raise GenerationError(f"{gen.unit}: cannot declare {n}: {exc}") from None
                out.append(("\nstatic " if f[0] == "resolve" else "\nextern ") + decl + ";")
    out.append("\n" + _prepare(gen, patch_name))
    head = (f"/* {gen.unit} of the live patch {patch_name}, generated by `lab patch create` from the patched\n"
            f" * firmware/{gen.unit}: what follows is that file, with the changes marked below. */\n")
    return head + "".join(out).lstrip("\n") + "\n"


def _type_of(var):
    return var.die.get_DIE_from_attribute("DW_AT_type") if "DW_AT_type" in var.die.attributes else None


def _kept_function(source, p, hoisted, how):
    body = source[p.start:p.end]
    before, after = [], []
    # cut the static locals' declarations out, last first so offsets hold
    for name, pointer, (start, end), decl in sorted(hoisted, key=lambda h: -h[2][0]):
        a, b = start - p.start, end - p.start
        line_start = body.rfind("\n", 0, a) + 1
        line_end = body.find("\n", b)
        if not body[line_start:a].strip() and not body[b:line_end].strip() and line_end >= 0:
            a, b = line_start, line_end + 1      # the statement had its line to itself: drop the line
        body = body[:a] + body[b:]
        before.append(f"#define {name} (*{pointer})\n{decl}\n")
        after.append(f"#undef {name}\n")
    lead = source[p.lead:p.start]
    note = "\n/* lab patch create: replaced */\n" if how == "target" else \
        "\n/* lab patch create: carried (the kernel has no copy the patch can call) */\n"
    return lead.rstrip("\n") + "\n" + note.lstrip("\n") + "".join(reversed(before)) + body + \
        ("\n" + "".join(after).rstrip("\n") if after else "")


def _prepare(gen, patch_name):
    lines = ["", "/* ---- lab patch create: resolve the kernel's static symbols, list the replacements ---- */",
             f"int {gen.prepare}(struct kgr_patch_fun *funs)", "{"]
    for r in gen.resolved:
        lines += [f'\t{r.pointer} = (void *)kallsyms_lookup_name("{r.symbol}");',
                  f"\tif (!{r.pointer}) {{",
                  f'\t\tprintk(KERN_ERR "{patch_name}: symbol %s not resolved\\n", "{r.symbol}");',
                  "\t\treturn -ENOENT;", "\t}"]
    for i, (old, new) in enumerate(sorted(gen.replaced.items())):
        lines.append(f'\tfuns[{i}] = (struct kgr_patch_fun){{ .name = "{old}", .new_fun = {new}, '
                     ".abort_if_missing = 1 };")
    lines += [f"\treturn {len(gen.replaced)};", "}"]
    return "\n".join(lines)


def glue(patch_name, units, replace_all=False):
    """The module's main file: the struct kgr_patch, and an init that
    prepares every unit's part and hands the patch to kGraft."""
    decls = "\n".join(f"int {u.prepare}(struct kgr_patch_fun *funs);" for u in units)
    calls = "\n".join(f"\tn = {u.prepare}(patch.patches + used);\n\tif (n < 0)\n\t\treturn n;\n\tused += n;"
                      for u in units)
    return f"""/* {patch_name}: a live patch generated by `lab patch create`. */
#include "kernel.h"
#include "kgraft.h"

{decls}

static struct kgr_patch patch = {{
	.name = "{patch_name}",
	.owner = THIS_MODULE,
	.replace_all = {1 if replace_all else 0},
}};

static int __init kgr_patcher_init(void)
{{
	int n, used = 0;

{calls}
	return kgr_patch_kernel(&patch);
}}

static void __exit kgr_patcher_cleanup(void)
{{
	kgr_patch_remove(&patch);
}}

module_init(kgr_patcher_init);
module_exit(kgr_patcher_cleanup);
"""
