"""livepatch - the kGraft core: patches, universes, transitions."""
from .core import Livepatch
from .patch import LivepatchError, Patch, PatchDescription, PatchFunc, PatchState
from .transition import IRQ, Transition

__all__ = ["Livepatch", "LivepatchError", "Patch", "PatchDescription", "PatchFunc", "PatchState",
           "Transition", "IRQ"]
