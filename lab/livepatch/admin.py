"""admin - the admin surface as a shell uses it: files the kernel serves
(echo, cat, stat) and modules (rmmod), each done by a task of the kernel
that kmodloader starts; and what a module coming or going does to the
patches of its functions."""
from __future__ import annotations

import pathlib

from ..errors import GuestFault
from ..modules import ModuleError
from .klp import REQ_READ, REQ_RMMOD, REQ_SPAWN, REQ_STAT, REQ_WRITE, KlpBusy, Request
from .patch import LivepatchError, PatchState

ENOEXEC, EEXIST, EINVAL = 8, 17, 22


class Admin:
    """Mixed into Livepatch."""

    def _submit(self, request):
        try:
            return self.klp.submit(request)
        except KlpBusy as e:
            raise LivepatchError(str(e)) from None

    def write_file(self, path, value):
        """`echo VALUE > PATH` from a task of the kernel: the write goes
        through the file's own store (e.g. a patch's `enabled`).  Returns
        the Request; its result is the write's return value once done."""
        return self._submit(Request(REQ_WRITE, path=str(path), value=str(value)))

    def read_file(self, path):
        """`cat PATH` from a task of the kernel; the Request's text once done."""
        return self._submit(Request(REQ_READ, path=str(path)))

    def spawn(self, program):
        """`PROGRAM &`: start one of the kernel's user programs; the
        Request's result is its pid once started."""
        return self._submit(Request(REQ_SPAWN, path=str(program)))

    def stat_file(self, path):
        """stat PATH from a task of the kernel; the Request's result is the mode."""
        return self._submit(Request(REQ_STAT, path=str(path)))

    def loaded_modules(self):
        """Patches and modules whose module is loaded and not going, as lsmod lists them."""
        return [p for p in self.patches if p.module.loaded
                and p.state not in (PatchState.REFUSED, PatchState.FAILED, PatchState.REMOVED)]

    def rmmod(self, name):
        """Remove a module: its exit runs in an rmmod task, then it is freed
        once nothing reaches it.  Refused, as Linux's delete_module() refuses,
        while something holds a reference (an enabled or forced klp patch)."""
        patch = next((p for p in reversed(self.loaded_modules()) if p.module.name == name), None)
        if patch is None:
            raise LivepatchError(f"rmmod: ERROR: Module {name} is not currently loaded")
        if (self.modules.refcnt(patch.module) > 0 or patch.forced or patch.init_running
                or patch.state in (PatchState.LOADING, PatchState.TRANSITION, PatchState.REVERTING)):
            raise LivepatchError(f"rmmod: ERROR: Module {name} is in use")
        return self._submit(Request(REQ_RMMOD, module=patch.module, path=name))

    def _object_patch(self, patch, obj_name):
        """A module the patch patches came (klp_module_coming()).  While the
        patch's own transition runs, the module's functions join it: their
        pads get the transition's trampoline, so each task runs the version
        of its universe, as upstream's ftrace handler follows each task's
        state (func->transition is set for every object of the patch in
        transition, loaded or not) and kGraft gives a loading module's
        functions the slow stub while patching is in progress.  A patch that
        waits to start, or for its stop_machine(), takes them along.
        Otherwise they go to the patch's new versions at once."""
        funcs = {}
        for f in patch.module_funcs.get(obj_name, ()):
            stack = self._stacks.get(f.old_addr, [])
            funcs[f.old_addr] = (stack[-1][1] if stack else None, f.new_addr)
        t = self.transition
        if t is not None and t.patch is patch:
            self._join(t, obj_name, funcs)
            return
        for waiting in (self._waiting[1] if self._waiting and self._waiting[0] is patch else None,
                        self._stop["transition"].funcs if self._stop and self._stop["transition"].patch is patch
                        else None):
            if waiting is not None:
                waiting.update(funcs)
                return
        for pad, (_old, new) in funcs.items():
            self._stacks.setdefault(pad, []).append((patch, new))
            self._settle_pad(pad, new)

    def _object_unpatch(self, patch, obj_name):
        """The module goes: its functions leave the patch (klp_unpatch_object()),
        and the transition they joined, if it still runs."""
        t = self.transition
        for f in patch.module_funcs.pop(obj_name, ()):
            if t is not None and t.patch is patch:
                t.funcs.pop(f.old_addr, None)
            stack = [e for e in self._stacks.get(f.old_addr, []) if e[0] is not patch]
            if stack:
                self._stacks[f.old_addr] = stack
                self._settle_pad(f.old_addr, stack[-1][1])
            else:
                self._stacks.pop(f.old_addr, None)
                self._settle_pad(f.old_addr, None)

    def _rmmod_done(self, module):
        patch = next((p for p in self.patches if p.module is module), None)
        if patch is None:
            return
        if patch.state in (PatchState.LOADED, PatchState.REVERTED, PatchState.COMPLETE):
            if patch.state != PatchState.COMPLETE:
                self._set_state(patch, PatchState.REMOVED)
            if module not in self._to_free and patch.state == PatchState.REMOVED:
                self._to_free.append(module)


    # ---- init_module() and delete_module() from user programs ----
    def _hc_load_module(self, image, length, args):
        """sys_init_module() hands the image over (already copied into the
        kernel); the lab loads it once this slice ends, before the caller
        reads load_module_result and runs the init itself."""
        m = self.machine
        if not m.guest_range_ok(image, length) or not 0 < length <= 0x10000:
            raise GuestFault(f"init_module: an image of {length} bytes at {image:#x} is not in the kernel's memory")
        text = m.guest_cstring(args, 128) if args else ""
        self._requests.append(("load-image", (bytes(m.read(image, length)), text or "")))
        m.stop()
        return 0

    def _load_image(self, data, args):
        """The loader's answer to init_module(): the init function, or -errno."""
        params = dict(item.partition("=")[::2] for item in args.split() if item)
        try:
            patch = self.load(pathlib.Path("init_module.ko"), params, image=data)
            result = patch.module.init
        except ModuleError as exc:
            self._log(f"init_module: {exc}", level=3)
            result = -ENOEXEC if "object" in str(exc) or "ELF" in str(exc) else -EINVAL
        except LivepatchError as exc:
            result = -EEXIST if "File exists" in str(exc) else -EINVAL
            self._log(f"init_module: {exc}", level=3)
        self.machine.set_u64(self.image.address("load_module_result"), result & (2**64 - 1))

    def _hc_module_gone(self, mod, _b, _c):
        """sys_delete_module() ran the module's exit: it goes once nothing reaches it."""
        patch = next((p for p in self.patches if p.module.loaded and p.module.this_module == mod), None)
        if patch is None:
            raise GuestFault(f"delete_module: {mod:#x} is no loaded module's struct module")
        self._requests.append(("rmmod-done", patch.module))
        self.machine.stop()
