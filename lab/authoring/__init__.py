"""authoring - writing live patches: what gcc did to a function (DWARF, symbols, calls) and patch modules generated from source diffs."""
from .analyze import FunctionAnalysis, analyze
from .compiled import CompiledKernel, clone_kinds
from .errors import AuthoringError

__all__ = ["analyze", "FunctionAnalysis", "CompiledKernel", "clone_kinds", "AuthoringError"]
