"""livepatch - the kGraft core: patches, universes, transitions."""
from .core import Livepatch
from .patch import InitHung, LivepatchError, Patch, PatchDescription, PatchFunc, PatchState
from .transition import IRQ, Transition

__all__ = ["Livepatch", "LivepatchError", "InitHung", "Patch", "PatchDescription", "PatchFunc", "PatchState",
           "Transition", "IRQ"]
