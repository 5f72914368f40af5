"""image - the kernel ELF as the lab reads it: segments, symbols (kallsyms), fentry pads, constants."""
from __future__ import annotations

import bisect
import pathlib
import struct
from dataclasses import dataclass
from functools import cached_property

import lief

from .errors import ImageError

lief.logging.disable()

FIRMWARE_DIR = pathlib.Path(__file__).resolve().parent.parent / "firmware"
DEFAULT_IMAGE = FIRMWARE_DIR / "kernel.elf"
PAD_BYTES = bytes.fromhex("0f1f440000")  # nopl 0x0(%rax,%rax,1): what -mnop-mcount writes
PAD_SIZE = len(PAD_BYTES)
_SHN_ABS = 0xFFF1


@dataclass(frozen=True)
class Symbol:
    name: str
    address: int
    size: int
    kind: str  # "func", "object", "abs" or "other"
    local: bool

    def __contains__(self, address):
        return self.address <= address < self.address + max(self.size, 1)


@dataclass(frozen=True)
class Pad:
    """A function's fentry pad, as listed in __mcount_loc."""

    address: int
    function: str


@dataclass(frozen=True)
class Segment:
    address: int
    data: bytes
    memsize: int


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    params: tuple = ()      # WorkloadParam, read from the image


@dataclass(frozen=True)
class WorkloadParam:
    """A numeric NAME=VALUE a workload reads from the kernel command line."""

    name: str
    minimum: int
    maximum: int
    default: int
    description: str


_LOADED = {}


def _text(name):
    """A symbol name as text: lief hands back bytes for names that are not
    UTF-8; shown with escapes, never as a Python bytes literal."""
    return name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else name


