"""fuzz.patches - the lab as a referee of broken patch objects, tested by a seeded fuzzer.

The corpus is the bundled patches (patches/*.o) and the hand-written bad ones
(patches/bad/*.o).  A case is one object: a corpus object as it is, or a
mutant, made by byte mutations of a corpus object aimed at one part of it
(the ELF header, a section header, a symbol, a relocation, the module's
.text or .data, the kgr_patch initializer) or anywhere.  A mutant is a pure
function of (seed, number): any case can be made again from its reproducer.

Each case runs on a freshly booted system, with a bound on the instructions
it may retire, and gets one outcome:

  applied        the patch reached transition or complete and the system ran on
  refused        a LabError in one line naming the object, the state digest as
                 before, and a good patch (kgr_capable.o) then loads and completes
  init-hangs     the module's init never returned (it loops or sleeps, as insmod
                 would hang on Linux): a one-line LabError naming the object, the
                 module still loaded with its init running, and a good patch
                 still loads and completes beside it
  panic          the kernel panicked with a message (recorded)

or a failure:

  crash          an exception that is not a LabError (or a worker that died)
  multi-line     a LabError whose message has a newline
  vague-refusal  a LabError that does not name the object
  dirty-refusal  refused, but the state digest changed
  stuck          refused cleanly, but the good patch then failed to load or complete
  hang           more instructions retired than the case's bound (or no answer at all)
  lie            the lab reports a patch live while a pad or trampoline leads into
                 memory that is no loaded module's and not the kernel's
  verdict        a bad patch got an outcome Linux would not give it (EXPECTED)

`python -m lab.fuzz.patches --cases N --seed S [--save-failures DIR]` prints
one line per outcome and exits 1 on any failure.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import pathlib
import queue
import random
import statistics
import struct
import sys
import tempfile
import time
import traceback

from ..errors import KernelPanic, LabError
from ..image import FIRMWARE_DIR, PAD_BYTES, PAD_SIZE
from ..livepatch import InitHung
from ..modules import SHF_ALLOC, SHT_RELA, SHT_SYMTAB, check_object

PATCHES_DIR = FIRMWARE_DIR.parent / "patches"
BAD_DIR = PATCHES_DIR / "bad"
GOOD = PATCHES_DIR / "kgr_capable.o"
OTHER_GOOD = PATCHES_DIR / "livepatch_cmdline.o"   # the check after a refusal when GOOD is applied already

SETTLE = 300_000          # every task has started before a case is applied
SIGNAL_AFTER = 300_000    # fake signals, so a good transition completes
DEFAULT_BUDGET = 3_000_000
GOOD_LIMIT = 6_000_000    # the good patch's transition completes well within this

OUTCOMES = ("applied", "refused", "init-hangs", "panic")
FAILURES = ("crash", "multi-line", "vague-refusal", "dirty-refusal", "stuck", "hang", "lie", "verdict")

# Bad patches that need another patch applied first.
PRELOAD = {"duplicate_name": GOOD, "writes_other_module": GOOD, "replace_all_empty": GOOD}

# What Linux would do with each bad patch, as lab outcomes: an oops in init
# fails the load (refused); a hard lockup or a stack overflow panics; a
# replacement that misbehaves is live (applied) and its callers suffer.
# Sets are lenient where Linux itself depends on configuration.
_REFUSED, _APPLIED, _PANIC = {"refused"}, {"applied"}, {"panic"}
EXPECTED = {
    "init_null_deref": _REFUSED, "init_write_text": _REFUSED, "init_divide_error": _REFUSED,
    "init_invalid_opcode": _REFUSED, "init_cli_loop": _PANIC, "init_halts_irqs_off": _PANIC, "init_bad_stack_pointer": _PANIC, "init_busy_loop": {"init-hangs", "panic"},
    "init_stack_overflow": _REFUSED, "init_huge_frame": {"panic", "refused", "applied"},
    "init_patch_twice_same": {"refused", "applied"}, "init_patch_two_structs": {"refused", "applied"},
    "init_error_after_patch": {"refused", "applied"}, "init_error_without_patch": _REFUSED,
    "init_success_without_patch": _REFUSED, "init_positive_return": _APPLIED, "init_exits": _REFUSED,
    "init_sleeps_forever": {"init-hangs"}, "init_loops_after_patch": {"applied", "panic"},
    "init_returns_irqs_off": {"applied", "panic"},
    "patch_null": _REFUSED, "patch_dangling": _REFUSED, "patch_misaligned": _REFUSED,
    "patch_huge_pointer": _REFUSED, "patch_outside_ram": _REFUSED, "patch_kernel_data": _REFUSED,
    "patch_name_null": _REFUSED, "patch_name_unterminated": {"refused", "applied"},
    "patch_name_outside_ram": _REFUSED, "fun_name_outside_ram": _REFUSED, "fun_name_unterminated": _REFUSED,
    "fun_name_null_middle": _APPLIED, "new_fun_in_kernel": _REFUSED, "new_fun_null": _REFUSED,
    "new_fun_in_data": _REFUSED, "new_fun_mid_function": _REFUSED,
    "patch_notrace": _REFUSED, "patch_kgr_task_safe": _REFUSED, "missing_abort": _REFUSED,
    "missing_skip": _APPLIED, "missing_only": {"refused", "applied"}, "same_function_twice": _REFUSED,
    "empty_patch": _REFUSED, "replace_all_empty": {"refused", "applied"}, "duplicate_name": _REFUSED,
    "replacement_oopses": {"applied", "panic"}, "replacement_cli_loop": _PANIC,
    "replacement_never_returns": {"applied", "panic"}, "replacement_calls_itself": {"applied", "panic"},
    "replacement_calls_old_by_name": {"applied", "panic"}, "printk_calls_printk": {"applied", "panic"},
    "replace_wake_up_noop": _APPLIED, "replace_set_current_state": _APPLIED,
    "replace_schedule_timeout": _APPLIED, "timer_interrupt_sleeps": {"panic", "applied"},
    "panic_returns": _APPLIED, "patch_the_patcher": _APPLIED, "writes_other_module": _REFUSED,
    "kallsyms_null": _REFUSED, "kallsyms_outside_ram": _REFUSED, "kallsyms_unterminated": _APPLIED,
    "printk_bad_pointer": _REFUSED, "printk_null_format": _REFUSED,
    "remove_never_patched": {"applied", "refused"}, "remove_in_transition": _APPLIED,
    "writes_target_universe": _REFUSED, "patch_then_modify": _APPLIED,
    "replacement_wrong_prototype": {"applied", "panic"}, "raw_hypercall": _REFUSED,
    "klp_no_modinfo": _REFUSED, "klp_unknown_symbol": _REFUSED, "klp_new_func_in_data": _REFUSED,
    "klp_enable_twice": _APPLIED,
}

MUTATIONS = ("flip", "bytes", "header", "section-header", "symbol", "relocation", "text", "data", "kgr-patch")


def corpus():
    """The objects mutants are made from: the bundled patches, then the bad ones."""
    return sorted(PATCHES_DIR.glob("*.o")) + sorted(BAD_DIR.glob("*.o"))


# ---- mutants ----

_EHDR_FIELDS = [("e_ident[EI_CLASS]", 4, 1), ("e_ident[EI_DATA]", 5, 1), ("e_ident[EI_VERSION]", 6, 1),
                ("e_ident[EI_OSABI]", 7, 1), ("e_type", 16, 2), ("e_machine", 18, 2), ("e_version", 20, 4),
                ("e_entry", 24, 8), ("e_phoff", 32, 8), ("e_shoff", 40, 8), ("e_flags", 48, 4),
                ("e_ehsize", 52, 2), ("e_phentsize", 54, 2), ("e_phnum", 56, 2), ("e_shentsize", 58, 2),
                ("e_shnum", 60, 2), ("e_shstrndx", 62, 2)]
_SHDR_FIELDS = [("sh_name", 0, 4), ("sh_type", 4, 4), ("sh_flags", 8, 8), ("sh_addr", 16, 8),
                ("sh_offset", 24, 8), ("sh_size", 32, 8), ("sh_link", 40, 4), ("sh_info", 44, 4),
                ("sh_addralign", 48, 8), ("sh_entsize", 56, 8)]
_SYM_FIELDS = [("st_name", 0, 4), ("st_info", 4, 1), ("st_other", 5, 1), ("st_shndx", 6, 2),
               ("st_value", 8, 8), ("st_size", 16, 8)]
_RELA_FIELDS = [("r_offset", 0, 8), ("r_type", 8, 4), ("r_sym", 12, 4), ("r_addend", 16, 8)]
_OPCODES = [b"\xcc", b"\x0f\x0b", b"\xc3", b"\xf4", b"\xfa", b"\xeb\xfe", b"\xfa\xeb\xfe", b"\x00\x00",
            b"\xff\xe0", b"\x48\x31\xe4"]   # int3, ud2, ret, hlt, cli, jmp ., cli; jmp ., add [rax],al, jmp rax, xor rsp,rsp


class _Base:
    """A corpus object and where its parts lie in the file."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.data = self.path.read_bytes()
        obj = check_object(self.data, self.path.name)
        self.obj = obj
        shoff = struct.unpack_from("<Q", self.data, 40)[0]
        self.shdrs = [(s, shoff + s.index * 64) for s in obj.sections]
        symtab = next(s for s in obj.sections if s.type == SHT_SYMTAB)
        self.syms = [(s, symtab.offset + s.index * 24) for s in obj.symbols[1:]]
        self.relas = []
        for s in obj.sections:
            if s.type == SHT_RELA:
                target = obj.sections[s.info]
                for j in range(s.size // 24):
                    self.relas.append((s, target, s.offset + j * 24))
        self.alloc_relas = [r for r in self.relas if r[1].flags & SHF_ALLOC] or self.relas
        self.text = next((s for s in obj.sections if s.name == ".text" and s.size), None)
        self.datasec = next((s for s in obj.sections if s.name == ".data" and s.size), None)
        desc = next((s for s in obj.symbols if s.name in ("patch",) and s.size), None)
        self.kgr_patch = None
        if desc is not None and self.datasec is not None and desc.shndx == self.datasec.index:
            self.kgr_patch = (self.datasec.offset + desc.value, desc.size, desc.value)


def _interesting(rng, old, width, filesize):
    bits = 8 * width
    top = (1 << bits) - 1
    choices = [0, 1, top, 1 << (bits - 1), (old + 1) & top, (old - 1) & top, old ^ (1 << rng.randrange(bits)),
               rng.getrandbits(bits), min(filesize, top), (filesize - rng.randrange(1, 64)) & top,
               (old * 2) & top, 0x7F & top, (old + 0x1000) & top]
    value = rng.choice(choices)
    return value if value != old else (old ^ 1) & top


def _set_field(rng, data, at, width, label):
    fmt = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}[width]
    old = struct.unpack_from(fmt, data, at)[0]
    new = _interesting(rng, old, width, len(data))
    struct.pack_into(fmt, data, at, new)
    return f"{label} {old:#x} -> {new:#x}"


