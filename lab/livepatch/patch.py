"""patch - what a patch is (its author-facing description) and its ftrace side: the kGraft trampoline."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..errors import LabError
from ..ftrace import assemble


class LivepatchError(LabError):
    """A patch was refused or a patching operation cannot be done now."""


class InitHung(LivepatchError):
    """A module's init did not return: it still runs in its insmod task."""


class PatchState(enum.Enum):
    LOADING = "loading"          # module loaded, its init has not called kgr_patch_kernel() yet
    TRANSITION = "transition"
    COMPLETE = "complete"
    REVERTING = "reverting"
    REVERTED = "reverted"
    REFUSED = "refused"
    FAILED = "failed"
    LOADED = "loaded"            # a module that is no patch: its init returned 0 without enabling one
    REMOVED = "removed"          # rmmod: its exit ran and the module is gone


@dataclass(frozen=True)
class PatchFunc:
    """One replaced function: the kernel's old one and the module's new one."""

    old_name: str
    old_addr: int
    new_name: str
    new_addr: int

    def __deepcopy__(self, memo):
        return self         # frozen, and every field immutable: a snapshot shares it


@dataclass(frozen=True)
class PatchDescription:
    """The struct kgr_patch a module handed to kgr_patch_kernel(), resolved."""

    name: str
    functions: tuple
    replace_all: bool = False
    skipped: tuple = ()          # names not found, without abort_if_missing
    klp: bool = False            # a struct klp_patch (upstream's API), not a struct kgr_patch
    objects: tuple = ()          # klp: the objects' names, "vmlinux" for the kernel

    def __deepcopy__(self, memo):
        return self         # frozen, and every field immutable: a snapshot shares it


@dataclass
class Patch:
    """A patch's runtime bookkeeping."""

    module: object
    description: PatchDescription | None = None
    state: PatchState = PatchState.LOADING
    started_at: int | None = None
    completed_at: int | None = None
    reason: str | None = None    # why it was refused or failed
    forced: bool = False
    replaced_by: str | None = None
    declared_name: str | None = None   # struct kgr_patch .name, known even when refused
    loader_tid: int | None = None      # the task its init runs in (insmod), once it started
    init_running: bool = False
    init_error: object = None          # what the init did wrong after enabling its patch
    history: list = field(default_factory=list)  # (at, state)
    klp_ptr: int | None = None         # its struct klp_patch in the guest (upstream's API)
    registered: bool = False           # klp: in the guest's klp_patches (its sysfs directory exists)
    params: dict = field(default_factory=dict)   # insmod NAME=VALUE
    module_funcs: dict = field(default_factory=dict)   # klp: module object name -> its PatchFuncs, while loaded

    def functions(self):
        """Every function the patch replaces now: the kernel's and those of
        its module objects whose module is loaded."""
        funcs = tuple(self.description.functions) if self.description else ()
        for more in self.module_funcs.values():
            funcs += tuple(more)
        return funcs

    @property
    def name(self):
        if self.description:
            return self.description.name
        return self.declared_name or self.module.name

    def set_state(self, state, at):
        self.state = state
        self.history.append((at, state.value))


def ops_prelude(pad, dispatch):
    """When a function has users besides its live patch (kprobes, the
    function tracer), the code its pad calls first calls them all through
    the kernel's ftrace_ops_caller (ftrace's ops list): r11 is free here."""
    if dispatch is None:
        return ""
    return f"""
        mov r11, {pad:#x}
        push r11
        mov r11, {dispatch:#x}
        call r11
        add rsp, 8"""


def ops_stub_source(pad, dispatch, target=None):
    """The code a pad calls when the function's other users must run and no
    transition decides anything: then into the function's body (target
    None) or straight to its live patch's version (a completed patch)."""
    tail = "ret" if target is None else f"add rsp, 8\n jmp {target:#x}"
    return ops_prelude(pad, dispatch) + f"\n        {tail}\n"


def build_ops_stub(address, pad, dispatch, target=None):
    return assemble(ops_stub_source(pad, dispatch, target), address)


def trampoline_source(address, consts, old_target, new_target, irq_universe=True, pad=None, dispatch=None):
    """The kGraft decision stub (kGraft's kgr_stub): called from a pad during a
    transition, it picks the old or the new function by the caller's universe,
    the interrupt context's own when it runs in an interrupt.  A target of
    None is the original body right after the pad: return into it.  Uses only
    r11, which is dead at a function's entry.

    The caller's return address into the patched function is on the stack;
    jumping to a replacement drops it, so the replacement returns straight to
    the original caller."""
    def go(target):
        return "ret" if target is None else f"add rsp, 8\n jmp {target:#x}"
    # Absolute addresses go through r11: keystone encodes `[abs]` as
    # rip-relative (UNICORN.md); tests check every trampoline with capstone.
    # The decision runs with preemption disabled (upstream's
    # klp_ftrace_handler() under preempt_disable_notrace()): a tick inside
    # it does not switch tasks, so the universe read and the jump it picks
    # happen in one go.  `mov` leaves the flags of `test` alone.
    # Upstream has no universe of the interrupt context: klp_ftrace_handler()
    # follows the current task's state in an interrupt too (irq_universe=False).
    irq_check = f"""
        mov r11, {consts['irq_depth']:#x}
        cmp dword ptr [r11], 0
        jne irq""" if irq_universe else ""
    return ops_prelude(pad, dispatch) + f"""
        mov r11, {consts['preempt_count']:#x}
        inc dword ptr [r11]{irq_check}
        mov r11, {consts['current_task']:#x}
        mov r11, qword ptr [r11]
        movzx r11d, byte ptr [r11 + {consts['TASK_kgr_universe']:#x}]
        jmp decide
    irq:
        mov r11, {consts['kgr_irq_universe']:#x}
        movzx r11d, byte ptr [r11]
    decide:
        test r11d, r11d
        mov r11, {consts['preempt_count']:#x}
        jz old
        dec dword ptr [r11]
        {go(new_target)}
    old:
        dec dword ptr [r11]
        {go(old_target)}
    """


def build_trampoline(address, consts, old_target, new_target, irq_universe=True, pad=None, dispatch=None):
    return assemble(trampoline_source(address, consts, old_target, new_target, irq_universe, pad, dispatch),
                    address)
