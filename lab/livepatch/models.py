"""models - the consistency models other than kGraft's own: immediate
(Linux 4.0's first core), stop-machine (Ksplice, early kpatch), the klp
hybrid as the lab approximates it, and the arming of upstream's model, which
the kernel itself runs (firmware/livepatch.c)."""
from __future__ import annotations

from ..kernel import InterruptLost
from .patch import PatchState
from .transition import Transition

# stop-machine's cost, paid in emulated time by the stopped CPU (do_stop_cpu):
# a rendezvous of the stopper threads (IPIs, a context switch into the stopper
# and back) and, for every frame of every task's stack, one frame-pointer
# step plus comparing the return address with the patched functions' ranges.
# Figures in the order of what Linux's stop_machine() and its unwinder spend.
STOP_RENDEZVOUS_COST = 2_000
STOP_FRAME_COST = 40
STOP_SPIN_INSNS = 3            # instructions per iteration of do_stop_cpu()'s loop
STOP_RETRIES = 5               # Ksplice and early kpatch gave up after a few attempts
STOP_RETRY_INTERVAL = 500_000  # instructions between two attempts
KLP_CHECK_INTERVAL = 100_000   # how often the klp model tries to switch sleeping tasks


class Models:
    """Mixed into Livepatch: the models' steps, on its state."""

    def _apply_immediately(self, patch, funcs):
        """Upstream's first core (Linux 4.0): redirect every call at once,
        with no consistency model at all."""
        t = Transition(self.kernel, patch, funcs, 1, self.machine.clock)
        if self.on_transition is not None:
            self.on_transition(t)
        t.start()
        t.force(self.machine.clock, by=None)
        self.transition = t
        self._log(f"'{patch.name}': starting patching transition")
        self._finish()

    def _patched_ranges(self, funcs, target):
        """Address ranges a task must not be inside for the switch: the
        functions it would leave (old ones when patching)."""
        ranges = []
        for pad, (old, new) in funcs.items():
            leaving = old if target == 1 else new
            if leaving is None:
                f = self.image.function_at(pad)
                if f is None:       # a function of a module (klp module object)
                    m = self.modules.module_at(pad)
                    f = m.function_at(pad) if m else None
                if f is not None:
                    ranges.append((f.address, f.address + max(f.size, 1), f.name))
            else:
                m = self.modules.module_at(leaving)
                f = m.function_at(leaving) if m else None
                if f:
                    ranges.append((f.address, f.address + max(f.size, 1), f.name))
        return ranges

    def _blocker(self, task, ranges, require_reliable):
        frames, reliable = task.unwind()
        if require_reliable and not reliable:
            return frames, "has an unreliable stack"
        for a in frames:
            for lo, hi, name in ranges:
                if lo <= a < hi:
                    return frames, f"is sleeping on function {name}" if not task.is_current \
                        else f"is running in function {name}"
        return frames, None

    def _stop_machine_begin(self, patch, funcs):
        """Ksplice's (and early kpatch's) model: stop every task, check every
        stack, switch everything at once or resume and retry later."""
        t = Transition(self.kernel, patch, funcs, 1, self.machine.clock)
        if self.on_transition is not None:
            self.on_transition(t)
        self._stop = {"transition": t, "attempts": 0, "next": self.machine.clock, "delivered": None}
        self._log(f"'{patch.name}': stopping the machine to check every stack")
        self._stop_machine_step()

    def _stop_machine_step(self):
        st = self._stop
        m = self.machine
        if st["delivered"] is not None:
            return                      # the stop is being paid for (do_stop_cpu runs)
        if m.clock < st["next"] or not m.interrupts_enabled():
            return
        t = st["transition"]
        ranges = self._patched_ranges(t.funcs, 1)
        frames_checked, blocker = 0, None
        for task in self.kernel.tasks:
            if task.state.value in ("dead", "unused"):
                continue
            frames, why = self._blocker(task, ranges, require_reliable=False)
            frames_checked += len(frames)
            if why and blocker is None:
                blocker = f"{task.name}:{task.tid} {why}"
        cost = STOP_RENDEZVOUS_COST + STOP_FRAME_COST * frames_checked
        st["attempts"] += 1
        self.stop_attempts.append((m.clock, blocker is None, frames_checked, cost, blocker))
        self._deliver_stop(cost)
        if blocker is None:
            # the switch happens while everything stands still
            for pad, (_old, new) in t.funcs.items():
                self._settle_pad(pad, new)
            t.start()
            t.force(m.clock, by=None)
            self._stop = None
            self.transition = t
            self._log(f"'{t.patch.name}': all stacks clean after {st['attempts']} attempt(s); switched")
            self._finish()
            return
        self._log(f"'{t.patch.name}': stop-machine attempt {st['attempts']}: {blocker}", level=4)
        if st["attempts"] >= STOP_RETRIES:
            self._stop = None
            reason = f"gave up after {st['attempts']} attempts: {blocker}"
            t.patch.reason = reason
            self._log(f"'{t.patch.name}': {reason}", level=3)
            self._set_state(t.patch, PatchState.FAILED, reason)
            self._to_free.append(t.patch.module)
            return
        st["next"] = m.clock + STOP_RETRY_INTERVAL

    def _deliver_stop(self, cost):
        """The stop IPI: the current task's context is interrupted and the CPU
        spins in do_stop_cpu() for `cost` instructions, every task stopped."""
        m = self.machine
        st = self._stop
        m.set_u64(self.image.address("stop_machine_cost"), max(cost // STOP_SPIN_INSNS, 1))
        try:
            self.kernel.interrupt(self.image.address("stop_machine_entry"))
        except InterruptLost:
            return
        if st is not None:
            st["delivered"] = m.clock
        if not hasattr(self, "_stop_hook"):
            self._stop_hook = m.add_code_hook(self.image.address("stop_return_site"), self._stop_returned)
        self._stop_started = m.clock

    def _stop_returned(self, _address):
        self.stopped_instructions += self.machine.clock - self._stop_started
        if self._stop is not None:
            self._stop["delivered"] = None

    def _klp_switch_sleepers(self, t):
        """Upstream's hybrid: a task that is not running and whose stack holds
        none of the functions it would leave switches right away
        (klp_try_switch_task()); the rest wait for kernel exit or a signal."""
        self._klp_last_check = self.machine.clock
        ranges = self._patched_ranges(t.funcs, t.target)
        for task in t.pending():
            if task.is_current:
                continue
            _frames, why = self._blocker(task, ranges, require_reliable=True)
            if why is None:
                mig = t.switch(task, "stack-check", self.machine.clock)
                self._log_migrated(mig)

    def _upstream_ranges(self, t):
        """The guest's klp_check_ranges: where the functions t's tasks leave
        lie (again when a module's functions join t)."""
        m, img = self.machine, self.image
        ranges = self._patched_ranges(t.funcs, t.target)[:64]
        base = img.address("klp_check_ranges")
        for i, (lo, hi, _name) in enumerate(ranges):
            m.set_u64(base + 16 * i, lo)
            m.set_u64(base + 16 * i + 8, hi)
        m.set_u32(img.address("klp_nr_check_ranges"), len(ranges))

    def _upstream_arm(self, t):
        """Tell the guest's transition work what to check and wake it: the
        functions a task's stack must not hold to switch (the ones it
        leaves, klp_check_stack_func()), as address ranges."""
        m, img = self.machine, self.image
        self._upstream_ranges(t)
        m.set_u64(img.address("klp_work_generation"), m.u64(img.address("klp_work_generation")) + 1)
        m.set_u32(img.address("klp_work_active"), 1)
        worker = next((w for w in self.kernel.tasks if w.name == "kworker/klp"
                       and w.state.value not in ("dead", "unused")), None)
        if worker is not None:
            self.kernel.kick(worker.tid, fake_signal=False)