def _flip(rng, data, lo, hi, label):
    n = rng.choice((1, 1, 2, 3, 8))
    where = sorted(rng.randrange(lo, hi) * 8 + rng.randrange(8) for _ in range(n))
    for bit in where:
        data[bit // 8] ^= 1 << (bit % 8)
    return f"{label}: flipped bit(s) " + ", ".join(f"{b // 8:#x}.{b % 8}" for b in where)


def _mutate(rng, base, kind):
    """Mutate a copy of base's bytes in the way kind names; (bytes, description)."""
    data = bytearray(base.data)
    if kind == "flip":
        what = _flip(rng, data, 0, len(data), "anywhere")
    elif kind == "bytes":
        at = rng.randrange(len(data))
        n = min(rng.choice((1, 2, 4, 8, 16)), len(data) - at)
        fill = rng.choice((b"\x00", b"\xff", None))
        data[at:at + n] = fill * n if fill else bytes(rng.getrandbits(8) for _ in range(n))
        what = f"bytes {at:#x}..{at + n:#x} := {bytes(data[at:at + n]).hex()}"
    elif kind == "header":
        name, off, width = rng.choice(_EHDR_FIELDS)
        what = _set_field(rng, data, off, width, f"ELF header {name}")
    elif kind == "section-header":
        sec, at = rng.choice(base.shdrs)
        name, off, width = rng.choice(_SHDR_FIELDS)
        what = _set_field(rng, data, at + off, width, f"section [{sec.index}] {sec.name!r} {name}")
    elif kind == "symbol":
        sym, at = rng.choice(base.syms)
        name, off, width = rng.choice(_SYM_FIELDS)
        what = _set_field(rng, data, at + off, width, f"symbol {sym.index} {sym.name!r} {name}")
    elif kind == "relocation":
        sec, target, at = rng.choice(base.alloc_relas)
        name, off, width = rng.choice(_RELA_FIELDS)
        what = _set_field(rng, data, at + off, width,
                          f"{sec.name!r} relocation {(at - sec.offset) // 24} {name}")
    elif kind in ("text", "data"):
        sec = base.text if kind == "text" else base.datasec
        if sec is None:
            return _mutate(rng, base, "flip")
        if kind == "text" and rng.random() < 0.5:
            at = rng.randrange(sec.offset, sec.offset + sec.size)
            code = rng.choice(_OPCODES)[:sec.offset + sec.size - at]
            data[at:at + len(code)] = code
            what = f".text+{at - sec.offset:#x} := {code.hex()}"
        else:
            what = _flip(rng, data, sec.offset, sec.offset + sec.size, f"{sec.name}")
    elif kind == "kgr-patch":
        if base.kgr_patch is None:
            return _mutate(rng, base, "data")
        start, size, value = base.kgr_patch
        inside = [r for r in base.relas if r[1] is base.datasec
                  and value <= struct.unpack_from("<Q", base.data, r[2])[0] < value + size]
        if inside and rng.random() < 0.5:
            sec, _target, at = rng.choice(inside)
            name, off, width = rng.choice(_RELA_FIELDS[:1] + _RELA_FIELDS[2:])
            what = _set_field(rng, data, at + off, width, f"kgr_patch initializer: {sec.name!r} "
                                                          f"relocation {(at - sec.offset) // 24} {name}")
        else:
            off = rng.randrange(0, size - 3) & ~3
            what = _set_field(rng, data, start + off, 4, f"kgr_patch initializer +{off:#x}")
    else:
        raise ValueError(kind)
    return bytes(data), what


_bases = {}


def _base(path):
    if path not in _bases:
        _bases[path] = _Base(path)
    return _bases[path]


def mutant(seed, number, objects=None):
    """Mutant number of seed: (corpus path, mutation kind, bytes, description)."""
    objects = objects or corpus()
    rng = random.Random(f"lab.fuzz.patches:{seed}:{number}")
    path = rng.choice(objects)
    kind = rng.choice(MUTATIONS)
    data, what = _mutate(rng, _base(path), kind)
    return path, kind, data, what


# ---- running one case ----

class CaseRunner:
    """Runs cases in this process: one kernel image, a scratch directory."""

    def __init__(self, budget=DEFAULT_BUDGET, scratch=None):
        import lab
        self.lab = lab
        self.image = lab.Image.load()
        self.budget = budget
        self._tmp = None
        if scratch is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lab-fuzz-")
            scratch = self._tmp.name
        self.scratch = pathlib.Path(scratch)
        self._objects = None

    def objects(self):
        if self._objects is None:
            self._objects = corpus()
        return self._objects

    def materialize(self, spec):
        """(path to load, base name, mutation description, reproducer)."""
        kind, seed, key = spec
        if kind == "corpus":
            path = pathlib.Path(key)
            return path, path.name, "as is", {"object": str(path)}
        base, mkind, data, what = mutant(seed, key, self.objects())
        path = self.scratch / f"mutant-{seed}-{key}.o"
        path.write_bytes(data)
        return path, base.name, f"{mkind}: {what}", {"seed": seed, "case": key}

    def boot(self):
        system = self.lab.boot(self.image, signal_after=SIGNAL_AFTER)
        system.run(SETTLE)
        return system

    def run(self, spec):
        started = time.perf_counter()
        path, base, mutation, repro = self.materialize(spec)
        result = {"case": _case_id(spec), "base": base, "mutation": mutation, "repro": repro, "path": str(path)}
        try:
            outcome, detail, insns = self._judge(path, spec)
        except Exception as exc:   # the lab itself broke: that is the finding
            outcome, insns = "crash", None
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0] + " | " + _where(exc)
        result.update(outcome=outcome, detail=detail, instructions=insns, wall=time.perf_counter() - started)
        if spec[0] == "mutant":
            path.unlink(missing_ok=True)
        else:
            expected = EXPECTED.get(path.stem) if path.parent == BAD_DIR else _APPLIED
            if expected is not None and outcome in OUTCOMES and outcome not in expected:
                result["detail"] = f"{outcome} ({detail}), but Linux would give: {'/'.join(sorted(expected))}"
                result["outcome"] = "verdict"
        return result

    def _judge(self, path, spec):
        system = self.boot()
        try:
            return self._judge_on(system, path)
        finally:
            system.close()

    def _judge_on(self, system, path):
        names = {path.name, path.stem}
        preload = PRELOAD.get(path.stem) if path.parent == BAD_DIR else None
        if preload is not None:
            system.apply_patch(preload)
            system.run_until_patched(GOOD_LIMIT)
            _quiesce(system)
        start = system.clock
        from .. import system as system_module
        quanta = getattr(system_module, "_INIT_BUDGET_QUANTA", 200)
        init_budget = 2 * quanta * system.kernel.quantum   # apply_patch: the init, then its unloading
        bound = init_budget + 2 * self.budget
        before = system.state_digest()
        try:
            patch = system.apply_patch(path)
        except KernelPanic as exc:
            return "panic", _line(exc), system.clock - start
        except LabError as exc:
            used = system.clock - start
            message = str(exc)
            if used > bound:
                return "hang", f"refused after {used:,} instructions (bound {bound:,})", used
            if "\n" in message:
                return "multi-line", message.replace("\n", "\\n"), used
            if not any(n in message for n in names) and not _names_patch(system, message):
                return "vague-refusal", message, used
            outcome = "refused"
            if system.state_digest() != before:
                if not _init_still_running(system, path, exc):
                    return "dirty-refusal", message, used
                outcome = "init-hangs"
            # after an init that hangs, the good patch loads but its transition
            # waits for the hung task, as kGraft's would
            ran = any(p.loader_tid is not None for p in system.patches if p.module.path == path)
            stuck = self._good_still_loads(system, complete=outcome == "refused")
            if stuck and ran and stuck.startswith("the good patch panicked the kernel"):
                # the module's init ran before it failed and may have written
                # anywhere in the kernel's data, which Linux does not protect
                # either: a later panic is the damage it did, not the lab sticking
                return "panic", f"{message} || then {stuck}", used
            if stuck:
                return "stuck", f"{message} || then {stuck}", used
            return outcome, message, used
        names.add(patch.name)
        try:
            system.run_until_patched(self.budget)
            system.run(self.budget - min(self.budget, system.clock - start))
        except KernelPanic as exc:
            return "panic", _line(exc), system.clock - start
        used = system.clock - start
        if used > bound:
            return "hang", f"ran {used:,} instructions (bound {bound:,})", used
        lie = find_lie(system)
        if lie:
            return "lie", lie, used
        state = patch.state.value
        if state in ("transition", "complete", "reverting", "reverted"):
            return "applied", f"{patch.name}: {state}", used
        return "applied", f"{patch.name}: {state} after it started", used

    def _good_still_loads(self, system, complete=True):
        """None if kgr_capable.o (livepatch_cmdline.o if that one is applied
        already) loads and (if complete) completes on this system, else why not."""
        good = OTHER_GOOD if any(p.module.path == GOOD for p in system.patches) else GOOD
        try:
            patch = system.apply_patch(good)
            system.run_until_patched(GOOD_LIMIT)
        except KernelPanic as exc:
            return f"the good patch panicked the kernel: {_line(exc)}"
        except LabError as exc:
            return f"the good patch was refused: {_line(exc)}"
        if patch.state.value != "complete" and (complete or patch.state.value != "transition"):
            return f"the good patch is {patch.state.value} after {GOOD_LIMIT:,} instructions"
        return None

    def close(self):
        if self._tmp is not None:
            self._tmp.cleanup()


