"""errors - the lab's exception types: one root, one subclass per part."""


class LabError(Exception):
    """Anything a user can cause: the message names the thing and what to do."""


class ImageError(LabError):
    """The kernel image (or a patch object) cannot be used."""


class MachineError(LabError):
    """The emulator could not be set up or driven."""


class MachineFault(MachineError):
    """The emulated CPU faulted: a bad memory access or an invalid instruction."""

    def __init__(self, kind, rip, address=None):
        self.kind = kind
        self.rip = rip
        self.address = address
        where = f" at {address:#x}" if address is not None else ""
        super().__init__(f"{kind}{where} (rip {rip:#x})")


class GuestFault(MachineError):
    """Raised by a hypercall handler whose arguments no correct kernel path
    passes (code entered in the middle, a corrupted task struct): the machine
    turns it into a fault of the running context, as the CPU would a bad
    access, and the kernel oopses it."""


class KernelError(LabError):
    """The emulated kernel was asked something it cannot do (no such task, ...)."""


class KernelPanic(KernelError):
    """The emulated kernel panicked; the machine cannot go on."""


class UsageError(LabError):
    """A command or API call was given arguments that cannot work."""
