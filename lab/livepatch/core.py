"""core - the life of a patch: load, patch, transition, complete; revert, replace, force, boot."""
from __future__ import annotations

from .. import events as ev
from ..errors import GuestFault, LabError
from ..ftrace import FtraceError
from .patch import (LivepatchError, Patch, PatchDescription, PatchFunc, PatchState, build_ops_stub,
                    build_trampoline)
from .transition import IRQ, Transition
from .klp import Klp
from ..modules import ModuleError
from .admin import Admin
from .models import KLP_CHECK_INTERVAL, Models
from .reclaim import RECLAIM_INTERVAL, Reclaim

ENOENT, EAGAIN, EFAULT, EBUSY, EEXIST, EINVAL = 2, 11, 14, 16, 17, 22

MODELS = ("kgraft", "immediate", "stop-machine", "klp", "upstream")
# "klp": kGraft's safe points plus upstream's stack check, switched by the lab;
# "upstream": the kernel's own firmware mode (klp_mode), upstream's model as
# kernel/livepatch/transition.c has it, driven from inside the guest



class Refusal(Exception):
    def __init__(self, errno, message):
        self.errno = errno
        super().__init__(message)


class Livepatch(Models, Reclaim, Admin):
    """The live patching core of one system: kGraft's patches and upstream's
    klp patches, one life cycle.  Laid out as kernel/livepatch/ is: this file
    the life of a patch (core.c); the trampoline, the ftrace side, in
    patch.py (patch.c); transition.py (transition.c); the other consistency
    models in models.py; freeing what nothing reaches in reclaim.py; the
    admin surface, as a shell uses it, in admin.py; the guest's klp core's
    side in klp.py.  Callbacks, states and shadow variables are the guest's
    own (firmware/livepatch.c, shadow.c)."""

    def __init__(self, kernel, ftrace, modules, *, signal_after=None, model="kgraft"):
        if model not in MODELS:
            raise LivepatchError(f"no consistency model {model!r}; choose one of: {', '.join(MODELS)}")
        self.model = model
        self.kernel = kernel
        self.machine = kernel.machine
        self.image = kernel.image
        self.ftrace = ftrace
        self.modules = modules
        self.signal_after = signal_after
        self.patches = []
        self.transition = None
        self.last_transition = None
        self.taints = []
        self._stacks = {}        # pad -> [(patch, new address)], the top one is live (klp_ops.func_stack)
        self.on_transition = None   # fn(transition[, funcs]) when one starts or funcs join it (a trace watches them)
        self.stopped_instructions = 0   # emulated time every task stood stopped (stop-machine)
        self.stop_attempts = []         # (at, clean, frames checked, cost, blocker)
        self._stop = None               # the stop-machine attempt in progress
        self._klp_last_check = None
        self._requests = []
        c = kernel.c
        self._consts = {
            "current_task": self.image.address("current_task"),
            "irq_depth": self.image.address("irq_depth"),
            "preempt_count": self.image.address("preempt_count"),
            "kgr_irq_universe": self.image.address("kgr_irq_universe"),
            "TASK_kgr_universe": c["TASK_kgr_universe"],
        }
        kernel.on_hypercall("KGR_PATCH", self._hc_patch)
        kernel.on_hypercall("KGR_UNPATCH", self._hc_unpatch)
        kernel.on_hypercall("KGR_SAFE", self._hc_safe)
        kernel.on_hypercall("MODULE_DONE", self._hc_module_done)
        kernel.on_hypercall("MODULE_START", self._hc_module_start)
        kernel.log.subscribe(self._on_event, ev.TaskExit, ev.Oops)
        self._to_free = []       # modules unloaded once nothing can reach their text
        self._waiting = None     # a transition waiting for the grace period (_begin)
        self._last_reclaim = -RECLAIM_INTERVAL
        kernel.on_hypercall("KALLSYMS_LOOKUP", self._hc_kallsyms)
        kernel.slice_hooks.append(self._after_slice)
        self.klp = Klp(self)
        self._signaled = None    # the transition "signaling remaining tasks" was said for
        self._ops = {}           # pad -> [FTRACE_OPS_* flags of each other user] (kprobes, the tracer)
        kernel.on_hypercall("FTRACE_OPS", self._hc_ftrace_ops)
        kernel.on_hypercall("LOAD_MODULE", self._hc_load_module)
        kernel.on_hypercall("MODULE_GONE", self._hc_module_gone)
        if model == "upstream":
            # chosen at boot: the firmware runs upstream's consistency model
            self.machine.set_u32(self.image.address("klp_mode"), self.image.const("KLP_MODE_UPSTREAM_NR"))

    @property
    def busy(self):
        """The patch whose transition is in progress, under any model (a
        stop-machine attempt waiting to retry included), or None.  Upstream
        refuses klp_enable_patch() with -EBUSY whenever klp_transition_patch
        is set; every model answers here, in one place."""
        if self.transition is not None:
            return self.transition.patch
        if self._waiting is not None:
            return self._waiting[0]
        if self._stop is not None:
            return self._stop["transition"].patch
        return None

    def func_stacks(self):
        """{pad: [(patch name, new address), ...]} (klp_ops.func_stack), oldest first."""
        return {pad: [(p.name, new) for p, new in stack] for pad, stack in sorted(self._stacks.items())}

    # ---- logging, the kernel's way ----
    def _log(self, text, level=5):
        self.kernel.log.add(ev.Console, self.machine.clock, tid=self.kernel.current, level=level,
                            text=f"livepatch: {text}")

    def _set_state(self, patch, state, detail=""):
        patch.set_state(state, self.machine.clock)
        self.kernel.log.add(ev.PatchEvent, self.machine.clock, name=patch.name, state=state.value, detail=detail)

    # ---- loading ----
    def load(self, path, params=None, image=None):
        """Load a patch object (or any module); its init runs in an insmod
        task kmodloader starts (or, before boot, from start_kernel).
        params: insmod's NAME=VALUE.  image: the object's bytes as a user
        program's init_module() gave them; its caller then runs the init.
        Returns the Patch, in state LOADING."""
        k, m = self.kernel, self.machine
        # every check before the module is placed: a refusal leaves nothing
        if image is not None:
            pass
        elif not k.booted:
            n = m.i32(self.image.address("nr_boot_modules"))
            if n >= 8:
                raise LivepatchError(f"{path}: at most 8 patches can be applied at boot")
        else:
            loader = next((t for t in k.tasks if t.name == "kmodloader" and t.state.value not in ("dead", "unused")),
                          None)
            if loader is None:
                raise LivepatchError(f"{path}: kmodloader is not running, so no module can be loaded; reboot")
            if m.u64(self.image.address("modload_request")):
                raise LivepatchError(f"{path}: another module load has not started yet; run the kernel a "
                                     "little and try again")
        module = self.modules.load(path, image=image)
        try:
            if module.this_module is not None and any(
                    other.name == module.name and other is not module for other in self.modules.modules):
                raise LivepatchError(f"insmod: ERROR: could not insert module {path}: File exists "
                                     f"(a module called {module.name} is loaded; rmmod it first)")
            if params:
                self.modules.set_params(module, params)
        except (LivepatchError, ModuleError):
            self.modules.unload(module)
            raise
        patch = Patch(module, params=dict(params or {}))
        self.patches.append(patch)
        if image is not None:
            return patch
        if not k.booted:
            m.set_u64(self.image.address("boot_module_inits") + 8 * n, module.init)
            m.set_u32(self.image.address("nr_boot_modules"), n + 1)
        else:
            m.set_u64(self.image.address("modload_request"), module.init)
            k.kick(loader.tid, fake_signal=False)
        return patch

    def _patch_of_module(self, address):
        module = self.modules.module_at(address)
        for p in self.patches:
            if p.module is module:
                return p
        return None

    def _calling_patch(self, ptr):
        """The patch whose module made a hypercall: the one whose init runs in
        the calling task (THIS_MODULE, as klp_enable_patch() takes it), else
        the module the pointer lies in."""
        tid = self.kernel.current
        for p in self.patches:
            if p.loader_tid == tid and p.init_running:
                return p
        return self._patch_of_module(ptr) if isinstance(ptr, int) else None

    def _guest_u64(self, address, what):
        if not self.machine.guest_range_ok(address, 8):
            raise Refusal(EFAULT, f"{what} at {address:#x} lies outside the kernel's memory")
        return self.machine.u64(address)

    def _guest_string(self, address, what, limit=128):
        text = self.machine.guest_cstring(address, limit)
        if text is None:
            raise Refusal(EFAULT, f"{what} points to {address:#x}, which is not a string in the kernel's "
                                  f"memory (bad pointer, or no NUL within {limit} bytes)")
        return text

    def _read_description(self, ptr, module):
        """struct kgr_patch, read as the kernel would: every pointer checked
        (copy_from_user()'s rule), so a bad one is -EFAULT naming the field."""
        m, c = self.machine, self.kernel.c
        where = f"'{module.name}': struct kgr_patch"
        size = c["KGR_PATCH_patches"] + c["KGR_PATCH_MAX"] * c["KGR_FUN_SIZE"]
        if not m.guest_range_ok(ptr, size):
            raise Refusal(EFAULT, f"{where} at {ptr:#x} lies outside the kernel's memory")
        name = self._guest_string(self._guest_u64(ptr + c["KGR_PATCH_name"], f"{where} .name"), f"{where} .name")
        if not name.strip() or not name.isprintable():
            raise Refusal(EINVAL, f"'{module.name}': struct kgr_patch .name is {name!r}; give the patch a name")
        where = f"'{module.name}': patch '{name}'"
        replace_all = bool(m.i32(ptr + c["KGR_PATCH_replace_all"]))
        funcs, skipped, seen = [], [], set()
        for i in range(c["KGR_PATCH_MAX"]):
            rec = ptr + c["KGR_PATCH_patches"] + i * c["KGR_FUN_SIZE"]
            name_ptr = m.u64(rec + c["KGR_FUN_name"])
            if not name_ptr:
                break
            old_name = self._guest_string(name_ptr, f"{where}: .patches[{i}].name")
            if not old_name.strip() or not old_name.isprintable():
                raise Refusal(EINVAL, f"{where}: .patches[{i}].name is {old_name!r}, not a function name")
            new_addr = m.u64(rec + c["KGR_FUN_new_fun"])
            abort = bool(m.i32(rec + c["KGR_FUN_abort_if_missing"]))
            sym = self.image.lookup(old_name)
            if sym is None or sym.kind != "func":
                if abort:
                    raise Refusal(ENOENT, f"'{name}': function {old_name} not resolved; the whole patch is refused "
                                          "(abort_if_missing)")
                self._log(f"'{name}': function {old_name} not resolved, skipping it", level=4)
                skipped.append(old_name)
                continue
            pad = self.image.pad(old_name)
            if pad is None:
                raise Refusal(EINVAL, f"'{name}': {old_name} has no fentry pad (it is notrace); it cannot be patched")
            new_fn = module.function_at(new_addr) if module else None
            if new_fn is None or new_fn.address != new_addr:
                raise Refusal(EINVAL, f"'{name}': the replacement for {old_name} ({new_addr:#x}) is not the start "
                                      f"of a function of {module.name}")
            if pad.address in seen:
                raise Refusal(EINVAL, f"'{name}': {old_name} is listed twice; a patch replaces a function once")
            if any(f & self.kernel.c["FTRACE_OPS_IPMODIFY_FLAG"] for f in self._ops.get(pad.address, ())):
                raise Refusal(EBUSY, f"'{name}': {old_name} has a kprobe with a post handler, which may change "
                                     "where it continues; remove it first (only one such user per function)")
            seen.add(pad.address)
            funcs.append(PatchFunc(old_name, pad.address, new_fn.name, new_addr))
        if not funcs:
            raise Refusal(EINVAL, f"'{name}': no function to patch")
        return PatchDescription(name, tuple(funcs), replace_all, tuple(skipped))

    # ---- hypercalls: record and answer; the work is done in _after_slice ----
    def _hc_patch(self, ptr, _b, _c):
        patch = self._calling_patch(ptr)
        if patch is None:
            self._log(f"kgr_patch_kernel({ptr:#x}) called outside a live patch module's init; refused", level=3)
            return -EINVAL
        if patch.state != PatchState.LOADING or patch.description is not None:
            # a second kgr_patch_kernel() from the same module: refused, and
            # the patch it already handed over is left exactly as it is
            errno = EBUSY if self.busy is not None else EEXIST
            self._log(f"'{patch.module.name}': kgr_patch_kernel() called again; the module's patch "
                      f"'{patch.name}' is already {patch.state.value}", level=3)
            return -errno
        try:
            size_ok = self.machine.guest_range_ok(ptr, 8)
            name_ptr = self.machine.u64(ptr + self.kernel.c["KGR_PATCH_name"]) if size_ok else 0
            patch.declared_name = self.machine.guest_cstring(name_ptr, 128) if size_ok else None
            desc = self._read_description(ptr, patch.module)
            if self.busy is not None:
                raise Refusal(EBUSY, f"'{desc.name}': refused: the transition of "
                                     f"'{self.busy.name}' is still in progress")
            if any(p.name == desc.name and p.state in (PatchState.COMPLETE, PatchState.TRANSITION)
                   for p in self.patches if p is not patch):
                raise Refusal(EEXIST, f"'{desc.name}': a patch of that name is already applied")
        except Refusal as r:
            patch.reason = str(r)
            self._log(str(r), level=3)
            self._set_state(patch, PatchState.REFUSED, str(r))
            # the module is unloaded once its init has returned (_hc_module_done):
            # its code is still running now
            return -r.errno
        patch.description = desc
        self._requests.append(("start", patch))
        self.machine.stop()
        return 0

    def _hc_unpatch(self, ptr, _b, _c):
        patch = self._patch_of_module(ptr)
        if patch is None or patch.state != PatchState.COMPLETE or self.busy is not None:
            self._log(f"kgr_patch_remove({ptr:#x}): no applied patch of this module there; ignored", level=4)
            return -EINVAL
        self._requests.append(("revert", patch))
        self.machine.stop()
        return 0

    def _hc_module_start(self, fn, tid, _c):
        if tid != self.kernel.current:
            raise GuestFault(f"an init reported started in task {tid:#x}, which is not running")
        patch = next((p for p in self.patches if p.module.init == fn and p.module.loaded
                      and p.loader_tid is None), None)
        if patch is not None:
            patch.loader_tid = tid
            patch.init_running = True

    def _hc_module_done(self, fn, ret, _c):
        ret = ret - (1 << 64) if ret >= 1 << 63 else ret
        ret = ret - (1 << 32) if ret >= 1 << 31 else ret
        patch = next((p for p in self.patches if p.module.init == fn and p.module.loaded
                      and (p.init_running or p.loader_tid is None)), None)
        if patch is None:
            return
        patch.init_running = False
        if ret == -EAGAIN and patch.loader_tid is None:
            self._fail_load(patch, f"no task could be created to run the init of {patch.module.name} "
                                   "(every task slot is in use); fork() failed with -EAGAIN")
        elif patch.state == PatchState.REFUSED:
            self._requests.append(("unload", patch))
            self.machine.stop()
        elif patch.state == PatchState.LOADING and ret == 0 and patch.module.this_module is not None:
            # a module that enabled no patch: loaded, like any module
            self._requests.append(("live", patch))
            self.machine.stop()
        elif patch.state == PatchState.LOADING:
            reason = (f"init of {patch.module.name} returned {ret}" if ret
                      else f"init of {patch.module.name} did not call kgr_patch_kernel()")
            patch.init_error = ret
            if patch.reason and patch.description is None:
                reason = f"{patch.reason}; {reason}"
            self._fail_load(patch, reason)
        elif ret == 0 and patch.module.this_module is not None:
            self._requests.append(("live", patch))
            self.machine.stop()
        elif ret:
            # The patch was enabled, then the init failed.  The enabled patch
            # holds a reference on its module (upstream's klp_enable_patch()
            # takes one with try_module_get()), so the module stays loaded
            # and the patch keeps going; only the return value is reported.
            patch.init_error = ret
            self._log(f"'{patch.module.name}': init returned {ret} after enabling patch '{patch.name}'; "
                      "the patch stays enabled and keeps its module loaded", level=4)

    def _fail_load(self, patch, reason):
        """The load fails: the module goes once nothing can reach it."""
        patch.reason = reason
        patch.init_running = False
        if patch.module.this_module is None:
            # a module of Linux's kind fails quietly: insmod says why
            self._log(f"'{patch.module.name}': {reason}", level=3)
        self._set_state(patch, PatchState.FAILED, reason)
        self._requests.append(("unload", patch))
        self.machine.stop()

    def _on_event(self, event):
        """An oops of the task running a module's init fails the load, as the
        oops kills insmod in Linux; a patch it already enabled stays."""
        if isinstance(event, ev.TaskExit):
            for p in self.patches:
                if p.init_running and p.loader_tid == event.tid:
                    # the init ended its task (do_exit()) instead of returning
                    p.init_running = False
                    why = f"init of {p.module.name} exited its task {event.tid} with code {event.code} " \
                          "instead of returning; the load failed"
                    if p.state == PatchState.LOADING:
                        self._fail_load(p, why)
                    elif p.state == PatchState.REFUSED:
                        self._requests.append(("unload", p))
            return
        if not isinstance(event, ev.Oops):
            return
        for p in self.patches:
            if p.init_running and p.loader_tid == event.tid:
                p.init_running = False
                if p.state in (PatchState.LOADING, PatchState.REFUSED):
                    why = f"init of {p.module.name} oopsed in {self.kernel.task(event.tid).name}/{event.tid}: " \
                          f"{event.reason} at {event.where}; the load failed"
                    if p.state == PatchState.LOADING:
                        self._fail_load(p, why)
                    else:
                        self._requests.append(("unload", p))
                else:
                    p.init_error = "oops"
                    self._log(f"'{p.module.name}': init oopsed after enabling patch '{p.name}'; "
                              "the patch stays enabled and keeps its module loaded", level=4)

    def _hc_safe(self, tid, kind, _c):
        stack_check = self.model == "upstream" and kind == self.kernel.c["KGR_SAFE_STACK_CHECK_KIND"]
        if stack_check and any(t.tid == tid and t.state.value not in ("dead", "unused") for t in self.kernel.tasks):
            pass    # klp_try_switch_task() switched a task that is not running, after its stack check
        elif tid not in (self.kernel.current, IRQ, 2**64 - 1):
            raise GuestFault(f"task {tid:#x} cannot move at a safe point: task {self.kernel.current} runs")
        t = self.transition
        if t is None:
            return
        mig = t.record_safe_point(tid, self.machine.clock)
        self._log_migrated(mig)

    def _log_start(self, t):
        """Which functions this transition switches, by name: the checker's
        stack rule looks for them on the stack of every task that moves."""
        self.kernel.log.add(ev.TransitionStart, self.machine.clock, patch=t.patch.name, target=t.target,
                            functions=self._names(t.funcs))

    def _names(self, funcs):
        """The names of the patched functions of funcs and of their versions."""
        k = self.kernel
        names = set()
        for pad, (old, new) in funcs.items():
            names.add(k.function_name(pad))
            for target in (old, new):
                if target is not None:
                    names.add(k.function_name(target))
        return tuple(sorted(n for n in names if n))

    def _join(self, t, obj_name, funcs):
        """A module's functions join the running transition t (see
        _object_patch()): every trampoline first (a full area refuses the
        join before any pad changed), then the observer's hooks, the pads,
        the event, and, under upstream's model, the guest's stack check.
        Where the trampoline area runs out, the module stays unpatched and
        the patch without it (upstream's klp_module_coming() warns and
        refuses the module; here the module's load has already returned)."""
        try:
            tramps = self._trampolines(funcs)
        except FtraceError as exc:
            t.patch.module_funcs.pop(obj_name, None)
            self._log(f"failed to apply patch '{t.patch.name}' to module '{obj_name}' ({exc})", level=4)
            return
        t.funcs.update(funcs)
        if self.on_transition is not None:
            self.on_transition(t, funcs)
        for pad, tramp in tramps.items():
            self.ftrace.set_call(pad, tramp)
        self.kernel.log.add(ev.TransitionJoin, self.machine.clock, patch=t.patch.name, module=obj_name,
                            functions=self._names(funcs))
        if self.model == "upstream" and self.kernel.booted:
            self._upstream_ranges(t)

    def _log_migrated(self, mig):
        """The move, with the functions on the stack of what moved (the
        interrupt context: up to its entry), for the checker's stack rule."""
        k = self.kernel
        if mig.tid == IRQ:
            frames, _ = k.task(k.current).unwind(64, interrupt_only=True)
        else:
            frames, _ = k.task(mig.tid).unwind(64)
        names = tuple(n for n in (k.function_name(a) for a in frames) if n)
        k.log.add(ev.Migrated, self.machine.clock, tid=mig.tid, by=mig.by, universe=mig.universe, stack=names)

    def _hc_kallsyms(self, name_ptr, _b, _c):
        name = self.machine.guest_cstring(name_ptr, 128)
        if name is None:
            return 0
        sym = self.image.lookup(name)
        if sym is not None:
            return sym.address
        return self.modules.lookup(name) or 0

    # ---- between slices ----
    def _after_slice(self):
        requests, self._requests = self._requests, []
        for what, patch in requests:
            if what == "start":
                self._start(patch)
            elif what == "revert":
                self._revert(patch)
            elif what == "reverse":
                self._reverse()
            elif what == "force":
                self._force()
            elif what == "finish":
                self._finish(guest_done=True)
            elif what == "load-image":
                self._load_image(*patch)
            elif what == "ops":
                self._ops_changed(patch)
            elif what == "obj-patch":
                self._object_patch(*patch)
            elif what == "obj-unpatch":
                self._object_unpatch(*patch)
            elif what == "live":
                if patch.state == PatchState.LOADING:
                    self._set_state(patch, PatchState.LOADED)
            elif what == "rmmod-done":
                self._rmmod_done(patch)
            elif what == "unload":
                if patch.module not in self._to_free:
                    self._to_free.append(patch.module)
        if self._to_free or self.ftrace.retired:
            self._reclaim()
        if self._waiting is not None and self.transition is None and not self.ftrace.retired:
            self._begin(*self._waiting)
        if self._stop is not None:
            self._stop_machine_step()
            return
        t = self.transition
        if t is None:
            return
        now = self.machine.clock
        if self.model == "klp" and now - (self._klp_last_check or t.started_at) >= KLP_CHECK_INTERVAL:
            self._klp_switch_sleepers(t)
        if self.model == "upstream":
            # the guest's transition work switches, signals and, for a klp
            # patch, completes; a kGraft patch's completion is the lab's
            if t.complete() and not t.patch.description.klp:
                self._finish()
            return
        if self.signal_after and now - t.last_signal_at >= self.signal_after and t.pending():
            self.send_fake_signals()
        if t.complete() and self.klp.completing is not t:
            self._finish()

    # ---- transitions ----
    def _begin(self, patch, funcs, target, verb, quiet=False):
        """Start a transition, or wait for the grace period first.

        A trampoline of an earlier transition encodes what universe 0 and 1
        meant then; a task preempted inside it before its decision (the
        window before preempt_disable) would decide with the new meaning.
        So, as upstream's klp_synchronize_transition() and ftrace's
        RCU-tasks wait before a trampoline goes or the patch state changes
        meaning, a transition starts only once every retired trampoline has
        been freed: no task is inside one any more."""
        if self.ftrace.retired:
            self._reclaim(force=True)
        if self.ftrace.retired:
            self._waiting = (patch, funcs, target, verb, quiet)
            return None
        self._waiting = None
        t = Transition(self.kernel, patch, funcs, target, self.machine.clock, upstream=self.model == "upstream")
        if self.on_transition is not None:
            self.on_transition(t)
        # every trampoline first: a full area refuses the patch before any
        # pad or universe changed
        tramps = self._trampolines(funcs)
        t.start()
        for pad, tramp in tramps.items():
            self.ftrace.set_call(pad, tramp)
        self.transition = t
        self._set_in_progress(1)
        if self.model == "upstream" and self.kernel.booted:
            self._upstream_arm(t)
        self._log_start(t)
        if not quiet:        # klp: klp_init/start_transition() said it in the guest
            self._log(f"'{patch.name}': initializing {verb} transition")
            self._log(f"'{patch.name}': starting {verb} transition")
        if self.model == "kgraft" and self.kernel.booted:
            self._wake_kthreads(t)
        return t

    def _trampolines(self, funcs):
        """{pad: its transition trampoline} for funcs, all or none: where the
        area runs out, the ones made are freed and FtraceError raised."""
        tramps = {}
        try:
            for pad, (old, new) in funcs.items():
                tramps[pad] = self._transition_trampoline(pad, old, new)
        except FtraceError:
            for address in tramps.values():
                self.ftrace.retired[address] = self.ftrace.trampolines()[address][0]
                self.ftrace.free_trampoline(address)
            raise
        return tramps

    # ---- a pad's other users (ftrace_ops: kprobes, the function tracer) ----
    def _transition_trampoline(self, pad, old, new):
        dispatch = self.image.address("ftrace_ops_caller") if self._ops.get(pad) else None
        return self.ftrace.alloc_trampoline(
            lambda a: build_trampoline(a, self._consts, old, new, irq_universe=self.model != "upstream",
                                       pad=pad, dispatch=dispatch),
            (old, new), owner=self.kernel.function_name(pad))

    def _settle_pad(self, pad, target):
        """The pad of a function no transition is switching: a direct JMP to
        its live version (or its own body: NOP), kGraft's "no checks once
        everyone has moved"; with other users on the pad, a CALL to code
        that runs them first, then goes there (upstream keeps its handler)."""
        if self._ops.get(pad):
            dispatch = self.image.address("ftrace_ops_caller")
            stub = self.ftrace.alloc_trampoline(lambda a: build_ops_stub(a, pad, dispatch, target), (target,),
                                                owner=self.kernel.function_name(pad))
            self.ftrace.set_call(pad, stub)
        elif target is None:
            self.ftrace.set_nop(pad)
        else:
            self.ftrace.set_jmp(pad, target)
        self.ftrace.retire_trampolines()

    def _livepatched(self, pad):
        if pad in self._stacks:
            return True
        for funcs in (self.transition.funcs if self.transition else {},
                      self._waiting[1] if self._waiting else {},
                      self._stop["transition"].funcs if self._stop else {}):
            if pad in funcs:
                return True
        return False

    def _wake_kthreads(self, t):
        """kGraft's kgr_handle_processes(): every kernel thread is woken at
        the start, so that one sleeping in a loop reaches its safe point
        (kgr_task_safe() or the freezer) instead of waiting for work."""
        for task in t.pending():
            if task.kind == "kthread" and not task.is_idle and not task.is_current:
                self.kernel.kick(task.tid, fake_signal=False)

    def _set_in_progress(self, value):
        """kgr_in_progress, what /sys/kernel/kgraft/in_progress and
        /proc/<pid>/patch_state read."""
        self.machine.set_u32(self.image.address("kgr_in_progress"), value)

    def _is_pad(self, address):
        if any(p.address == address for p in self.image.pads):
            return True
        m = self.modules.module_at(address)
        return m is not None and any(a == address for a, _f in m.pads)

    def _hc_ftrace_ops(self, ip, flags, on):
        """register_ftrace_function() for a kprobe or the tracer (on 1/0), or
        whether a live patch's handler would be refused here (on 2): only one
        user of a function may change where it continues (IPMODIFY)."""
        ipmodify = self.kernel.c["FTRACE_OPS_IPMODIFY_FLAG"]
        if not self._is_pad(ip):
            return -EINVAL
        users = self._ops.get(ip, [])
        if on == 2:
            return -EBUSY if any(f & ipmodify for f in users) else 0
        if on == 1:
            if flags & ipmodify and (self._livepatched(ip) or any(f & ipmodify for f in users)):
                return -EBUSY
            self._ops.setdefault(ip, []).append(flags)
        elif on == 0:
            if flags not in users:
                return -EINVAL
            users.remove(flags)
            if not users:
                self._ops.pop(ip, None)
        else:
            raise GuestFault(f"ftrace_ops request {on} for {ip:#x}: neither on (1), off (0) nor a query (2)")
        self._requests.append(("ops", ip))
        self.machine.stop()
        return 0

    def _ops_changed(self, pad):
        """Rewrite a pad whose other users changed."""
        t = self.transition
        if t is not None and pad in t.funcs:
            old, new = t.funcs[pad]
            self.ftrace.set_call(pad, self._transition_trampoline(pad, old, new))
            self.ftrace.retire_trampolines()
        elif pad in self._stacks:
            self._settle_pad(pad, self._stacks[pad][-1][1])
        elif not self._livepatched(pad):
            self._settle_pad(pad, None)
        # (a pad whose patch waits for the grace period or a stop-machine
        # attempt is written when that transition starts)

    def _start(self, patch):
        desc = patch.description
        funcs = {}
        for f in patch.functions():
            stack = self._stacks.get(f.old_addr, [])
            funcs[f.old_addr] = (stack[-1][1] if stack else None, f.new_addr)
        if desc.replace_all:
            for pad, stack in self._stacks.items():
                if pad not in funcs and stack:
                    funcs[pad] = (stack[-1][1], None)
        if not desc.klp:     # klp_enable_patch() said it in the guest
            self._log(f"enabling patch '{patch.name}'")
        if "LIVEPATCH" not in self.taints:
            self.taints.append("LIVEPATCH")
        patch.started_at = self.machine.clock
        self._set_state(patch, PatchState.TRANSITION)
        if self.kernel.booted and self.model == "immediate":
            self._apply_immediately(patch, funcs)
            return
        if self.kernel.booted and self.model == "stop-machine":
            self._stop_machine_begin(patch, funcs)
            return
        t = self._begin(patch, funcs, 1, "patching", quiet=desc.klp)
        if not self.kernel.booted:
            # applied from start_kernel(): no task exists yet, every later one
            # starts in the new universe
            t.force(self.machine.clock, by=None)
            self._finish(boot=True)

    def _finish(self, boot=False, guest_done=False):
        t = self.transition
        patch = t.patch
        klp = patch.description.klp
        if klp and not guest_done:
            # upstream's klp_complete_transition() runs post callbacks: the
            # guest runs it (kmodloader), then says HC_KLP_DONE
            self.klp.complete(t)
            return
        self.klp.completing = None
        self._set_in_progress(0)
        if self.model == "upstream":
            self.machine.set_u32(self.image.address("klp_work_active"), 0)
        verb = "patching" if t.target == 1 else "unpatching"
        if not klp:
            self._log(f"'{patch.name}': completing {verb} transition")
        for pad, (old, new) in t.funcs.items():
            self._settle_pad(pad, new if t.target == 1 else old)
        now = self.machine.clock
        if t.target == 1:
            desc = patch.description
            if desc.replace_all:
                for other in self.patches:
                    if other is not patch and other.state == PatchState.COMPLETE:
                        other.replaced_by = patch.name
                        self._set_state(other, PatchState.REVERTED, f"replaced by '{patch.name}'")
                        if not other.description.klp:   # a klp module stays until rmmod
                            self._to_free.append(other.module)
                self._stacks = {}
            for pad, (old, new) in t.funcs.items():
                if new is None:
                    self._stacks.pop(pad, None)
                else:
                    stack = self._stacks.setdefault(pad, [])
                    if not stack or stack[-1][0] is not patch:
                        stack.append((patch, new))
            patch.completed_at = now
            self._set_state(patch, PatchState.COMPLETE, "boot" if boot else "")
        else:
            for pad in t.funcs:
                stack = self._stacks.get(pad, [])
                if stack and stack[-1][0] is patch:
                    stack.pop()
                if not stack:
                    self._stacks.pop(pad, None)
            patch.completed_at = now
            self._set_state(patch, PatchState.REVERTED)
            # kGraft: rmmod once nothing reaches it, the unpatched module has
            # no more use; a klp module stays loaded until rmmod, as upstream's
            if not klp:
                self._to_free.append(patch.module)
        if not klp:
            self._log(f"'{patch.name}': {verb} complete")
        self.last_transition = t
        self.transition = None
        self.ftrace.retire_trampolines()

    # ---- what a user asks for ----
    def find(self, name):
        """The newest patch called name that was applied, else the newest of that name."""
        named = [p for p in self.patches if p.name == name]
        live = [p for p in named if p.state not in (PatchState.REFUSED, PatchState.FAILED)]
        if live or named:
            return (live or named)[-1]
        names = ", ".join(p.name for p in self.patches) or "none"
        raise LivepatchError(f"no patch {name!r}; loaded patches: {names}")

    def revert(self, name):
        """Unpatch: the same transition backwards.  Reverting the patch whose
        transition is running reverses that transition instead.  A klp
        patch is disabled the way upstream's is, by writing 0 to its
        `enabled` file: the guest runs the pre-unpatch callbacks first."""
        patch = self.find(name)
        t = self.transition
        if t is not None:
            if t.patch is not patch:
                raise LivepatchError(f"'{t.patch.name}' is in transition; wait for it or revert it first")
            self.reverse()
            return patch
        if patch.state != PatchState.COMPLETE:
            raise LivepatchError(f"'{name}' is {patch.state.value}, not applied; nothing to revert")
        if patch.description.klp:
            self.write_file(f"/sys/kernel/livepatch/{patch.name}/enabled", "0")
            return patch
        return self._revert(patch)

    def _revert(self, patch):
        name = patch.name
        funcs = {}
        for f in patch.functions():
            stack = self._stacks.get(f.old_addr, [])
            if not stack or stack[-1][0] is not patch:
                top = stack[-1][0].name if stack else "?"
                raise LivepatchError(f"'{name}': {f.old_name} is patched again by '{top}'; revert that one first")
            below = stack[-2][1] if len(stack) > 1 else None
            funcs[f.old_addr] = (below, f.new_addr)
        self._set_state(patch, PatchState.REVERTING)
        self._begin(patch, funcs, 0, "unpatching", quiet=patch.description.klp)
        return patch

    def reverse(self):
        t = self._need_transition()
        if t.patch.description.klp:
            # upstream reverses by writing the other value to `enabled`
            self.write_file(f"/sys/kernel/livepatch/{t.patch.name}/enabled", "0" if t.target == 1 else "1")
            return
        self._reverse()

    def _reverse(self):
        t = self._need_transition()
        before = "patching" if t.target == 1 else "unpatching"
        t.reverse()
        after = "patching" if t.target == 1 else "unpatching"
        if not t.patch.description.klp:      # klp_reverse_transition() said it in the guest
            self._log(f"'{t.patch.name}': reversing transition from {before} to {after}")
            self._log(f"'{t.patch.name}': starting {after} transition")
        if self.model == "upstream":
            self._upstream_arm(t)
        self._set_state(t.patch, PatchState.TRANSITION if t.target == 1 else PatchState.REVERTING, "reversed")

    def force(self):
        """Move every pending task now.  Unsafe, so recorded as a warning
        (and, for a kGraft patch, a taint).  A klp patch is forced as
        upstream's is, by writing 1 to its `force` file."""
        t = self._need_transition()
        if t.patch.description.klp:
            self.write_file(f"/sys/kernel/livepatch/{t.patch.name}/force", "1")
            return
        self._force()

    def _force(self):
        t = self._need_transition()
        klp = t.patch.description.klp
        if not klp:
            # upstream's words (klp_force_transition() says "patched" either way)
            self._log("forcing remaining tasks to the patched state", level=4)
        for tid in t.force(self.machine.clock):
            self._log_migrated(t.migrated[tid])
        # no taint for it, as upstream has none: a forced patch's module can
        # never be removed (klp_free_patch_finish() keeps its reference)
        t.patch.forced = True
        if t.complete():
            self._finish()

    def send_fake_signals(self):
        """SIGKGRAFT: wake every task still in progress so it passes a safe point."""
        t = self._need_transition()
        if self.model == "klp" and self._signaled is not t and t.pending():
            self._signaled = t
            self._log("signaling remaining tasks")
        return t.send_fake_signals(self.machine.clock)

    def _need_transition(self):
        if self.transition is None:
            raise LivepatchError("no transition is in progress")
        return self.transition

    def pending(self):
        """(task, function it sleeps in) for every task the transition waits for."""
        t = self.transition
        if t is None:
            return []
        return [(task, task.sleeps_in()) for task in t.pending()]