class Image:
    """A kernel image built for ftrace.  Open one with Image.load(path)."""

    def __init__(self, path, binary):
        self.path = pathlib.Path(path)
        self._bin = binary
        self.segments = tuple(
            Segment(s.virtual_address, bytes(s.content), s.virtual_size)
            for s in binary.segments
            if s.type == lief.ELF.Segment.TYPE.LOAD
        )
        self.entry = binary.entrypoint
        syms = []
        for s in binary.symtab_symbols:
            if not s.name or s.type in (lief.ELF.Symbol.TYPE.FILE, lief.ELF.Symbol.TYPE.SECTION):
                continue
            if s.shndx == _SHN_ABS:
                kind = "abs"
            elif s.type == lief.ELF.Symbol.TYPE.FUNC:
                kind = "func"
            elif s.type == lief.ELF.Symbol.TYPE.OBJECT:
                kind = "object"
            else:
                kind = "other"
            syms.append(Symbol(_text(s.name), s.value, s.size, kind, s.binding == lief.ELF.Symbol.BINDING.LOCAL))
        self.symbols = tuple(syms)
        self._by_name = {}
        for s in syms:
            # kallsyms_lookup_name() semantics: the first symbol of that name wins
            self._by_name.setdefault(s.name, s)
        funcs = sorted((s for s in syms if s.kind == "func"), key=lambda s: s.address)
        self._funcs = funcs
        self._func_addrs = [s.address for s in funcs]
        self.pads = self._read_pads()
        self._pad_by_func = {p.function: p for p in self.pads}

    @classmethod
    def load(cls, path=None):
        """The image at path (default: firmware/kernel.elf).  An image is
        read-only once loaded, so the same file (same size and mtime) gives
        the same Image: booting a thousand systems parses it once."""
        path = pathlib.Path(path or DEFAULT_IMAGE)
        if not path.is_file():
            raise ImageError(f"{path}: no such file; build it with `make -C firmware` or pass an existing kernel image")
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        image = _LOADED.get(key)
        if image is None:
            image = cls._parse(path)
            _LOADED.clear()          # one image at a time is the common case; keep memory flat
            _LOADED[key] = image
        return image

    @classmethod
    def _parse(cls, path):
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"\x7fELF":
            raise ImageError(f"{path}: not an ELF file; pass the kernel image built in firmware/ (kernel.elf)")
        binary = lief.parse(str(path))
        if binary is None or not isinstance(binary, lief.ELF.Binary):
            raise ImageError(f"{path}: could not be parsed as ELF; rebuild it with `make -C firmware`")
        if binary.header.machine_type != lief.ELF.ARCH.X86_64:
            raise ImageError(f"{path}: is not an x86-64 ELF; the lab runs x86-64 kernels only")
        if binary.header.file_type != lief.ELF.Header.FILE_TYPE.EXEC:
            raise ImageError(f"{path}: is not a linked executable; pass a kernel image, not an object file")
        if binary.get_section("__mcount_loc") is None:
            raise ImageError(
                f"{path}: has no __mcount_loc section, so it has no ftrace pads; "
                "build it with -pg -mfentry -mnop-mcount -mrecord-mcount (see firmware/Makefile)"
            )
        return cls(path, binary)

    def _read_pads(self):
        sec = self._bin.get_section("__mcount_loc")
        data = bytes(sec.content)
        pads = []
        for (addr,) in struct.iter_unpack("<Q", data):
            func = self.function_at(addr)
            if func is None or func.address != addr:
                raise ImageError(f"{self.path}: __mcount_loc lists {addr:#x}, which is not a function entry")
            pads.append(Pad(addr, func.name))
        return tuple(sorted(pads, key=lambda p: p.address))

    # ---- symbols ----
    def lookup(self, name):
        """The symbol called name, or None."""
        return self._by_name.get(name)

    def symbol(self, name):
        """The symbol called name; ImageError naming close matches if absent."""
        sym = self._by_name.get(name)
        if sym is None:
            close = sorted(n for n in self._by_name if name.lower() in n.lower())[:5]
            hint = f"; did you mean {', '.join(close)}?" if close else "; `lab symbols` lists them"
            raise ImageError(f"no symbol {name!r} in {self.path.name}{hint}")
        return sym

    def function(self, name):
        sym = self.symbol(name)
        if sym.kind != "func":
            raise ImageError(f"{name!r} in {self.path.name} is not a function (it is {sym.kind})")
        return sym

    def address(self, name):
        return self.symbol(name).address

    def const(self, name):
        """A constant the firmware exports as an absolute symbol (asm-offsets.c)."""
        sym = self._by_name.get(name)
        if sym is None or sym.kind != "abs":
            raise ImageError(f"{self.path.name} does not export the constant {name}; rebuild it from firmware/")
        return sym.address

    def function_at(self, address):
        """The function whose body holds address, or None."""
        i = bisect.bisect_right(self._func_addrs, address) - 1
        if i >= 0 and address in self._funcs[i]:
            return self._funcs[i]
        return None

    def symbolize(self, address):
        """name+off of the function, else of the data object, holding address; else the number."""
        func = self.function_at(address) or self.object_at(address)
        if func is None:
            return f"{address:#x}"
        off = address - func.address
        return func.name if off == 0 else f"{func.name}+{off:#x}"

    def object_at(self, address):
        """The data object (a variable) holding address, or None."""
        objects = getattr(self, "_objects", None)
        if objects is None:
            objects = self._objects = sorted((s for s in self.symbols if s.kind == "object" and s.size),
                                             key=lambda s: s.address)
            self._object_addrs = [s.address for s in objects]
        import bisect
        i = bisect.bisect_right(self._object_addrs, address) - 1
        if i >= 0 and address < objects[i].address + objects[i].size:
            return objects[i]
        return None

    @property
    def functions(self):
        return tuple(self._funcs)

    def syscall_names(self):
        """{number: name} of the system calls, read from the kernel's own
        sys_call_table: each entry is a __x64_sys_NAME function."""
        names = getattr(self, "_syscall_names", None)
        if names is None:
            names = {}
            table = self._by_name.get("sys_call_table")
            if table is not None and table.size:
                for nr, (address,) in enumerate(struct.iter_unpack("<Q", self.read(table.address, table.size))):
                    f = self.function_at(address) if address else None
                    if f is not None and f.address == address:
                        names[nr] = f.name.removeprefix("__x64_sys_")
            self._syscall_names = names
        return names

    # ---- pads ----
    def pad(self, function):
        """The pad of function, or None if it has none (notrace)."""
        return self._pad_by_func.get(function)

    # ---- contents ----
    def read(self, address, size):
        for seg in self.segments:
            if seg.address <= address and address + size <= seg.address + seg.memsize:
                off = address - seg.address
                chunk = seg.data[off:off + size]
                return chunk + bytes(size - len(chunk))
        raise ImageError(f"{address:#x}..{address + size:#x} is not inside {self.path.name}")

    def cstring(self, address, limit=512):
        data = self.read(address, 1)
        out = bytearray()
        while data != b"\0" and len(out) < limit:
            out += data
            address += 1
            data = self.read(address, 1)
        return out.decode("utf-8", "replace")

    @cached_property
    def source_hash(self):
        """The hash of the sources the image says it was built from (its .note.lab), or None."""
        sec = self._bin.get_section(".note.lab")
        if sec is None:
            return None
        data = bytes(sec.content)
        namesz, descsz, _type = struct.unpack_from("<III", data)
        off = 12 + ((namesz + 3) & ~3)
        return data[off:off + descsz].decode("ascii")

    @cached_property
    def workloads(self):
        base = self.address("workloads")
        count = struct.unpack("<i", self.read(self.address("nr_workloads"), 4))[0]
        size = self.const("WORKLOAD_SIZE")
        out = []
        for i in range(count):
            rec = base + i * size
            name = struct.unpack("<Q", self.read(rec + self.const("WORKLOAD_name"), 8))[0]
            desc = struct.unpack("<Q", self.read(rec + self.const("WORKLOAD_description"), 8))[0]
            params = []
            nr = struct.unpack("<i", self.read(rec + self.const("WORKLOAD_nr_params"), 4))[0]
            table = struct.unpack("<Q", self.read(rec + self.const("WORKLOAD_params"), 8))[0]
            psize = self.const("WORKLOAD_PARAM_SIZE")
            for j in range(nr):
                p = table + j * psize

                def field(fmt, off, p=p):
                    return struct.unpack(fmt, self.read(p + self.const(off), 8))[0]
                params.append(WorkloadParam(self.cstring(field("<Q", "WORKLOAD_PARAM_name")),
                                            field("<q", "WORKLOAD_PARAM_min"), field("<q", "WORKLOAD_PARAM_max"),
                                            field("<q", "WORKLOAD_PARAM_def"),
                                            self.cstring(field("<Q", "WORKLOAD_PARAM_description"))))
            out.append(Workload(self.cstring(name), self.cstring(desc), tuple(params)))
        return tuple(out)

    def check_params(self, workload, params):
        """Refuse a parameter the workload does not read, or a value out of
        its range, naming both; returns the command line words NAME=VALUE."""
        w = self.workload(workload)
        known = {p.name: p for p in w.params}
        words = []
        for name, value in (params or {}).items():
            p = known.get(name)
            if p is None:
                have = ", ".join(sorted(known)) or "none"
                raise ImageError(f"workload {workload!r} has no parameter {name!r}; its parameters: {have}")
            if isinstance(value, bool) or not isinstance(value, int):
                try:
                    value = int(str(value).replace("_", ""), 10)
                except ValueError:
                    raise ImageError(f"{name}={value!r} is not a whole number; give {p.minimum}..{p.maximum}") \
                        from None
            if not p.minimum <= value <= p.maximum:
                raise ImageError(f"{name}={value} is out of range; {workload!r} accepts {name} from "
                                 f"{p.minimum} to {p.maximum} (default {p.default})")
            words.append(f"{name}={value}")
        return words

    def workload(self, name):
        for w in self.workloads:
            if w.name == name:
                return w
        names = ", ".join(w.name for w in self.workloads)
        raise ImageError(f"no workload {name!r} in {self.path.name}; choose one of: {names}")

    @cached_property
    def user_range(self):
        return self.address("__user_start"), self.address("__user_end")

    def in_user(self, address):
        lo, hi = self.user_range
        return lo <= address < hi
