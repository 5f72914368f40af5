"""reclaim - freeing retired trampolines and unloaded modules once nothing
can reach them (upstream waits with klp_synchronize_transition() and module
references; the lab looks at every task's RIP and stack)."""
from __future__ import annotations

from array import array

from .patch import PatchState

RECLAIM_INTERVAL = 50_000      # how often retired trampolines and unloaded modules are tried


class Reclaim:
    """Mixed into Livepatch."""

    @property
    def reclaim_pending(self):
        """Whether retired trampolines or unloaded modules still wait to be freed."""
        return bool(self._to_free or self.ftrace.retired)

    def _reclaim(self, force=False):
        """Free retired trampolines and unloaded modules once no task can
        still run in them or return into them.  Upstream waits for that with
        klp_synchronize_transition() and the module's refcount; the lab
        checks it directly: every live task's RIP and, conservatively, every
        word on its kernel stack.  Tried at most every RECLAIM_INTERVAL,
        unless a transition waits for it (force)."""
        now = self.machine.clock
        if now - self._last_reclaim < RECLAIM_INTERVAL and not force:
            return
        self._last_reclaim = now
        words, frames = self._stack_words()
        for address, size in sorted(self.ftrace.retired.items()):
            if not any(address <= w < address + size for w in words | frames):
                self.ftrace.free_trampoline(address)
        pinned = set()
        for p in self.patches:
            if p.state in (PatchState.TRANSITION, PatchState.COMPLETE, PatchState.REVERTING) or p.init_running:
                pinned.add(id(p.module))
        live_targets = [t for _s, t in self.ftrace.pad_states().values() if t is not None]
        live_targets += [t for _size, targets in self.ftrace.trampolines().values() for t in targets]
        live_targets += [new for stack in self._stacks.values() for _p, new in stack]
        for module in list(self._to_free):
            if id(module) in pinned or not module.loaded:
                if not module.loaded:
                    self._to_free.remove(module)
                continue
            lo, hi = module.base, module.base + module.size
            if any(lo <= a < hi for a in live_targets):
                continue
            # a task runs in or returns into its code: a RIP or return address
            # into a .text section (a stale data pointer on a stack is no use
            # of the module: Linux's module refcount ignores those too)
            texts = [(a, a + n) for name, (a, n) in module.sections.items() if name.startswith(".text")]
            if any(a <= w < b for w in frames for a, b in texts):
                continue
            if any(a <= w < b and self._after_call(w) for w in words for a, b in texts):
                continue
            self.modules.unload(module)
            self._to_free.remove(module)

    def _stack_words(self):
        """(every 8-byte word of every live task's kernel stack, every frame
        the unwinder finds: RIPs, interrupted RIPs, return addresses)."""
        m, k = self.machine, self.kernel
        words, frames = set(), set()
        for task in k.tasks:
            if task.state.value in ("dead", "unused"):
                continue
            lo, hi = task.stack_range
            frames.update(task.unwind(64)[0])
            if task.is_current:
                rip, rsp, _f = m.cpu_state()
                frames.add(rip)
                sp = rsp if lo <= rsp <= hi else hi
            else:
                sp = m.u64(task._field("thread_sp"))
                sp = sp if lo <= sp <= hi else lo
            words.update(array("Q", m.read(sp & ~7, hi - (sp & ~7))))
        return words, frames

    def _after_call(self, address):
        """Whether address could be a return address: a CALL (e8 rel32, or
        ff /2 in its 2-, 3-, 6- and 7-byte forms) ends right before it.  A
        function pointer kept on a stack is not a use of the code."""
        if not self.machine.guest_range_ok(address - 7, 7):
            return False
        b = self.machine.read(address - 7, 7)
        return b[2] == 0xE8 or any(b[i] == 0xFF and (b[i + 1] >> 3) & 7 == 2 for i in (0, 1, 4, 5))