def _quiesce(system, chunk=50_000, limit=40):
    """Run until the state digest holds still (the core frees a finished
    transition's trampolines a little after it completes)."""
    digest = system.state_digest()
    for _ in range(limit):
        system.run(chunk)
        now = system.state_digest()
        if now == digest:
            return
        digest = now


def _init_still_running(system, path, exc):
    """The refused object's module is loaded and its patch still LOADING: its
    init has not returned (insmod would hang on Linux too)."""
    return isinstance(exc, InitHung) and any(p.module.path == path and p.module.loaded and p.state.value == "loading"
               for p in system.livepatch.patches)


def _line(exc):
    return str(exc).replace("\n", "\\n")


def _where(exc):
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return "?"
    f = tb[-1]
    return f"{pathlib.Path(f.filename).name}:{f.lineno} in {f.name}"


def _names_patch(system, message):
    return any(p.name and p.name in message for p in system.patches) or \
        any(getattr(p, "declared_name", None) and p.declared_name in message for p in system.livepatch.patches)


def _case_id(spec):
    kind, seed, key = spec
    if kind == "corpus":
        return f"{pathlib.Path(key).parent.name}/{pathlib.Path(key).name}"
    return f"seed {seed} mutant {key}"


# ---- the lie detector ----

def find_lie(system):
    """Why the lab's picture of the patched kernel is false, or None: every
    pad that is not a NOP must branch into the kernel, a loaded module or a
    trampoline, and every trampoline's targets into the kernel or a loaded
    module; a patch reported live must have its module loaded."""
    from ..disasm import disassemble
    from ..ftrace import TRAMPOLINE_AREA
    img, m, mods = system.image, system.machine, system.modules
    text = (img.address("_stext"), img.address("_etext"))

    def code_owner(address):
        if text[0] <= address < text[1]:
            return "kernel"
        mod = mods.module_at(address)
        return f"module {mod.name}" if mod is not None else None

    pads = [(p.address, p.function) for p in img.pads]
    for mod in mods.modules:
        if mod.loaded:
            pads += list(mod.pads)
    for address, function in pads:
        code = m.read(address, PAD_SIZE)
        if code == PAD_BYTES:
            continue
        if code[0] not in (0xE8, 0xE9):
            return f"the pad of {function} holds {code.hex()}, neither a NOP nor a call or jmp"
        target = address + PAD_SIZE + int.from_bytes(code[1:], "little", signed=True)
        if code[0] == 0xE9:
            if code_owner(target) is None:
                return f"the pad of {function} jumps to {target:#x}, which is no loaded module's nor the kernel's"
            continue
        if not TRAMPOLINE_AREA[0] <= target < TRAMPOLINE_AREA[1]:
            if code_owner(target) is None:
                return f"the pad of {function} calls {target:#x}, outside the kernel, the modules and the trampolines"
            continue
        for insn in disassemble(m.read(target, min(96, TRAMPOLINE_AREA[1] - target)), target):
            if insn.mnemonic == "jmp" and insn.operands.startswith("0x"):
                dest = int(insn.operands, 16)
                if not target <= dest < target + 96 and code_owner(dest) is None:
                    return (f"the trampoline {target:#x} of {function}'s pad jumps to {dest:#x}, which is no "
                            "loaded module's nor the kernel's")
            if insn.mnemonic in ("ret", "int3", "ud2"):
                break
    for patch in system.patches:
        if patch.state.value in ("transition", "complete", "reverting") and not patch.module.loaded:
            return f"patch {patch.name} is reported {patch.state.value} but its module is unloaded"
    return None


