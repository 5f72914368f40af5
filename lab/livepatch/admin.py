"""admin - the admin surface as a shell uses it: files the kernel serves
(echo, cat, stat) and modules (rmmod), each done by a task of the kernel
that kmodloader starts; and what a module coming or going does to the
patches of its functions."""
from __future__ import annotations

from .klp import REQ_READ, REQ_RMMOD, REQ_SPAWN, REQ_STAT, REQ_WRITE, KlpBusy, Request
from .patch import LivepatchError, PatchState


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
        """A module the patch patches came: its functions go to the patch's
        new versions at once.  (Upstream patches it with the ftrace handler,
        which follows each task's state while the patch is in transition;
        here a module coming during that patch's own transition gets the
        target version directly.)"""
        for f in patch.module_funcs.get(obj_name, ()):
            stack = self._stacks.setdefault(f.old_addr, [])
            stack.append((patch, f.new_addr))
            self._settle_pad(f.old_addr, f.new_addr)

    def _object_unpatch(self, patch, obj_name):
        """The module goes: its functions leave the patch (klp_unpatch_object())."""
        for f in patch.module_funcs.pop(obj_name, ()):
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

