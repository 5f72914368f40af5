"""kGraft lab: a tiny x86-64 kernel built for ftrace, run in Unicorn, live-patched kGraft style."""
from .errors import ImageError, KernelError, KernelPanic, LabError, MachineError, MachineFault, UsageError
from .image import Image
from .system import System, boot

__all__ = ["boot", "System", "Image", "LabError", "ImageError", "MachineError", "MachineFault",
           "KernelError", "KernelPanic", "UsageError"]
