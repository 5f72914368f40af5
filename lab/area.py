"""area - first-fit allocation of address ranges in one region of guest memory (module area, trampolines).

Linux allocates module memory with execmem/vmalloc and frees it when the
module goes; the lab does the same in its fixed regions.  Freed ranges are
only handed out again after the caller decided that nothing can still reach
them (the grace period is the caller's business: see Livepatch._reclaim).
Allocation is deterministic: the lowest free range that fits.
"""
from __future__ import annotations

import bisect


class AreaFull(Exception):
    """No free range is large enough."""


class Area:
    """Free ranges of [lo, hi), kept sorted and merged."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi
        self._free = [(lo, hi)]          # sorted, disjoint, never adjacent

    def find(self, size, align=16):
        """The lowest aligned start of a free range of size bytes, without taking it."""
        if size <= 0:
            raise ValueError("an allocation needs at least one byte")
        for start, end in self._free:
            base = (start + align - 1) & ~(align - 1)
            if base + size <= end:
                return base
        raise AreaFull(f"no free {size:#x} bytes in {self.lo:#x}..{self.hi:#x}")

    def take(self, base, size):
        """Mark [base, base+size) used; it must lie inside one free range."""
        i = bisect.bisect_right(self._free, (base, float("inf"))) - 1
        if i < 0:
            raise ValueError(f"{base:#x} is not free")
        start, end = self._free[i]
        if not (start <= base and base + size <= end):
            raise ValueError(f"{base:#x}..{base + size:#x} is not free")
        pieces = [(s, e) for s, e in ((start, base), (base + size, end)) if e > s]
        self._free[i:i + 1] = pieces

    def alloc(self, size, align=16):
        base = self.find(size, align)
        self.take(base, size)
        return base

    def free(self, base, size):
        """Give [base, base+size) back, merging with its neighbours."""
        if size <= 0:
            return
        if base < self.lo or base + size > self.hi:
            raise ValueError(f"{base:#x}..{base + size:#x} is outside {self.lo:#x}..{self.hi:#x}")
        i = bisect.bisect_left(self._free, (base, base))
        if i > 0 and self._free[i - 1][1] > base or i < len(self._free) and self._free[i][0] < base + size:
            raise ValueError(f"{base:#x}..{base + size:#x} is already free")
        start, end = base, base + size
        if i < len(self._free) and self._free[i][0] == end:
            end = self._free.pop(i)[1]
        if i > 0 and self._free[i - 1][1] == start:
            start = self._free.pop(i - 1)[0]
            i -= 1
        self._free.insert(i, (start, end))

    @property
    def used(self):
        return (self.hi - self.lo) - sum(e - s for s, e in self._free)