# ---- many cases ----

def cases(n, seed=0, corpus_cases=True):
    """The case specs of a run: every corpus object as it is (if corpus_cases), then n mutants."""
    specs = [("corpus", None, str(p)) for p in corpus()] if corpus_cases else []
    return specs + [("mutant", seed, i) for i in range(n)]


def _worker(inbox, outbox, budget):
    runner = CaseRunner(budget)
    try:
        while True:
            item = inbox.get()
            if item is None:
                break
            number, spec = item
            outbox.put(("start", os.getpid(), number))
            outbox.put(("done", os.getpid(), number, runner.run(spec)))
    finally:
        runner.close()


def fuzz_patches(n, seed=0, progress=None, budget=DEFAULT_BUDGET, *, corpus_cases=True, workers=0,
                 save_failures=None, specs=None, stall_seconds=600.0):
    """Run n mutants (and, with corpus_cases, every corpus object as is) and
    judge each.  workers=0 runs in this process; workers=N in N processes
    (a worker that dies is a crash of its case; one silent for stall_seconds
    is killed and its case is a hang).  progress(done, total, result) is called
    after each case.  Returns {"counts", "failures", "panics", "cases",
    "seconds", "cases_per_second", "median_wall", "slow"}."""
    specs = list(specs) if specs is not None else cases(n, seed, corpus_cases)
    started = time.perf_counter()
    results = [None] * len(specs)

    def finish(i, result):
        results[i] = result
        if progress is not None:
            progress(sum(r is not None for r in results), len(specs), result)

    if workers <= 0:
        runner = CaseRunner(budget)
        try:
            for i, spec in enumerate(specs):
                finish(i, runner.run(spec))
        finally:
            runner.close()
    else:
        _run_parallel(specs, workers, budget, finish, stall_seconds)
    seconds = time.perf_counter() - started
    counts = {k: 0 for k in OUTCOMES + FAILURES}
    panics = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        if r["outcome"] == "panic":
            panics[r["detail"]] = panics.get(r["detail"], 0) + 1
    failures = [r for r in results if r["outcome"] in FAILURES]
    for r in failures:
        r["why"] = f"{r['outcome']}: {r['case']} ({r['base']}; {r['mutation']}): {r['detail']}"
        r["reproducer"] = _reproducer(r)
    if save_failures:
        out = pathlib.Path(save_failures)
        out.mkdir(parents=True, exist_ok=True)
        for r in failures:
            src = pathlib.Path(r["path"])
            if "seed" in r["repro"]:
                _, _, data, _ = mutant(r["repro"]["seed"], r["repro"]["case"])
                dest = out / f"seed{r['repro']['seed']}-mutant{r['repro']['case']}-{r['base']}"
                dest.write_bytes(data)
            else:
                dest = out / src.name
                dest.write_bytes(src.read_bytes())
            r["saved"] = str(dest)
    walls = [r["wall"] for r in results]
    median = statistics.median(walls) if walls else 0.0
    slow = [r for r in results if median and r["wall"] > 20 * median]
    return {"cases": len(specs), "counts": counts, "failures": failures, "panics": panics, "seconds": seconds,
            "cases_per_second": len(specs) / seconds if seconds else 0.0, "median_wall": median, "slow": slow,
            "results": results}


