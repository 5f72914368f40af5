"""source - the C (or asm) line an address came from, read from the image's DWARF line table, as gdb's `list` and rr's source view show it."""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from ..image import FIRMWARE_DIR


@dataclass(frozen=True)
class SourceLine:
    """Where an instruction came from: a file of firmware/ and a line of it."""

    path: str          # relative to firmware/ when it is there ("sched.c", "include/kernel.h")
    line: int

    def __str__(self):
        return f"{self.path}:{self.line}"


class SourceMap:
    """Address -> SourceLine for an image, from `.debug_line` (pyelftools), and
    the text of the firmware's sources.  Built once per image; an image
    without DWARF gives None for every address."""

    _cache = {}

    def __init__(self, image):
        self.image = image
        self._starts, self._rows = self._read(image.path)
        self._files = {}

    @classmethod
    def of(cls, image):
        key = (str(image.path), image.source_hash)
        found = cls._cache.get(key)
        if found is None:
            found = cls._cache[key] = cls(image)
        return found

    @staticmethod
    def _read(path):
        try:
            from elftools.elf.elffile import ELFFile
        except ImportError:
            return [], []
        rows = []     # (address, end of sequence or None, path, line)
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if not elf.has_dwarf_info():
                return [], []
            dwarf = elf.get_dwarf_info()
            for cu in dwarf.iter_CUs():
                program = dwarf.line_program_for_CU(cu)
                if program is None:
                    continue
                comp_dir = cu.get_top_DIE().attributes.get("DW_AT_comp_dir")
                # the firmware is built with -fdebug-prefix-map (comp_dir "."): relative to firmware/
                base = FIRMWARE_DIR / (comp_dir.value.decode() if comp_dir else ".")
                names = _file_names(program, base)
                for entry in program.get_entries():
                    st = entry.state
                    if st is None:
                        continue
                    rows.append((st.address, st.end_sequence, names.get(st.file, "?"), st.line))
        rows.sort(key=lambda r: (r[0], not r[1]))      # an end of sequence before a row that starts there
        starts, kept = [], []
        for address, end, name, line in rows:
            if starts and starts[-1] == address:
                kept[-1] = (end, name, line)            # the last row for an address is the one gdb reports
                continue
            starts.append(address)
            kept.append((end, name, line))
        return starts, kept

    def line_of(self, address):
        """The SourceLine of the instruction at address, or None (module code, trampolines, data)."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0:
            return None
        end, name, line = self._rows[i]
        if end or self.image.function_at(address) is None:
            return None
        return SourceLine(name, line)

    def text(self, path):
        """The lines of a firmware source file ([] when it is not there)."""
        lines = self._files.get(path)
        if lines is None:
            file = FIRMWARE_DIR / path
            try:
                lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                lines = []
            self._files[path] = lines
        return lines

    def around(self, where, before, after):
        """(first line number, [lines]) of the source around where (a SourceLine)."""
        lines = self.text(where.path)
        lo = max(1, where.line - before)
        hi = min(len(lines), where.line + after)
        return lo, lines[lo - 1:hi]


def _file_names(program, base):
    """The line program's file table, as paths relative to firmware/ where they are under it."""
    header = program.header
    dirs = [d.decode() if isinstance(d, bytes) else str(d) for d in header.get("include_directory", ())]
    version = header.get("version", 4)
    out = {}
    for i, entry in enumerate(header.get("file_entry", ())):
        name = entry.name.decode() if isinstance(entry.name, bytes) else str(entry.name)
        d = entry.dir_index
        if version >= 5:
            directory = dirs[d] if d < len(dirs) else ""
            index = i
        else:
            directory = dirs[d - 1] if 0 < d <= len(dirs) else ""
            index = i + 1
        full = base / directory / name       # an absolute part replaces what comes before it
        try:
            rel = full.resolve().relative_to(FIRMWARE_DIR.resolve())
            out[index] = str(rel)
        except ValueError:
            out[index] = name
    return out


__all__ = ["SourceMap", "SourceLine"]
