"""system - the hub: one booted kernel with its image, machine and the layers above them."""
from __future__ import annotations

from .image import Image
from .kernel import DEFAULT_QUANTUM, Kernel
from .machine import Machine


class System:
    """A booted lab kernel.  Parts are read-only properties; run() drives it."""

    def __init__(self, image=None, *, workload="default", seed=0, quantum=DEFAULT_QUANTUM, cmdline=""):
        self._image = image if isinstance(image, Image) else Image.load(image)
        self._machine = Machine()
        self._kernel = Kernel(self._image, self._machine, workload=workload, seed=seed,
                              quantum=quantum, cmdline=cmdline)

    image = property(lambda self: self._image)
    machine = property(lambda self: self._machine)
    kernel = property(lambda self: self._kernel)

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

    def task(self, tid_or_name):
        if isinstance(tid_or_name, str):
            return self._kernel.find(tid_or_name)
        return self._kernel.task(tid_or_name)

    def run(self, instructions=None, until=None):
        """Run for instructions, or until until(system) holds (checked between slices)."""
        cond = (lambda _k: until(self)) if until is not None else None
        return self._kernel.run(instructions, cond)

    def send_signal(self, task, sig):
        self._kernel.send_signal(self.task(task).tid, sig)

    def inject_fault(self, task):
        self._kernel.inject_fault(self.task(task).tid)

    def report(self):
        from .report import build_report
        return build_report(self)


def boot(image=None, *, workload="default", seed=0, quantum=DEFAULT_QUANTUM, cmdline=""):
    """Boot the kernel image (default: firmware/kernel.elf) with a workload."""
    return System(image, workload=workload, seed=seed, quantum=quantum, cmdline=cmdline)