def _run_parallel(specs, workers, budget, finish, stall_seconds):
    ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
    inbox, outbox = ctx.Queue(), ctx.Queue()
    procs = {}

    def spawn():
        p = ctx.Process(target=_worker, args=(inbox, outbox, budget), daemon=True)
        p.start()
        procs[p.pid] = {"proc": p, "case": None, "since": time.monotonic()}

    for i, spec in enumerate(specs):
        inbox.put((i, spec))
    for _ in range(workers):
        spawn()
    remaining = set(range(len(specs)))
    while remaining:
        try:
            msg = outbox.get(timeout=1.0)
        except queue.Empty:
            msg = None
        if msg is not None:
            if msg[0] == "start":
                procs[msg[1]].update(case=msg[2], since=time.monotonic())
            else:
                _, pid, i, result = msg
                procs[pid].update(case=None, since=time.monotonic())
                if i in remaining:
                    remaining.discard(i)
                    finish(i, result)
            continue
        for pid, info in list(procs.items()):
            p, i = info["proc"], info["case"]
            dead = not p.is_alive()
            stalled = i is not None and time.monotonic() - info["since"] > stall_seconds
            if not (dead or stalled):
                continue
            if stalled:
                p.kill()
            p.join()
            del procs[pid]
            if i is not None and i in remaining:
                remaining.discard(i)
                kind = "hang" if stalled else "crash"
                why = (f"no answer after {stall_seconds:.0f} s of wall time" if stalled
                       else f"the worker died (exit code {p.exitcode})")
                finish(i, {"case": _case_id(specs[i]), "base": "?", "mutation": "?", "repro": _repro(specs[i]),
                           "path": "", "outcome": kind, "detail": why, "instructions": None, "wall": 0.0})
            if remaining:
                spawn()
    for _ in procs:
        inbox.put(None)
    for info in procs.values():
        info["proc"].join(timeout=10)


