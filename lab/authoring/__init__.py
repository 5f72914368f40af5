"""authoring - writing live patches: what gcc did to a function (DWARF, symbols, calls) and patch modules generated from source diffs."""
from .errors import AuthoringError

# The rest is imported when first used: `lab patch build` and the other
# commands that load this package through lab.cli need none of it.
_LAZY = {"analyze": "analysis", "FunctionAnalysis": "analysis", "CompiledKernel": "compiled",
         "clone_kinds": "compiled"}

__all__ = ["AuthoringError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
