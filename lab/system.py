"""system - the hub: one booted kernel with its image, machine and the layers above them."""
from __future__ import annotations

from .checker import Checker
from .ftrace import Ftrace
from .image import Image
from .kernel import DEFAULT_QUANTUM, Kernel
from .livepatch import InitHung, Livepatch, LivepatchError, PatchState
from .machine import Machine
from .modules import ModuleLoader

_INIT_BUDGET_QUANTA = 200   # how long a module's init may take before the lab gives up
_EXIT_BUDGET_QUANTA = 3000  # how long rmmod waits for a module's exit (30 s of the kernel's time)


class System:
    """A booted lab kernel.  Parts are read-only properties; run() drives it."""

    def __init__(self, image=None, *, workload="default", seed=0, quantum=DEFAULT_QUANTUM, cmdline="",
                 patches=(), signal_after=None, record=False, keyframe_every=None, model="kgraft",
                 observe=False, params=None):
        self._image = image if isinstance(image, Image) else Image.load(image)
        words = self._image.check_params(workload, params)   # before anything is built
        cmdline = " ".join(filter(None, [cmdline, *words]))
        self._machine = Machine()
        self._kernel = Kernel(self._image, self._machine, workload=workload, seed=seed,
                              quantum=quantum, cmdline=cmdline)
        self._modules = ModuleLoader(self._image, self._machine)
        self._ftrace = Ftrace(self._kernel, self._modules)
        self._kernel.text_resolvers.append(self._module_function)
        self._kernel.symbolizer = self._ftrace.symbolize
        self._livepatch = Livepatch(self._kernel, self._ftrace, self._modules, signal_after=signal_after,
                                    model=model)
        self.boot_patches = tuple(str(p) for p in patches)
        self.recorder = None
        self.observer = None
        self._checker = Checker()      # the verdict so far, fed as violations() is asked
        if record:
            from .trace import DEFAULT_KEYFRAME_EVERY, record as start_recording
            start_recording(self, keyframe_every or DEFAULT_KEYFRAME_EVERY)
        elif observe:
            from .trace import Observer
            self.observer = Observer(self)
        try:
            for path in patches:   # a reboot with patches: applied before the first task runs
                self._livepatch.load(path)
            self.run_until_booted()   # start_kernel() has created the workload's tasks
            for p in self._livepatch.patches:
                if p.state in (PatchState.REFUSED, PatchState.FAILED):
                    raise LivepatchError(f"boot patch {p.module.path}: {p.reason}")
        except BaseException:
            self.close()
            raise

    # ---- resources ----
    def close(self):
        """Release the emulator now.  `with lab.boot(...) as system:` does it
        on leaving the block; a closed system cannot run again."""
        self._machine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- snapshots (the explorer restores one per schedule) ----
    def snapshot(self):
        """This system's state now, for restore(): see lab.snapshot."""
        from .snapshot import snapshot
        return snapshot(self)

    def restore(self, snap):
        """Bring the system back to a snapshot taken of it."""
        from .snapshot import restore
        return restore(self, snap)

    # ---- what must not change when a patch is refused ----
    def state_digest(self):
        """A sha256 over what a refused patch must leave as it was: kernel
        text (pads included), the module area, the trampoline area, every
        pad's state and func stack, the live tasks' universes, the loaded
        modules and the patches that are not refused or failed (a refused
        module is gone from the list, as from lsmod)."""
        import hashlib

        from .ftrace import TRAMPOLINE_AREA
        from .modules import MODULE_AREA
        m, img, lp = self._machine, self._image, self._livepatch
        h = hashlib.sha256()
        text = img.address("_stext"), img.address("_etext")
        for lo, hi in (text, TRAMPOLINE_AREA):
            h.update(m.read(lo, hi - lo))
        area = bytearray(m.read(MODULE_AREA[0], MODULE_AREA[1] - MODULE_AREA[0]))
        for mod in self._modules.modules:     # what a loaded module's code writes as it runs
            for address, size in mod.writable():
                area[address - MODULE_AREA[0]:address - MODULE_AREA[0] + size] = bytes(size)
        h.update(area)
        h.update(repr(sorted((a, s.value, t) for a, (s, t) in self._ftrace.pad_states().items())).encode())
        h.update(repr(lp.func_stacks()).encode())
        h.update(repr([(t.tid, t.name, t.kgr_universe) for t in self.tasks
                       if t.state.value not in ("dead", "unused")]).encode())
        h.update(repr([(mod.name, mod.base, mod.size) for mod in self._modules.modules if mod.loaded]).encode())
        h.update(repr([(p.name, p.state.value) for p in lp.patches
                       if p.state not in (PatchState.REFUSED, PatchState.FAILED)]).encode())
        h.update(repr(lp.transition is not None).encode())
        return h.hexdigest()

    def _module_function(self, address):
        m = self._modules.module_at(address)
        f = m.function_at(address) if m else None
        return f.name if f else None

    image = property(lambda self: self._image)
    machine = property(lambda self: self._machine)
    kernel = property(lambda self: self._kernel)
    modules = property(lambda self: self._modules)
    ftrace = property(lambda self: self._ftrace)
    livepatch = property(lambda self: self._livepatch)

    @property
    def clock(self):
        return self._machine.clock

    @property
    def tasks(self):
        return self._kernel.tasks

    @property
    def events(self):
        return self._kernel.log.events

    @property
    def digest(self):
        return self._kernel.log.digest

    @property
    def console(self):
        return self._kernel.console

    @property
    def patches(self):
        return list(self._livepatch.patches)

    @property
    def transition(self):
        return self._livepatch.transition

    def task(self, tid_or_name):
        if isinstance(tid_or_name, str):
            return self._kernel.find(tid_or_name)
        return self._kernel.task(tid_or_name)

    def run(self, instructions=None, until=None):
        """Run for instructions, or until until(system) holds (checked between slices)."""
        cond = (lambda _k: until(self)) if until is not None else None
        if self.recorder is not None:
            self.recorder.before_run()
        return self._kernel.run(instructions, cond)

    def run_until_booted(self):
        if not self._kernel.booted:
            self.run(until=lambda s: s.kernel.booted)

    # ---- signals and faults ----
    def send_signal(self, task, sig):
        self._kernel.send_signal(self.task(task).tid, sig)

    def inject_fault(self, task):
        self._kernel.inject_fault(self.task(task).tid)

    # ---- live patching ----
    def apply_patch(self, path):
        """Load a patch object and run until its init has handed the patch to
        the kGraft core (the transition has then started).  Raises
        LivepatchError, with nothing changed, if the patch is refused."""
        self.run_until_booted()
        patch = self._livepatch.load(path)
        budget = _INIT_BUDGET_QUANTA * self._kernel.quantum
        self.run(budget, until=lambda s: patch.state != PatchState.LOADING)
        if patch.state in (PatchState.REFUSED, PatchState.FAILED):
            # let the init return, insmod exit and the module be freed before
            # reporting: the refusal then leaves the state it found
            self.run(budget, until=lambda s: not patch.module.loaded and not self._loader_alive(patch))
            if patch.module.loaded:
                raise LivepatchError(f"{patch.reason}; its module is still loaded: a task still runs in it")
            raise LivepatchError(patch.reason)
        if patch.state == PatchState.LOADING:
            where = ""
            if patch.init_running:
                task = self._kernel.task(patch.loader_tid)
                where = f"; it still runs in {task.name}/{task.tid} (insmod would hang the same way), " \
                        "so the module stays loaded"
            raise InitHung(f"{path}: the module's init has not returned after {budget:,} instructions{where}")
        return patch

    # ---- modules and files, as a shell would use them ----
    def insmod(self, path, params=None):
        """`insmod PATH NAME=VALUE...`: load a module, a live patch or not,
        and run until its init has returned.  A klp patch's transition has
        started then (load_lp_nowait in upstream's selftests).  Raises
        LivepatchError with modprobe's words if the load fails; returns the
        Patch (state LOADED for a module that enables no patch)."""
        from .livepatch.klp import STRERROR
        self.run_until_booted()
        patch = self._livepatch.load(path, params)
        budget = _INIT_BUDGET_QUANTA * self._kernel.quantum
        self.run(budget, until=lambda s: patch.state in (PatchState.FAILED, PatchState.REFUSED) or (
            patch.loader_tid is not None and not patch.init_running and patch.state != PatchState.LOADING))
        if patch.state in (PatchState.FAILED, PatchState.REFUSED):
            self.run(budget, until=lambda s: not patch.module.loaded and not self._loader_alive(patch))
            err = patch.init_error if isinstance(patch.init_error, int) and patch.init_error < 0 else None
            why = STRERROR.get(-err, f"error {err}") if err is not None else patch.reason
            raise LivepatchError(f"modprobe: ERROR: could not insert '{patch.module.name}': {why}")
        if patch.state == PatchState.LOADING:
            raise InitHung(f"{path}: the module's init has not returned after {budget:,} instructions")
        return patch

    def rmmod(self, name):
        """`rmmod NAME`: run the module's exit and free it.  Refused (in use)
        while an enabled or forced klp patch holds it."""
        request = self._livepatch.rmmod(name)
        module = request.module
        # an exit may wait for its module's work to end (cancel_work_sync())
        budget = _EXIT_BUDGET_QUANTA * self._kernel.quantum
        self.run(budget, until=lambda s: request.done and not module.loaded)
        if not request.done:
            raise InitHung(f"rmmod {name}: the module's exit has not returned after {budget:,} instructions")

    def write_file(self, path, value):
        """`echo VALUE > PATH`, done by a task of the kernel through the
        file's own write path; returns what write() returned (bytes, or -errno)."""
        request = self._livepatch.write_file(path, value)
        return self._finish_request(request)

    def read_file(self, path):
        """`cat PATH`: the file's text, read by a task of the kernel."""
        from .livepatch.klp import STRERROR
        request = self._livepatch.read_file(path)
        ret = self._finish_request(request)
        if ret < 0:
            raise LivepatchError(f"cat: {path}: {STRERROR.get(-ret, f'error {ret}')}")
        return request.text

    def spawn(self, program):
        """Start a user program the kernel has (`test_klp-call_getpid`), as a
        shell's `PROGRAM &`; its pid (tid)."""
        from .livepatch.klp import STRERROR
        ret = self._finish_request(self._livepatch.spawn(program))
        if ret < 0:
            raise LivepatchError(f"{program}: {STRERROR.get(-ret, f'error {ret}')}")
        return ret

    def stat(self, path):
        """stat(2)'s st_mode of a file the kernel serves (the live patching sysfs)."""
        from .livepatch.klp import STRERROR
        ret = self._finish_request(self._livepatch.stat_file(path))
        if ret < 0:
            raise LivepatchError(f"stat: cannot statx '{path}': {STRERROR.get(-ret, f'error {ret}')}")
        return ret

    def _finish_request(self, request):
        budget = _INIT_BUDGET_QUANTA * self._kernel.quantum
        self.run(budget, until=lambda s: request.done)
        if not request.done:
            raise InitHung(f"the kernel has not finished `{request.path}` after {budget:,} instructions")
        return request.result

    def _loader_alive(self, patch):
        if patch.loader_tid is None:
            return False
        task = self._kernel.task(patch.loader_tid)
        return task.name == "insmod" and task.state.value not in ("dead", "unused")

    def revert(self, name):
        return self._livepatch.revert(name)

    def force(self):
        """Move every pending task now.  A klp patch is forced through its
        `force` file and completed by the kernel (its post callbacks run):
        this returns once that is done."""
        self._livepatch.force()
        if self._livepatch.transition is not None:
            budget = _INIT_BUDGET_QUANTA * self._kernel.quantum
            self.run(budget, until=lambda s: s.livepatch.transition is None)

    def send_fake_signals(self):
        return self._livepatch.send_fake_signals()

    def run_until_patched(self, limit):
        """Run until no transition (or stop-machine attempt) is in progress, at most limit instructions."""
        return self.run(limit, until=lambda s: s.livepatch.busy is None)

    def violations(self):
        """The consistency checker's verdict on this run (needs observe=True or record=True)."""
        if self.observer is None and self.recorder is None:
            from .errors import UsageError
            raise UsageError("the checker needs the run's calls: boot with observe=True (or record=True)")
        return self._checker.feed(self.events).verdict()

    def report(self):
        from .report import build_report
        return build_report(self)

    def save_trace(self, path):
        """Write the trace of this run (boot with record=True)."""
        if self.recorder is None:
            from .errors import UsageError
            raise UsageError("this system is not recording; boot it with record=True (or --trace FILE)")
        return self.recorder.save(path)


def boot(image=None, *, workload="default", seed=0, quantum=DEFAULT_QUANTUM, cmdline="", patches=(),
         signal_after=None, record=False, keyframe_every=None, model="kgraft", observe=False, params=None):
    """Boot the kernel image (default: firmware/kernel.elf) with a workload;
    patches are applied at boot, before the first task runs.  With record=True
    the run can be saved as a trace (save_trace()).  params: the workload's
    parameters ({"nr_hammer": 8}), checked against the ranges the image
    declares."""
    return System(image, workload=workload, seed=seed, quantum=quantum, cmdline=cmdline, patches=patches,
                  signal_after=signal_after, record=record, keyframe_every=keyframe_every, model=model,
                  observe=observe, params=params)