def _repro(spec):
    kind, seed, key = spec
    return {"object": key} if kind == "corpus" else {"seed": seed, "case": key}


# ---- the command line ----

def _reproducer(r):
    if "seed" in r["repro"]:
        return f"python -m lab.fuzz.patches --seed {r['repro']['seed']} --case {r['repro']['case']}"
    return f"python -m lab.fuzz.patches --object {r['repro']['object']}"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lab.fuzz.patches",
                                 description="Fuzz the lab's patch loading with broken patch objects.")
    ap.add_argument("--cases", type=int, default=200, help="mutants to run (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="instructions a patch runs after it applies")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (0: this one)")
    ap.add_argument("--no-corpus", action="store_true", help="skip the corpus objects as they are")
    ap.add_argument("--case", type=int, action="append", help="run only this mutant (with --seed); repeatable")
    ap.add_argument("--object", action="append", help="run only this object file as it is; repeatable")
    ap.add_argument("--save-failures", metavar="DIR", help="write each failing object to DIR")
    ap.add_argument("--verbose", "-v", action="store_true", help="one line per case")
    args = ap.parse_args(argv)
    if args.cases < 0 or args.budget <= 0:
        ap.error("--cases must be >= 0 and --budget > 0")
    specs = None
    if args.case or args.object:
        specs = [("mutant", args.seed, c) for c in args.case or ()]
        specs += [("corpus", None, str(pathlib.Path(o).resolve())) for o in args.object or ()]

    def progress(done, total, r):
        if args.verbose:
            print(f"[{done}/{total}] {r['outcome']:13} {r['case']} ({r['base']}; {r['mutation']}): {r['detail']}",
                  flush=True)

    report = fuzz_patches(args.cases, args.seed, progress, args.budget, corpus_cases=not args.no_corpus,
                          workers=args.workers, save_failures=args.save_failures, specs=specs)
    for k, v in report["counts"].items():
        if v or k in OUTCOMES:
            print(f"{k:14} {v}")
    print(f"{report['cases']} cases in {report['seconds']:.1f} s ({report['cases_per_second']:.1f} cases/s, "
          f"median {report['median_wall'] * 1000:.0f} ms)")
    for r in report["slow"][:10]:
        print(f"slow: {r['case']} took {r['wall']:.2f} s, {r['wall'] / report['median_wall']:.0f}x the median")
    for r in report["failures"]:
        saved = f" [saved {r['saved']}]" if r.get("saved") else ""
        print(f"FAIL {r['outcome']}: {r['case']} ({r['base']}; {r['mutation']}): {r['detail']} -- {_reproducer(r)}{saved}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
