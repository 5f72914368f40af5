"""trace - recording a run (inputs, keyframes, events) and replaying it, verified, to any instruction.

The machine is deterministic, so a trace holds what it takes to recompute
any state, not the states: the run's inputs, keyframes (the registers and the
RAM pages that changed since the previous keyframe), the events, the actions
taken from outside the kernel (signals, fake signals, fault injection, forced
preemptions) and the hypercall answers.  The state at instruction N is the
nearest keyframe at or before N, replayed forward by the same kernel model
with no per-instruction hook.  A keyframe is also taken after every change the
lab makes that the kernel model would not redo (patching, loading and freeing
modules, memory protections), so a replay never has to redo one.

The file (TRACE_SCHEMA 2) is a zip archive of exactly five members, written
to a temporary name and renamed, so a crash never leaves a half file that
looks whole:

  header.json    the run's inputs (image, workload, seed, quantum, cmdline),
                 `end`, `digest` (lab.events: the sha256 of the events), the
                 keyframe records, patches, pads, tasks and modules (names for
                 the viewer; a module with the steps it was loaded and freed
                 at), `members` and `sha256` (below)
  events.jsonl   one event per line (Event.to_dict), `seq` = line number
  actions.json   [[at, name, args], ...]: signal [tid, sig], kick [tid, fake],
                 fault [tid], preempt [at, ...]
  answers.json   [[at, hypercall number, value], ...], strictly by `at`
  keyframes.bin  each keyframe's zlib blob of (u32 page, 4096 bytes) records

A keyframe record is {index, at, seq (actions done before it), events (events
recorded before it), lab (the lab changed the machine since the previous
keyframe), regs, kernel (Kernel.snapshot_state), read_only and guards (the
ranges the CPU may not write, and may not touch), full (every RAM page that
is not zero, not only the changed ones: a seek starts there from zeros),
offset, length (its blob in keyframes.bin)}.  The last keyframe is at `end` and
follows every event and action.

Integrity.  `members` maps every other member to its size, record count and
sha256; `sha256` is the hash of the header's canonical JSON (sorted keys, no
spaces) without that field.  Trace.load refuses, with a TraceError of one line
naming the member, field or step and saying to record the trace again, any
file whose members are missing, extra, duplicated, bigger than the header says
or than a trace of its counts can be (checked before decompressing, and read
through a reader bounded by that size, so a zip bomb costs nothing), whose
hashes or header hash do not match, whose records do not fit the schema (types
and ranges of every field), whose digest is not the digest of its events, or
whose keyframes do not decompress to whole pages.

Replay verifies itself.  A keyframe is used only once it is trusted: keyframe
0 must be the state the header's inputs boot to, and keyframe i the state the
replay from keyframe i-1 reaches at its step (registers, kernel state, RAM,
protections; at a `lab` keyframe the pages it holds and its protections may
differ, and the registers only as an interrupt the lab delivered leaves them).
That replay regenerates the kernel model's events (switches, ticks, forced
preemptions, console lines, signals, new tasks, exits, oopses, panics) and the
observed system call entries and kernel threads' loop rounds; they must equal the
recorded ones.  The events of the layers above the kernel (migrations,
transition starts, patch states, the livepatch's log lines, calls into patched
functions) cannot be regenerated without re-running those layers, so each must
stand where the replayed kernel handed control to the lab (a lab hypercall, a
keyframe, an action, a kernel event), a migration at a safe-point hypercall
must name that task, reason and target universe, and a call must be where the
replayed CPU entered that function in that task.  A seek to step N first
trusts the keyframes up to the one after N, so every answer comes from
verified replay; a divergence is a TraceError naming the step.  The first look
at a step replays the trace up to it once; later ones cost a seek.

Threat model.  This is tamper-evidence, not a signature.  Accidental damage
(a flipped byte, a truncated copy, a member lost or doubled by a tool) is
always refused: the zip CRC does not cover a member rewritten with a fresh
CRC, the member hashes do; the header's own hash covers the manifest.  Whoever
rewrites a member and every hash after it gets past the hashes, but not past
replay: what the kernel model regenerates, and every keyframe, must agree with
the replay from the boot on.  What remains open to such a forger: the lab's own
changes recorded in a `lab` keyframe (they are inputs, like the actions), the
labels of the upper layers' events (why a task migrated, a patch state's
detail text, a log line's text, a call's old/new version, the functions a
transition names), the names of tasks, patches and modules in the header, and,
in a recording started after power-on, the first keyframe and the events
before it.
"""
from __future__ import annotations

import bisect
import ctypes
import dataclasses
import hashlib
import io
import json
import math
import mmap
import os
import pathlib
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass

from . import events as ev
from .errors import GuestFault, KernelPanic, LabError
from .image import PAD_SIZE, Image
from .kernel import Kernel, TaskState
from .machine import GPRS, RAM_BASE, RAM_END, Machine, TouchedPages, libc_memcmp

TRACE_SCHEMA = 2
PAGE = 4096
DEFAULT_KEYFRAME_EVERY = 1_000_000
_FULL_EVERY = 16           # every 16th keyframe holds all of RAM, so a seek applies few deltas

MEMBERS = ("header.json", "events.jsonl", "actions.json", "answers.json", "keyframes.bin")
ADVICE = "it was damaged or edited after recording; record it again (`lab run --trace FILE`)"

# What a trace may hold.  A member is refused before it is decompressed when
# it declares more bytes than its record count allows, and the counts have
# ceilings; a keyframe blob never decompresses to more than all of RAM.
NPAGES = (RAM_END - RAM_BASE) // PAGE
_RECORD = 4 + PAGE
_PAGE_NUMBER = struct.Struct("<I")
_FRAME_MAX = NPAGES * _RECORD                            # a keyframe blob, decompressed
_BLOB_MAX = _FRAME_MAX + _FRAME_MAX // 1000 + 64 * 1024  # and compressed (zlib's worst case, with room)
MAX_HEADER_BYTES = 64 << 20
MAX_KEYFRAMES = 100_000
MAX_EVENTS = 20_000_000
MAX_ACTIONS = 1_000_000
MAX_ANSWERS = 20_000_000
MAX_EVENT_LINE = 64 << 10          # an oops with its registers and code lines is far below
MAX_ACTION_BYTES = 64 << 10        # a forced preemption lists its steps
MAX_ANSWER_BYTES = 96
MAX_STRING = 64 << 10
MAX_TID = 1 << 31
U64 = (1 << 64) - 1
_ZIP_ENTRIES_MAX = 64              # read from the end record, before the zip layer lists the entries


def _address(buf):
    """Where a bytes object, a ctypes array or a writable buffer keeps its bytes."""
    if isinstance(buf, bytes):
        return ctypes.cast(ctypes.c_char_p(buf), ctypes.c_void_p).value
    if isinstance(buf, ctypes.Array):
        return ctypes.addressof(buf)
    view = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(view)
    finally:
        del view                    # no export left behind: the buffer can still be released


def _zeroed(size):
    """size zero bytes (a ctypes array) whose pages stay the kernel's shared
    zero page until written: reading them costs one cached page, not size."""
    return (ctypes.c_ubyte * size).from_buffer(mmap.mmap(-1, size))


def _changed_pages(ram, prev, n=None, runs=None):
    """The indices of the PAGE-sized pages where ram and prev differ,
    ascending: memcmp over large blocks first, then over the pages of the
    blocks that differ (most of RAM is the same from one keyframe to the
    next).  The same pages in the same order as comparing page by page.
    ram and prev: bytes, ctypes arrays or addresses (then n is the length);
    runs: [(first page, end page)], ascending, to compare only those."""
    memcmp = libc_memcmp()
    a = ram if isinstance(ram, int) else _address(ram)
    b = prev if isinstance(prev, int) else _address(prev)
    n = len(ram) if n is None else n
    todo = []
    for first, end in runs if runs is not None else [(0, -(-n // PAGE))]:
        lo, hi = first * PAGE, min(end * PAGE, n)
        todo += [(x, min(x + (1 << 18), hi)) for x in range(lo, hi, 1 << 18)]
    for step in (1 << 14, PAGE):
        found = []
        for lo, hi in todo:
            if memcmp(a + lo, b + lo, hi - lo):
                found += [(p, min(p + step, hi)) for p in range(lo, hi, step)]
        todo = found
    return [lo // PAGE for lo, hi in todo if memcmp(a + lo, b + lo, hi - lo)]


# the pages of the machine's RAM the host has backed (lab/machine.py)
_TouchedPages = TouchedPages


class TraceError(LabError):
    """A trace file cannot be read, does not fit the image, or disagrees with its own replay."""


def _damaged(path, problem):
    return TraceError(f"{path}: {problem}; {ADVICE}")


@dataclass(frozen=True)
class Keyframe:
    index: int
    at: int
    seq: int               # actions recorded before it: later actions are redone on replay
    events: int            # events recorded before it
    lab: bool              # the lab changed the machine since the previous keyframe
    regs: dict
    kernel: dict
    read_only: list        # [start, end) ranges the CPU may read and run but not write
    guards: list           # [start, end) ranges the CPU may not touch at all
    full: bool
    offset: int            # into keyframes.bin
    length: int


# Where kernel threads finish a round of their loops: the checker's unit
# boundaries for kernel threads.  Not their safe points: a unit bounded by the
# safe point itself could never show a misplaced one.
KTHREAD_LOOP_TOPS = ("kthread_iteration_done",)


def _watch_units(kernel, image):
    """Add system call entries and kernel threads finishing a round of their
    loops to kernel.log: the Observer's events, and the verifier's when it
    regenerates them."""
    m = kernel.machine

    post = ev.poster(ev.KthreadLoop)

    def on_loop(where):
        def hook(_address):
            if not kernel.in_interrupt:
                post(kernel.log, m.clock, kernel.current, where)
        return hook

    kernel.log_syscalls()
    for name in KTHREAD_LOOP_TOPS:
        sym = image.lookup(name)
        if sym is not None:
            # function entries, always reached by a call: a block hook sees them
            m.add_entry_hook(sym.address, on_loop(name))


class Observer:
    """Adds the events the checker and the viewer need: system call entries,
    entries into the old and new versions of every function a transition
    switches, and kernel threads finishing a round of their loops.  A Python
    call for each of those, never one per instruction."""

    def __init__(self, system):
        self.system = system
        self._watched = set()
        system.livepatch.on_transition = self._watch_transition
        _watch_units(system.kernel, system.image)

    def _watch_transition(self, transition, funcs=None):
        """Record every entry into the old and new versions of the functions a
        transition switches (the old body begins right after the pad), and,
        as entered at this instant, the ones already on a task's stack: a task
        inside an old function when the switch happens is running old code.
        funcs: only these (a module's, joining the transition), not all."""
        ft, k = self.system.ftrace, self.system.kernel
        funcs = transition.funcs if funcs is None else funcs
        leaving = {}
        for pad, (old, new) in funcs.items():
            version, target = ("old", old) if transition.target == 1 else ("new", new)
            # the original body begins after the pad: a task stopped on the
            # pad itself has not entered it, and runs the pad's new target
            start = pad + PAD_SIZE if target is None else target
            sym = self.system.image.function_at(pad) if target is None else None
            size = sym.size - PAD_SIZE if sym else 1
            if target is not None:
                mod = self.system.modules.module_at(target)
                f = mod.function_at(target) if mod else None
                size = f.size if f else 1
            leaving[(start, start + max(size, 1))] = (ft.symbolize(pad), version)
        now = self.system.machine.clock
        for task in k.tasks:
            frames, _ = task.unwind()
            for (lo, hi), (name, version) in leaving.items():
                if any(lo <= a < hi for a in frames):
                    k.log.add(ev.FuncEntry, now, tid=task.tid, in_irq=False, function=name, version=version,
                              patch=transition.patch.name)
        for pad, (old, new) in funcs.items():
            name = ft.symbolize(pad)
            for address, version in ((pad + 5 if old is None else old, "old"),
                                     (pad + 5 if new is None else new, "new")):
                if (address, version) in self._watched:
                    continue
                self._watched.add((address, version))
                self.system.machine.add_code_hook(address, self._on_entry(name, version, transition.patch.name))

    def _on_entry(self, function, version, patch):
        """The code hook of one version's entry: a FuncEntry event each time it runs."""
        k, m = self.system.kernel, self.system.machine
        post = ev.poster(ev.FuncEntry)

        def hook(_address):
            post(k.log, m.clock, k.current, k.in_interrupt, function, version, patch)
        return hook


def _protections(machine):
    """(read-only ranges, guard ranges) of the machine: tuples the machine
    replaces when they change, so comparing them after every slice is cheap."""
    return getattr(machine, "read_only_ranges", ()), getattr(machine, "guard_pages", ())


def _set_protections(machine, read_only, guards):
    """Give the machine exactly these protections, every other page ordinary
    memory, changing only the pages that differ."""
    def kinds(ro, none):
        out = {}
        for ranges, kind in ((ro, "ro"), (none, "none")):
            for lo, hi in ranges:
                out.update(dict.fromkeys(range(lo, hi, PAGE), kind))
        return out
    have = kinds(getattr(machine, "read_only_ranges", ()), getattr(machine, "guard_pages", ()))
    want = kinds(read_only, guards)
    runs = []
    for page in sorted(p for p in have.keys() | want.keys() if have.get(p) != want.get(p)):
        kind = want.get(page, "rw")
        if runs and runs[-1][0] == kind and runs[-1][2] == page:
            runs[-1][2] = page + PAGE
        else:
            runs.append([kind, page, page + PAGE])
    for kind, lo, hi in runs:
        {"rw": machine.writable, "ro": machine.read_only, "none": machine.guard}[kind](lo, hi - lo)


class Recorder:
    """Records a system's run; save() writes the trace."""

    def __init__(self, system, keyframe_every=DEFAULT_KEYFRAME_EVERY):
        self.system = system
        self.every = keyframe_every
        k, m = system.kernel, system.machine
        m.answer_log = []
        k.action_log = []
        k.slice_hooks.append(self._after_slice)
        self._blobs = io.BytesIO()
        self.keyframes = []
        # RAM as the last keyframe left it, kept up to date page by page (no
        # copy of all of RAM per keyframe), and all-zero RAM, what a full
        # keyframe is taken against
        self._prev_ram = _zeroed(RAM_END - RAM_BASE)
        self._zero_ram = _zeroed(RAM_END - RAM_BASE)
        self._prev_pages = set()   # the pages of _prev_ram ever written
        self._touched = None       # _TouchedPages of the machine's RAM, made at the first keyframe
        self._seen = None          # (lab writes, protections) at the last keyframe
        self._modules = {}         # id(module) -> its header record, in load order
        system.observer = Observer(system)
        self.keyframe()

    # ---- keyframes ----
    def _lab_changes(self):
        m = self.system.machine
        return m.lab_writes, _protections(m)

    def _after_slice(self):
        m = self.system.machine
        seen = self._seen
        if m.retired - self.keyframes[-1].at >= self.every:
            self.keyframe()
        elif m.lab_writes != seen[0] or getattr(m, "read_only_ranges", ()) is not seen[1][0] \
                or getattr(m, "guard_pages", ()) is not seen[1][1]:
            # the protections are tuples the machine replaces when they change:
            # the same object is the same protections (else compare them)
            if self._lab_changes() != seen:
                self.keyframe()

    def before_run(self):
        if self._lab_changes() != self._seen:
            self.keyframe()

    def keyframe(self):
        sysm = self.system
        m, k = sysm.machine, sysm.kernel
        seen = self._lab_changes()
        last = self.keyframes[-1] if self.keyframes else None
        if last is not None and last.at == m.clock and seen == self._seen \
                and last.events == len(k.log.events) and last.seq == len(k.action_log):
            return
        self._track_modules(m.clock)
        ram, prev = m.ram, self._prev_ram
        here, there, size = _address(ram), ctypes.addressof(prev), len(prev)
        index = len(self.keyframes)
        full = index % _FULL_EVERY == 0
        if self._touched is None:
            # the image's first page was written when it was loaded: the
            # pagemap must say so, or it is not to be believed
            segments = [seg for seg in sysm.image.segments if seg.data and RAM_BASE <= seg.address < RAM_END]
            known = (segments[0].address - RAM_BASE) // PAGE if segments else None
            self._touched = _TouchedPages(here, size, known)
        # pages the host never backed are zero: compare only the others, and
        # the ones an earlier keyframe saw written that are no longer backed
        runs, touched = self._touched.read()
        zero = ctypes.addressof(self._zero_ram)
        changed = _changed_pages(here, there, size, runs)
        gone = sorted(p for p in self._prev_pages if not touched[p] and _changed_pages(there + p * PAGE, zero, PAGE))
        if gone:
            changed = sorted(set(changed) | set(gone))
        # a full keyframe holds every page that is not zero (a seek starts
        # from zeros there), a delta every page changed since the one before
        pages = _changed_pages(here, zero, size, runs) if full else changed
        out = bytearray()
        for page in pages:
            a = page * PAGE
            out += _PAGE_NUMBER.pack(page)
            out += ram[a:a + PAGE]
        data = zlib.compress(out, 1)
        for page in changed:
            ctypes.memmove(there + page * PAGE, here + page * PAGE, PAGE)
        self._prev_pages.update(changed)
        offset = self._blobs.tell()
        self._blobs.write(data)
        lab = m.lab_writes > 0 if self._seen is None else seen != self._seen
        read_only, guards = ([list(r) for r in ranges] for ranges in seen[1])
        self.keyframes.append(Keyframe(index, m.clock, len(k.action_log), len(k.log.events), lab, m.regs(),
                                       k.snapshot_state(), read_only, guards, full, offset, len(data)))
        self._seen = seen

    def _track_modules(self, at):
        """Note the modules loaded and freed since the last keyframe (both
        are lab changes, so a keyframe follows each at its step)."""
        live = {id(mod): mod for mod in self.system.modules.modules}
        for key, rec in self._modules.items():
            if rec["freed_at"] is None and key not in live:
                rec["freed_at"] = at
        for key, mod in live.items():
            if key not in self._modules:
                self._modules[key] = {
                    "name": mod.name, "base": mod.base, "size": mod.size,
                    "functions": sorted([sym.name, sym.address, sym.size] for sym in mod.symbols.values()
                                        if sym.kind == "func"),
                    "loaded_at": at, "freed_at": None}

    # ---- writing ----
    def header(self):
        s = self.system
        k = s.kernel
        self._track_modules(s.clock)
        return {
            "schema": TRACE_SCHEMA,
            "image": s.image.path.name,
            "image_hash": s.image.source_hash,
            "workload": k.workload, "seed": k.seed, "quantum": k.quantum, "cmdline": k.cmdline,
            "signal_after": s.livepatch.signal_after,
            "boot_patches": list(s.boot_patches),
            "end": s.clock,
            "ram": [RAM_BASE, RAM_END],
            "keyframes": [dataclasses.asdict(f) for f in self.keyframes],
            "digest": s.digest,
            "patches": [{"name": p.name, "module": str(p.module.path), "state": p.state.value,
                         "functions": [[f.old_name, f.old_addr, f.new_name, f.new_addr]
                                       for f in p.description.functions] if p.description else []}
                        for p in s.livepatch.patches],
            "pads": sorted({a for p in s.livepatch.patches if p.description
                            for a in (f.old_addr for f in p.description.functions)}),
            "tasks": [{"tid": t.tid, "name": t.name, "kind": t.kind} for t in s.tasks],
            "modules": [dict(rec) for rec in self._modules.values()],
        }

    def save(self, path):
        """Write the trace atomically (temporary file, then rename)."""
        self.keyframe()
        s = self.system
        # one line at a time into one buffer: a list of every line first
        # would double the memory a long run's save takes
        events = bytearray()
        for e in s.events:
            if events:
                events += b"\n"
            events += json.dumps(e.to_dict(), separators=(",", ":")).encode()
        members = {
            "events.jsonl": events,
            "actions.json": json.dumps(s.kernel.action_log).encode(),
            "answers.json": json.dumps(s.machine.answer_log).encode(),
            "keyframes.bin": self._blobs.getvalue(),
        }
        return write_trace(path, self.header(), members)


# ---- the file ----

def _canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def header_hash(header):
    """The sha256 a header carries: of its canonical JSON without the `sha256` field."""
    return hashlib.sha256(_canonical({k: v for k, v in header.items() if k != "sha256"})).hexdigest()


def _records(name, data):
    if name == "events.jsonl":
        return data.count(b"\n") + 1 if data else 0
    if name == "keyframes.bin":
        return None
    return len(json.loads(data))


def seal(header, members):
    """The header with `members` (size, record count and sha256 of each
    member) and its own `sha256` set for these members' bytes."""
    header = dict(header)
    header["members"] = {name: {"size": len(data), "records": _records(name, data),
                                "sha256": hashlib.sha256(data).hexdigest()}
                         for name, data in members.items()}
    header["sha256"] = header_hash(header)
    return header


def write_trace(path, header, members):
    """Write a trace file atomically: header.json sealed over the other
    members, and them, to a temporary name first."""
    path = pathlib.Path(path)
    header = seal(header, members)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent or ".")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            z.writestr("header.json", _canonical(header))
            for name in MEMBERS[1:]:
                kind = zipfile.ZIP_STORED if name == "keyframes.bin" else zipfile.ZIP_DEFLATED
                z.writestr(name, members[name], compress_type=kind)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _member_limit(name, records, nkeyframes):
    """The most bytes a member with this many records can take."""
    if name == "events.jsonl":
        return records * (MAX_EVENT_LINE + 1)
    if name == "actions.json":
        return 2 + records * MAX_ACTION_BYTES
    if name == "answers.json":
        return 2 + records * MAX_ANSWER_BYTES
    return nkeyframes * _BLOB_MAX


def _zip_entries(path, size):
    """How many entries the zip's end record declares (None: no end record)."""
    with open(path, "rb") as f:
        n = min(size, 22 + 0xFFFF)
        f.seek(size - n)
        tail = f.read(n)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) - i < 22:
        return None
    return struct.unpack_from("<H", tail, i + 10)[0]


def _read_member(path, z, info, limit):
    """A member's bytes, refused before decompressing when it declares more
    than limit, and read through a reader that stops there whatever the
    compressed stream holds."""
    name = info.filename
    if info.flag_bits & 0x1:
        raise _damaged(path, f"{name} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _damaged(path, f"{name} uses compression method {info.compress_type}, not stored or deflated")
    if info.file_size > limit:
        raise _damaged(path, f"{name} declares {info.file_size:,} bytes, more than the {limit:,} it can hold")
    try:
        with z.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise _damaged(path, f"{name} cannot be decompressed ({_one_line(exc)})") from None
    if len(data) != info.file_size:
        raise _damaged(path, f"{name} holds {len(data):,} bytes, not the {info.file_size:,} its zip entry says")
    return data


def _read_trace(path):
    """(header, {member: bytes}) after the file-level checks: the zip's
    shape, each member's size and hash, the header's own hash, its schema."""
    if not path.exists():
        raise TraceError(f"{path}: no such trace; record one with `lab run --trace {path}`")
    if path.is_dir():
        raise TraceError(f"{path}: is a directory, not a trace file; give the file `lab run --trace` wrote")
    if not path.is_file():
        raise TraceError(f"{path}: is not a regular file; give the file `lab run --trace` wrote")
    try:
        size = path.stat().st_size
        if size == 0:
            raise _damaged(path, "the file is empty")
        entries = _zip_entries(path, size)
        if entries is None:
            raise _damaged(path, "not a zip archive (a trace is one), or its end is cut off")
        if entries > _ZIP_ENTRIES_MAX:
            raise _damaged(path, f"the archive lists {entries:,} members; a trace has {len(MEMBERS)}")
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, struct.error) as exc:
        raise _damaged(path, f"not a readable zip archive ({_one_line(exc)})") from None
    with z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        for name in names:
            if names.count(name) > 1:
                raise _damaged(path, f"member {name} appears {names.count(name)} times")
            if name not in MEMBERS:
                raise _damaged(path, f"unknown member {name!r} (a trace holds {', '.join(MEMBERS)})")
        missing = [n for n in MEMBERS if n not in names]
        if missing:
            raise _damaged(path, f"member {missing[0]} is missing")
        by_name = {i.filename: i for i in infos}
        header = _parse_json(path, "header.json", _read_member(path, z, by_name["header.json"], MAX_HEADER_BYTES))
        if not isinstance(header, dict):
            raise _damaged(path, "header.json is not a JSON object")
        schema = header.get("schema")
        if schema != TRACE_SCHEMA:
            if type(schema) is int and 0 < schema < TRACE_SCHEMA:
                raise TraceError(f"{path}: trace schema {schema} is older than this lab's ({TRACE_SCHEMA}) and "
                                 "carries no member hashes; record it again (`lab run --trace FILE`)")
            raise TraceError(f"{path}: trace schema {_show(schema)} is not {TRACE_SCHEMA}; "
                             "record it again with this version of the lab (`lab run --trace FILE`)")
        if header.get("sha256") != header_hash(header):
            raise _damaged(path, "header.json does not match its own sha256 (the header was changed)")
        manifest = header.get("members")
        _check(path, "header.json", "members", manifest, _MANIFEST)
        frames = header.get("keyframes")
        nkeyframes = len(frames) if isinstance(frames, list) else 0
        members = {}
        for name in MEMBERS[1:]:
            entry = manifest[name]
            limit = _member_limit(name, entry["records"] or 0, nkeyframes)
            if entry["size"] > limit:
                raise _damaged(path, f"header.json: members.{name}.size {entry['size']:,} is more than the "
                                     f"{limit:,} bytes its records can take")
            if by_name[name].file_size != entry["size"]:
                raise _damaged(path, f"{name} is {by_name[name].file_size:,} bytes in the archive, "
                                     f"the header says {entry['size']:,}")
            data = _read_member(path, z, by_name[name], entry["size"])
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise _damaged(path, f"{name} does not match its sha256 in the header")
            members[name] = data
    return header, members


def _parse_json(path, member, data):
    try:
        return json.loads(data, object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                          parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise _damaged(path, f"{member} is not valid JSON ({_one_line(exc)})") from None


def _unique_keys(pairs):
    d = dict(pairs)
    if len(d) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return d


def _no_constant(name):
    raise ValueError(f"{name} is not a number a trace holds")


def _finite_float(text):
    """A float as a trace writes it: 1e999 parses as infinity, which no
    trace holds (its header hash is taken with allow_nan=False)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a number a trace holds")
    return value


def _one_line(exc):
    text = str(exc).replace("\n", " ").replace("\r", " ")
    return text if len(text) <= 120 else text[:117] + "..."


def _show(v):
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


# ---- the schema: every field's type and range ----

class _Bad(Exception):
    """A value that does not fit the schema, at a path inside a member."""

    def __init__(self, where, what):
        super().__init__(where, what)
        self.where, self.what = where, what


def _check(path, member, where, value, spec):
    try:
        spec(value, where)
    except _Bad as bad:
        raise _damaged(path, f"{member}: {bad.where} {bad.what}") from None


def _int(lo=-(1 << 63), hi=U64):
    def check(v, where):
        if type(v) is not int or not lo <= v <= hi:
            raise _Bad(where, f"is {_show(v)}, not an integer in {lo:,}..{hi:,}")
    return check


def _bool(v, where):
    if type(v) is not bool:
        raise _Bad(where, f"is {_show(v)}, not true or false")


def _str(limit=MAX_STRING, choices=None):
    def check(v, where):
        if type(v) is not str or len(v) > limit:
            raise _Bad(where, f"is {_show(v)}, not a string of at most {limit:,} characters")
        if choices is not None and v not in choices:
            raise _Bad(where, f"is {_show(v)}, not one of {', '.join(sorted(choices))}")
    return check


def _hex64(v, where):
    if type(v) is not str or len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise _Bad(where, f"is {_show(v)}, not a sha256 in hex")


def _none_or(spec):
    def check(v, where):
        if v is not None:
            spec(v, where)
    return check


def _float_or_none(v, where):
    if v is not None and (type(v) is not float or not math.isfinite(v)):
        raise _Bad(where, f"is {_show(v)}, not a number or null")


def _list(item, min_len=0, max_len=1 << 24):
    def check(v, where):
        if type(v) is not list or not min_len <= len(v) <= max_len:
            raise _Bad(where, f"is {_show(v)}, not a list of {min_len:,}..{max_len:,} items")
        for i, x in enumerate(v):
            item(x, f"{where}[{i}]")
    return check


def _tuple(*items):
    def check(v, where):
        if type(v) is not list or len(v) != len(items):
            raise _Bad(where, f"is {_show(v)}, not a list of {len(items)} items")
        for i, (x, spec) in enumerate(zip(v, items)):
            spec(x, f"{where}[{i}]")
    return check


def _dict(fields):
    """An object with exactly these keys (fields: key -> spec)."""
    def check(v, where):
        if type(v) is not dict:
            raise _Bad(where, f"is {_show(v)}, not an object")
        for key, spec in fields.items():
            inner = f"{where}.{key}" if where else key
            if key not in v:
                raise _Bad(inner, "is missing")
            spec(v[key], inner)
        for key in v:
            if key not in fields:
                raise _Bad(f"{where}.{key}" if where else key, "is not a field of this record")
    return check


def _json_value(depth=4):
    """A JSON scalar, or a list of them nested at most depth deep."""
    def check(v, where):
        if v is None or type(v) is bool:
            return
        if type(v) is str:
            _str()(v, where)
        elif type(v) is int:
            _int()(v, where)
        elif type(v) is float:
            _float_or_none(v, where)
        elif type(v) is list and depth > 0:
            for i, x in enumerate(v):
                _json_value(depth - 1)(x, f"{where}[{i}]")
        else:
            raise _Bad(where, f"is {_show(v)}, not a value this record holds")
    return check


_MANIFEST = _dict({name: _dict({"size": _int(0, 1 << 40), "records": _none_or(_int(0, MAX_EVENTS)),
                                "sha256": _hex64}) for name in MEMBERS[1:]})
_TID = _int(-1, MAX_TID)
_STEP = _int(0, 1 << 62)


def _rng(v, where):
    _tuple(_int(3, 3), _list(_int(0, 0xFFFFFFFF), 625, 625), _float_or_none)(v, where)
    if v[1][-1] > 624:
        raise _Bad(f"{where}[1][624]", f"is {v[1][-1]}, not a position in the state (0..624)")


# Kernel.snapshot_state() fields the lab knows the shape of; a snapshot holds
# others too, and any is compared with the replay's like the rest.
_KERNEL_FIELDS = {
    "current": _int(0, MAX_TID),
    "booted": _bool,
    "panicked": _none_or(_str()),
    "oopsed": _list(_int(0, MAX_TID), 0, 1 << 16),
    "oops_count": _int(0, 1 << 31),
    "next_tick": _none_or(_STEP),
    "stall": _int(0, 1 << 31),
    "forced": _list(_STEP, 0, 1 << 16),
    "pending_signals": _list(_tuple(_int(0, MAX_TID), _int(0, 1 << 16), _bool), 0, 1 << 16),
    "rng": _rng,
}


def _kernel_state(v, where):
    if type(v) is not dict or not v:
        raise _Bad(where, f"is {_show(v)}, not an object")
    for key, value in v.items():
        _KERNEL_FIELDS.get(key, _json_value())(value, f"{where}.{key}")


def _range(v, where):
    _tuple(_int(RAM_BASE, RAM_END), _int(RAM_BASE, RAM_END))(v, where)
    if v[0] >= v[1] or v[0] % PAGE or v[1] % PAGE:
        raise _Bad(where, f"is {_show(v)}, not a page-aligned range inside RAM")


_KEYFRAME = _dict({
    "index": _int(0, MAX_KEYFRAMES), "at": _STEP, "seq": _int(0, MAX_ACTIONS), "events": _int(0, MAX_EVENTS),
    "lab": _bool, "regs": _dict({name: _int(0, U64) for name in GPRS}), "kernel": _kernel_state,
    "read_only": _list(_range, 0, 1 << 16), "guards": _list(_range, 0, 1 << 16), "full": _bool, "offset": _int(0, 1 << 40), "length": _int(1, _BLOB_MAX),
})

_HEADER = _dict({
    "schema": _int(TRACE_SCHEMA, TRACE_SCHEMA),
    "sha256": _hex64,
    "members": _MANIFEST,
    "image": _str(4096), "image_hash": _str(256),
    "workload": _str(256), "seed": _int(), "quantum": _int(1, 1 << 40), "cmdline": _str(255),
    "signal_after": _none_or(_STEP),
    "boot_patches": _list(_str(4096), 0, 64),
    "end": _STEP,
    "ram": _tuple(_int(RAM_BASE, RAM_BASE), _int(RAM_END, RAM_END)),
    "keyframes": _list(_KEYFRAME, 1, MAX_KEYFRAMES),
    "digest": _hex64,
    "patches": _list(_dict({"name": _str(256), "module": _str(4096), "state": _str(64),
                            "functions": _list(_tuple(_str(256), _int(0, U64), _str(256), _int(0, U64)), 0, 4096)}),
                     0, 4096),
    "pads": _list(_int(0, U64), 0, 1 << 16),
    "tasks": _list(_dict({"tid": _int(0, MAX_TID), "name": _str(64), "kind": _str(16, {"user", "kthread"})}),
                   0, 1 << 16),
    "modules": _list(_dict({"name": _str(256), "base": _int(0, U64), "size": _int(0, 1 << 40),
                            "functions": _list(_tuple(_str(256), _int(0, U64), _int(0, 1 << 40)), 0, 1 << 16),
                            "loaded_at": _STEP, "freed_at": _none_or(_STEP)}), 0, 4096),
})

# The actions the kernel redoes, by name; another name's arguments are
# scalars (the kernel ignores an action it does not know, and the replay's
# disagreement with the events then tells).
_ACTIONS = {"signal": _tuple(_TID, _int(0, 1 << 16)), "kick": _tuple(_TID, _bool), "fault": _tuple(_TID),
            "preempt": _list(_STEP, 1, 4096)}


def _action(v, where):
    if type(v) is not list or len(v) != 3:
        raise _Bad(where, f"is {_show(v)}, not [at, name, args]")
    _STEP(v[0], f"{where}[0]")
    _str(64)(v[1], f"{where}[1]")
    _ACTIONS.get(v[1], _list(_json_value(0), 0, 4096))(v[2], f"{where}[2]")


_answer = _tuple(_STEP, _int(0, 0xFFFFFFFF), _int(0, U64))


def _field_spec(name, annotation):
    """The schema of one event field, from its name and its annotation."""
    if name in ("seq", "at"):
        return _STEP
    if name == "tid":
        return _TID
    if name in ("prev", "next"):
        return _int(0, MAX_TID)
    if name in ("universe", "target"):
        return _int(0, 1)
    a = annotation.replace(" ", "")
    if a == "tuple" and name == "regs":
        return _list(_tuple(_str(16), _int(0, U64)), 0, 64)
    if a == "tuple" and name == "code":
        return _list(_str(1024), 0, 64)
    if a == "int":
        return _int()
    if a == "bool":
        return _bool
    if a == "str":
        return _str()
    if a in ("int|None", "Optional[int]"):
        return _none_or(_int())
    return _json_value(2)


_EVENT_SPECS = {}


def _event_spec(kind):
    spec = _EVENT_SPECS.get(kind)
    if spec is None:
        fields = {"kind": _str(32)}
        for f in dataclasses.fields(ev.EVENT_TYPES[kind]):
            annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            fields[f.name] = _field_spec(f.name, annotation)
        spec = _EVENT_SPECS[kind] = _dict(fields)
    return spec


def _parse_events(path, data, count):
    if count == 0:
        if data:
            raise _damaged(path, "events.jsonl holds data but the header says it has no events")
        return []
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise _damaged(path, f"events.jsonl is not UTF-8 text ({_one_line(exc)})") from None
    if len(lines) != count:
        raise _damaged(path, f"events.jsonl holds {len(lines):,} events, the header says {count:,}")
    out = []
    previous_at = 0
    for i, line in enumerate(lines):
        where = f"events.jsonl line {i + 1}"
        if len(line) > MAX_EVENT_LINE:
            raise _damaged(path, f"{where} is longer than an event can be")
        d = _parse_json(path, where, line)
        kind = d.get("kind") if type(d) is dict else None
        if type(kind) is not str or kind not in ev.EVENT_TYPES:
            raise _damaged(path, f"{where}: kind {_show(kind)} is not an event kind")
        _check(path, f"{where} ({kind})", "", d, _event_spec(kind))
        if d["seq"] != i:
            raise _damaged(path, f"{where}: seq is {d['seq']}, not {i}")
        if d["at"] < previous_at:
            raise _damaged(path, f"{where}: at {d['at']:,} is before the previous event's {previous_at:,}")
        previous_at = d["at"]
        try:
            out.append(ev.from_dict(d))
        except (TypeError, ValueError) as exc:
            raise _damaged(path, f"{where}: {_one_line(exc)}") from None
    return out


def _parse_list(path, member, data, item, count):
    value = _parse_json(path, member, data)
    _check(path, member, "the list", value, _list(item, 0, MAX_ANSWERS))
    if len(value) != count:
        raise _damaged(path, f"{member} holds {len(value):,} records, the header says {count:,}")
    return value


def _frame_pages(path, frame, blob):
    """(pages, data) of a keyframe blob, decompressed at most to the size of
    all of RAM and checked: whole records, pages in order.  A full keyframe
    leaves out the pages that are zero, so it may hold any number of pages
    (a trace recorded before that holds all of them, and reads the same)."""
    where = f"keyframes.bin: keyframe {frame.index} (step {frame.at:,})"
    d = zlib.decompressobj()
    try:
        data = d.decompress(blob, _FRAME_MAX + 1)
    except zlib.error as exc:
        raise _damaged(path, f"{where} does not decompress ({_one_line(exc)})") from None
    if len(data) > _FRAME_MAX or d.unconsumed_tail or not d.eof or d.unused_data:
        raise _damaged(path, f"{where} is not one zlib stream of at most all of RAM")
    if len(data) % _RECORD:
        raise _damaged(path, f"{where} does not hold whole page records")
    pages = [struct.unpack_from("<I", data, i)[0] for i in range(0, len(data), _RECORD)]
    if any(p >= NPAGES for p in pages) or any(b <= a for a, b in zip(pages, pages[1:])):
        raise _damaged(path, f"{where} holds a page outside RAM or out of order")
    return pages, data


def _check_consistency(path, header, events, actions, answers, blobs_size):
    """What the header, the events, the actions and the answers say twice must agree."""
    end = header["end"]
    frames = header["keyframes"]
    if not frames[0]["full"]:
        raise _damaged(path, "header.json: keyframes[0] is not a full keyframe")
    offset = 0
    for i, f in enumerate(frames):
        where = f"header.json: keyframes[{i}]"
        if f["index"] != i:
            raise _damaged(path, f"{where}.index is {f['index']}, not {i}")
        if f["offset"] != offset:
            raise _damaged(path, f"{where}.offset is {f['offset']:,}, not {offset:,} (where the blob before ends)")
        offset += f["length"]
        if i and (f["at"] < frames[i - 1]["at"] or f["seq"] < frames[i - 1]["seq"]
                  or f["events"] < frames[i - 1]["events"]):
            raise _damaged(path, f"{where} goes back (its at, seq or events is below the keyframe before's)")
        if f["seq"] > len(actions) or f["events"] > len(events):
            raise _damaged(path, f"{where} counts more actions or events than the trace holds")
        if f["seq"] and actions[f["seq"] - 1][0] > f["at"] or f["seq"] < len(actions) and actions[f["seq"]][0] < f["at"]:
            raise _damaged(path, f"{where}.seq {f['seq']} does not separate the actions before step {f['at']:,}")
        if f["events"] and events[f["events"] - 1].at > f["at"] or \
                f["events"] < len(events) and events[f["events"]].at < f["at"]:
            raise _damaged(path, f"{where}.events {f['events']} does not separate the events before step {f['at']:,}")
        if set(f["kernel"]) != set(frames[0]["kernel"]):
            raise _damaged(path, f"{where}.kernel does not have the fields of keyframes[0].kernel")
    if offset != blobs_size:
        raise _damaged(path, f"the keyframes take {offset:,} bytes of keyframes.bin, which holds {blobs_size:,}")
    if frames[-1]["at"] != end:
        raise _damaged(path, f"header.json: end is {end:,} but the last keyframe is at {frames[-1]['at']:,}")
    if frames[-1]["seq"] != len(actions) or frames[-1]["events"] != len(events):
        raise _damaged(path, "header.json: the last keyframe does not follow every action and event")
    for i in range(1, len(actions)):
        if actions[i][0] < actions[i - 1][0]:
            raise _damaged(path, f"actions.json: action {i} at step {actions[i][0]:,} comes before the one before it")
    for i, a in enumerate(answers):
        if a[0] >= end or i and a[0] <= answers[i - 1][0]:
            raise _damaged(path, f"answers.json: answer {i} at step {a[0]:,} is out of order or past the end")
    if header["cmdline"].split(" ", 1)[0] != f"workload={header['workload']}":
        raise _damaged(path, "header.json: cmdline does not begin with the workload")
    if header["pads"] != sorted({f[1] for p in header["patches"] for f in p["functions"]}):
        raise _damaged(path, "header.json: pads are not the patched functions' pads")
    tids = [t["tid"] for t in header["tasks"]]
    if len(set(tids)) != len(tids):
        raise _damaged(path, "header.json: a task id appears twice in tasks")
    for i, mod in enumerate(header["modules"]):
        if mod["freed_at"] is not None and mod["freed_at"] < mod["loaded_at"] or mod["loaded_at"] > end:
            raise _damaged(path, f"header.json: modules[{i}] is freed before it is loaded, or loaded past the end")
    from .livepatch import PatchState
    states = {s.value for s in PatchState}
    for i, p in enumerate(header["patches"]):
        if p["state"] not in states:
            raise _damaged(path, f"header.json: patches[{i}].state {p['state']!r} is not a patch state")
    for e in events:
        if e.kind == "patch" and e.state not in states:
            raise _damaged(path, f"events.jsonl line {e.seq + 1}: {e.state!r} is not a patch state")


class Trace:
    """A recorded run, read back and checked.  Open one with Trace.load(path)."""

    def __init__(self, path, header, events, actions, answers, blobs, image):
        self.path = pathlib.Path(path)
        self.header = header
        self.events = events
        self.actions = actions
        self.answers = answers
        self._blobs = blobs
        self.image = image
        self.keyframes = [Keyframe(**f) for f in header["keyframes"]]
        self._kf_at = [f.at for f in self.keyframes]
        self._event_at = [e.at for e in events]
        self._ram_cache = (None, None)
        self._verifier = None
        self.replayed = 0          # instructions replayed for this trace, verification included

    @classmethod
    def load(cls, path, image=None):
        """Read and check a trace; TraceError (one line: the file, what is
        wrong, what to do) if it is not one, is damaged or was edited."""
        path = pathlib.Path(path)
        header, members = _read_trace(path)
        _check(path, "header.json", "", header, _HEADER)
        image = image if isinstance(image, Image) else Image.load(image)
        if header["image_hash"] != image.source_hash:
            raise TraceError(f"{path}: recorded on another kernel image ({header['image']}, sources "
                             f"{header['image_hash'][:12]}); replay it with that image")
        counts = {name: header["members"][name]["records"] for name in MEMBERS[1:]}
        if None in (counts["events.jsonl"], counts["actions.json"], counts["answers.json"]):
            raise _damaged(path, "header.json: members does not count the records of every list")
        events = _parse_events(path, members["events.jsonl"], counts["events.jsonl"])
        actions = _parse_list(path, "actions.json", members["actions.json"], _action, counts["actions.json"])
        answers = _parse_list(path, "answers.json", members["answers.json"], _answer, counts["answers.json"])
        _check_consistency(path, header, events, actions, answers, len(members["keyframes.bin"]))
        log = ev.EventLog()
        log.events = events
        if log.digest != header["digest"]:
            raise _damaged(path, "the events' digest is not the header's digest (events.jsonl was changed)")
        trace = cls(path, header, events, actions, answers, members["keyframes.bin"], image)
        for frame in trace.keyframes:
            _frame_pages(path, frame, trace._blob(frame))
        return trace

    @property
    def end(self):
        return self.header["end"]

    @property
    def start(self):
        return self.keyframes[0].at

    def events_until(self, step):
        """Events that happened before instruction `step` retired... and at it."""
        return self.events[:bisect.bisect_right(self._event_at, step)]

    def event_index(self, step):
        return bisect.bisect_right(self._event_at, step)

    def keyframe_for(self, step):
        i = bisect.bisect_right(self._kf_at, step) - 1
        return self.keyframes[max(i, 0)]

    def _blob(self, frame):
        return self._blobs[frame.offset:frame.offset + frame.length]

    def _pages(self, frame):
        pages, data = _frame_pages(self.path, frame, self._blob(frame))
        for n, page in enumerate(pages):
            i = n * _RECORD
            yield page, data[i + 4:i + _RECORD]

    def pages_of(self, frame):
        """The RAM pages a keyframe holds (all of them for a full one)."""
        return _frame_pages(self.path, frame, self._blob(frame))[0]

    def ram_at(self, frame):
        """RAM as it was at a keyframe (a bytearray)."""
        return bytearray(self._ram_bytes(frame))

    def _ram_bytes(self, frame):
        """ram_at() as bytes, shared with the next caller: no copy when the
        same keyframe is asked for again (a seek restores it, verification
        compares with it and then restores from it)."""
        cached_index, cached = self._ram_cache
        if cached_index == frame.index:
            return cached
        if cached_index is not None and cached_index <= frame.index and \
                not any(f.full for f in self.keyframes[cached_index + 1:frame.index + 1]):
            ram, start = bytearray(cached), cached_index + 1
        else:
            base = max(i for i in range(frame.index + 1) if self.keyframes[i].full)
            ram, start = bytearray(RAM_END - RAM_BASE), base
        for f in self.keyframes[start:frame.index + 1]:
            for page, chunk in self._pages(f):
                ram[page * PAGE:(page + 1) * PAGE] = chunk
        ram = bytes(ram)
        self._ram_cache = (frame.index, ram)
        return ram

    def replayer(self):
        return Replayer(self)

    def trust(self, index):
        """Verify keyframes 0..index, and the events between them, against
        replay (once); TraceError naming the step where they disagree."""
        if self._verifier is None:
            self._verifier = _Verifier(self)
        self._verifier.trust(min(index, len(self.keyframes) - 1))

    def verify(self):
        """Verify the whole trace against its replay (what seeking to its end does)."""
        self.trust(len(self.keyframes) - 1)
        return self

    def close(self):
        """Release the verifier's emulator (replayers close their own)."""
        if self._verifier is not None:
            self._verifier.close()

    def _module_at(self, address, at=None):
        """The recorded module holding address: the one there at step `at`
        (the earliest loaded of those, as one freed at that step still ran
        there), else the latest loaded."""
        found = None
        for mod in self.header.get("modules", ()):
            if mod["base"] <= address < mod["base"] + mod["size"]:
                if at is None:
                    found = mod
                elif mod["loaded_at"] <= at and (mod["freed_at"] is None or at <= mod["freed_at"]):
                    return mod
        return found

    def function_name(self, address, at=None):
        """The recorded module function holding address, or None."""
        mod = self._module_at(address, at)
        for name, start, size in mod["functions"] if mod else ():
            if start <= address < start + max(size, 1):
                return name
        return None

    def symbolize(self, address, at=None):
        """Kernel symbols, the recorded modules' functions (the module there
        at step `at` if given), the trampolines."""
        mod = self._module_at(address, at)
        if mod is not None:
            for name, start, size in mod["functions"]:
                if start <= address < start + max(size, 1):
                    off = address - start
                    return f"{name} [{mod['name']}]" if not off else f"{name}+{off:#x} [{mod['name']}]"
            return f"{address:#x} [{mod['name']}]"
        from .ftrace import TRAMPOLINE_AREA
        if TRAMPOLINE_AREA[0] <= address < TRAMPOLINE_AREA[1]:
            return f"{address:#x} [trampoline]"
        return self.image.symbolize(address)


# ---- verification: the trace against its replay ----

# What the kernel model (and the verifier's watch of system calls and loop
# tops) regenerates; the other kinds come from the layers above it.
REGENERATED = frozenset({"booted", "switch", "irq", "preempt", "console", "signal", "task-new", "exit", "oops",
                         "panic", "syscall", "kloop"})


# Kernel events the layers above react to at once (an oopsing module init
# fails its load): where one is, the lab had control.
LAB_TRIGGERS = frozenset({"oops", "panic", "exit", "task-new"})


def _event_text(d):
    fields = {k: v for k, v in d.items() if k not in ("kind", "seq", "at")}
    text = f"{d['kind']} {json.dumps(fields, separators=(',', ':'))}"
    return text if len(text) <= 100 else text[:97] + "..."


def _core(e):
    d = e.to_dict()
    d.pop("seq", None)
    return d


def _without_repeats(items):
    """Drop a kernel-thread loop event equal to the one just before it: the
    block hook fires again when a slice ends right at the function's entry,
    and where slices end is not part of a run."""
    out = []
    for d in items:
        if out and d["kind"] == "kloop" and out[-1] == d:
            continue
        out.append(d)
    return out


def _json(value):
    """value as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


class _Verifier:
    """Trusts a trace's keyframes in order: keyframe 0 against a fresh boot of
    the header's inputs, each later one against the replay from the one
    before, which also regenerates the events recorded between them."""

    def __init__(self, trace):
        self.trace = trace
        self.trusted = 0           # keyframes[:trusted] are verified
        self._rp = None
        self._keyframe_at = {f.at for f in trace.keyframes}
        self._action_at = {a[0] for a in trace.actions}
        self._answer_at = [a[0] for a in trace.answers]
        self._patch_at = {e.at for e in trace.events if e.kind in ("patch", "transition-start")}
        self._cores = (None, [], [])   # (link, recorded events, regenerated so far) as _core() dicts

    def close(self):
        if self._rp is not None:
            self._rp.close()
            self._rp = None

    def trust(self, index):
        t = self.trace
        while self.trusted <= index:
            i = self.trusted
            if i == 0:
                self._check_boot()
            else:
                self._check_link(t.keyframes[i - 1], t.keyframes[i])
            self.trusted += 1
            if self.trusted == len(t.keyframes):
                self._check_tasks()
                self.close()

    def _replayer(self):
        if self._rp is None:
            self._rp = Replayer(self.trace, _regenerate=True)
        return self._rp

    # ---- keyframe 0 ----
    def _check_boot(self):
        t = self.trace
        frame = t.keyframes[0]
        if frame.at != 0:
            return             # recorded from a running system: nothing to boot to
        h = t.header
        machine = Machine()
        try:
            try:
                kernel = Kernel(t.image, machine, workload=h["workload"], seed=h["seed"], quantum=h["quantum"],
                                cmdline=h["cmdline"].split(" ", 1)[1] if " " in h["cmdline"] else "")
            except LabError as exc:
                raise _damaged(t.path, f"the header's inputs do not boot ({_one_line(exc)})") from None
            what = _state_difference(t, frame, machine.regs(), _json(kernel.snapshot_state()), bytes(machine.ram),
                                     lab_pages=t.pages_of(frame) if frame.lab else ())
        finally:
            machine.close()
        if what:
            raise _damaged(t.path, f"keyframe 0 is not the state workload {h['workload']!r}, seed {h['seed']}, "
                                   f"quantum {h['quantum']:,} boot to: {what}")

    # ---- keyframe i from keyframe i-1 ----
    def _check_link(self, prev, frame):
        t = self.trace
        self._cores = (None, [], [])
        rp = self._replayer()
        rp._restore(prev, t.actions[prev.seq:frame.seq])
        log = rp.kernel.log
        mark = len(log.events)
        rp.lab_calls, rp.entries, rp.hypercalls = {}, {}, {}
        failure = None
        try:
            # a piece at a time, each checked, so a keyframe placed far past
            # where the recorded events end costs a piece, not the distance
            piece = max(8 * t.header["quantum"], 250_000)
            while rp.clock < frame.at:
                rp._advance(min(frame.at, rp.clock + piece))
                self._compare_events(prev, frame, log.events[mark:], rp, until=rp.clock)
            rp._apply_actions(frame.at, inclusive=True)
            # what the run did at the keyframe's own step before taking it: a
            # tick delivered there, or the instruction there faulting (a
            # faulting instruction does not retire, so the clock stays)
            if _json(rp.kernel.snapshot_state()) != frame.kernel and rp._tick_due():
                rp._deliver_due_tick()
            if _json(rp.kernel.snapshot_state()) != frame.kernel and self._fault_at_end(prev, frame, log.events[mark:]):
                n = len(log.events)
                rp._run(1, until=lambda k: len(k.log.events) > n)
        except TraceError as exc:
            failure = exc
        self._compare_events(prev, frame, log.events[mark:], rp, until=rp.clock if failure is not None else None)
        if failure is not None:
            raise failure
        what = _state_difference(t, frame, rp.machine.regs(), _json(rp.kernel.snapshot_state()),
                                 bytes(rp.machine.ram), lab_pages=t.pages_of(frame) if frame.lab else ())
        if not what and not frame.lab and (frame.read_only, frame.guards) != (prev.read_only, prev.guards):
            what = "the memory protections changed with no lab change recorded"
        if what:
            raise _damaged(t.path, f"keyframe {frame.index} (step {frame.at:,}) is not the state the replay from "
                                   f"keyframe {prev.index} reaches: {what}")
        del log.events[mark:]       # the verifier's log only ever holds one segment

    def _fault_at_end(self, prev, frame, regenerated):
        """Whether the recorded run oopsed or panicked at the keyframe's step,
        before the keyframe, more often than the replay has so far."""
        def count(events):
            return sum(1 for e in events if e.at == frame.at and e.kind in ("oops", "panic"))
        return count(self.trace.events[prev.events:frame.events]) > count(regenerated)

    def _compare_events(self, prev, frame, regenerated, rp, until=None):
        """The regenerated events must be the recorded ones of their kinds
        (before step `until` when the replay stopped there); the others must
        stand where the replay handed control to the lab."""
        t = self.trace
        # each event in the comparable form once per link, not once per piece:
        # the regenerated events only grow while a link is checked
        if self._cores[0] != prev.index:
            self._cores = (prev.index, [_core(e) for e in t.events[prev.events:frame.events]], [])
        _link, recorded, converted = self._cores
        converted += [_core(e) for e in regenerated[len(converted):]]
        got = _without_repeats(converted)
        kinds = REGENERATED | {d["kind"] for d in got}
        want, lab = [], []
        j = 0
        for e, d in zip(t.events[prev.events:frame.events], recorded):
            matched = j < len(got) and got[j] == d
            if d["kind"] not in kinds or (d["kind"] == "console" and not matched):
                lab.append(e)      # the upper layers' events, the livepatch's log lines among them
                continue
            want.append(d)
            j += matched
        want = _without_repeats(want)
        if until is not None:
            want = [d for d in want if d["at"] < until]
            got = [d for d in got if d["at"] < until]
            lab = [e for e in lab if e.at < until]
        for k in range(max(len(want), len(got))):
            w = want[k] if k < len(want) else None
            g = got[k] if k < len(got) else None
            if w != g:
                step = min(x["at"] for x in (w, g) if x is not None)
                held = f"the trace holds `{_event_text(w)}`" if w is not None and w["at"] == step \
                    else "the trace holds nothing"
                gave = f"the replay gives `{_event_text(g)}`" if g is not None and g["at"] == step \
                    else "the replay gives nothing"
                raise _damaged(t.path, f"replay disagrees with the recorded events at step {step:,}: {held}, {gave}")
        lo, hi = prev.at, frame.at if until is None else until
        for at, nr, _value in t.answers[bisect.bisect_left(self._answer_at, lo):bisect.bisect_left(self._answer_at, hi)]:
            if rp.hypercalls.get(at) != nr:
                made = rp.hypercalls.get(at)
                raise _damaged(t.path, f"replay disagrees with the recorded answers at step {at:,}: the trace answers "
                                       f"hypercall {nr} there, the replay makes "
                                       f"{'none' if made is None else f'hypercall {made}'}")
        anchors = self._keyframe_at | self._action_at | set(rp.lab_calls) | \
            {d["at"] for d in got if d["kind"] in LAB_TRIGGERS}
        for e in lab:
            problem = self._lab_event_problem(e, anchors, rp)
            if problem:
                raise _damaged(t.path, f"replay disagrees with the recorded events at step {e.at:,}: {problem}")

    def _lab_event_problem(self, e, anchors, rp):
        """Why an event of the layers above the kernel cannot be where it is, or None."""
        text = _event_text(e.to_dict())
        if e.kind == "call":
            # an entry the replayed CPU made, or, as a transition starts, a
            # task found inside the function
            wanted = rp.entry_candidates.get(e.function, ())
            if any(a in wanted and (cur, irq) == (e.tid, e.in_irq) for a, cur, irq in rp.entries.get(e.at, ())):
                return None
            if not e.in_irq and e.at in self._patch_at and e.at in anchors:
                return None
            return f"the trace holds `{text}` but the replayed CPU did not enter {e.function} there in that context"
        if e.at not in anchors:
            return f"the trace holds `{text}` where the replayed kernel never handed control to the lab"
        if e.kind == "migrated" and e.at not in self._keyframe_at and e.at not in self._action_at:
            calls = [c for c in rp.lab_calls.get(e.at, ()) if c["nr"] == rp.safe_nr]
            if calls and not any((c["tid"], c["by"], c["target"]) == (e.tid, e.by, e.universe) for c in calls):
                c = calls[0]
                return f"the trace holds `{text}` but the replayed safe point moves task {c['tid']} " \
                       f"({c['by']}) to universe {c['target']}"
        return None

    def _check_tasks(self):
        """At the end, the header's task list is the replayed kernel's."""
        t = self.trace
        rp = self._replayer()
        rp._restore(t.keyframes[-1], ())
        try:
            tasks = [{"tid": x.tid, "name": x.name, "kind": x.kind} for x in rp.kernel.tasks]
        except (LabError, KeyError, IndexError, ValueError, struct.error) as exc:
            raise _damaged(t.path, f"the tasks at the end cannot be read ({_one_line(exc)})") from None
        if tasks != t.header["tasks"]:
            raise _damaged(t.path, "header.json: tasks are not the replayed kernel's tasks at the end")


def _state_difference(trace, frame, regs, kernel, ram, lab_pages=()):
    """What differs between a keyframe and a replayed state, or "" if nothing
    does.  At a lab keyframe the pages it holds may differ (the lab wrote
    them), and the registers only as an interrupt the lab delivered leaves
    them: the replayed rip, rflags and rsp in the frame at the new rsp."""
    if kernel != frame.kernel:
        keys = sorted(k for k in set(kernel) | set(frame.kernel) if kernel.get(k) != frame.kernel.get(k))
        return f"kernel state {', '.join(keys)} differ"
    stored = trace._ram_bytes(frame)
    if regs != frame.regs:
        names = [n for n in GPRS if regs.get(n) != frame.regs.get(n)]
        if not (frame.lab and set(names) <= {"rip", "rsp", "rflags"} and _interrupted(stored, regs, frame.regs)):
            n = names[0] if names else "?"
            return f"register {n} is {frame.regs.get(n, 0):#x}, the replay gives {regs.get(n, 0):#x}"
    if stored != ram:
        allowed = set(lab_pages)
        for page in range(NPAGES):
            a = page * PAGE
            if page not in allowed and stored[a:a + PAGE] != ram[a:a + PAGE]:
                off = next(i for i in range(PAGE) if stored[a + i] != ram[a + i])
                return f"RAM differs at {RAM_BASE + a + off:#x} ({trace.symbolize(RAM_BASE + a + off, frame.at)})"
    return ""


def _interrupted(ram, before, after):
    """Whether `after` is `before` interrupted: interrupts off, and the frame
    at after's rsp holding before's rip, rflags and rsp."""
    off = after["rsp"] - RAM_BASE
    if off < 0 or off + 40 > len(ram) or after["rflags"] != before["rflags"] & ~0x200:
        return False
    rip, _cs, rflags, rsp, _ss = struct.unpack_from("<5Q", ram, off)
    return (rip, rflags, rsp) == (before["rip"], before["rflags"], before["rsp"])


_REPLAY_ERRORS = (LabError, KeyError, IndexError, TypeError, ValueError, OverflowError, struct.error)


class Replayer:
    """Recomputes the machine at any instruction of a trace, from keyframes the
    trace has verified."""

    def __init__(self, trace, _regenerate=False):
        self.trace = trace
        h = trace.header
        self.machine = m = Machine()
        m.answers = {at: value for at, _nr, value in trace.answers}
        try:
            self.kernel = Kernel(trace.image, m, workload=h["workload"], seed=h["seed"], quantum=h["quantum"],
                                 cmdline=h["cmdline"].split(" ", 1)[1] if " " in h["cmdline"] else "",
                                 replay_state=trace.keyframes[0].kernel)
        except _REPLAY_ERRORS as exc:
            m.close()
            raise _damaged(trace.path, f"the header's inputs cannot start a replay ({_one_line(exc)})") from None
        k, img = self.kernel, trace.image
        # names as the recorded run gave them: an oops in a module names it
        k.symbolizer = lambda address: trace.symbolize(address, m.clock)
        k.text_resolvers.append(lambda address: trace.function_name(address, m.clock))
        # every hypercall the kernel model does not answer belongs to the
        # layers above it; on replay the recorded answer stands for it
        numbers = {s.address for s in img.symbols if s.kind == "abs" and s.name.startswith("HC_")
                   and s.name.endswith("_NR")}
        for nr in numbers - set(m.hypercalls):
            m.hypercalls[nr] = (lambda a, b, c, nr=nr: self._lab_call(nr, a, b, c))
        self._bad_calls = {e.at: e.reason for e in trace.events if e.kind == "oops"}
        self.lab_calls = None      # step -> [lab hypercalls there], while verifying
        self.hypercalls = None     # step -> hypercall number, while verifying
        self.entries = None        # step -> [(address, tid, in_irq)]: entries into patched functions
        self.safe_nr = None
        self.entry_candidates = {}
        self._frame = None
        if _regenerate:
            self._regenerate()

    def _regenerate(self):
        """Watch what the recorder watched, so the replay regenerates it."""
        t, k, m = self.trace, self.kernel, self.machine
        img = t.image
        _watch_units(k, img)
        self._safe_names = {}
        try:
            self.safe_nr = img.const("HC_KGR_SAFE_NR")
            self._target = img.address("kgr_target_universe")
            self._irq_by = img.lookup("kgr_irq_migrated_by").address if img.lookup("kgr_irq_migrated_by") else 0
            from .livepatch.transition import SAFE_POINT_NAMES
            for const, name in SAFE_POINT_NAMES.items():
                try:
                    self._safe_names[img.const(const)] = name
                except LabError:
                    pass
        except (LabError, ImportError):
            self.safe_nr = None
        candidates = {}
        for p in t.header["patches"]:
            for old_name, old_addr, _new_name, new_addr in p["functions"]:
                for name in {old_name, t.symbolize(old_addr)}:
                    candidates.setdefault(name, set()).update({old_addr + 5, new_addr})
        self.entry_candidates = candidates
        for address in sorted(set().union(*candidates.values()) if candidates else ()):
            if RAM_BASE <= address < RAM_END:
                m.add_code_hook(address, self._on_entry)
        # every hypercall, by step: a recorded answer must answer one
        for nr, handler in list(m.hypercalls.items()):
            m.hypercalls[nr] = (lambda a, b, c, nr=nr, handler=handler: self._hypercall(nr, handler, a, b, c))

    def _hypercall(self, nr, handler, a, b, c):
        if self.hypercalls is not None:
            self.hypercalls[self.machine.clock] = nr
        return handler(a, b, c)

    def _lab_call(self, nr, a, b, c):
        # a hypercall whose arguments the lab refused as no correct kernel path
        # passes faulted the caller: the recorded oops says so, and it is redone
        prefix = f"a bad hypercall {nr}: "
        reason = self._bad_calls.get(self.machine.clock, "")
        if reason.startswith(prefix):
            raise GuestFault(reason[len(prefix):])
        if self.lab_calls is None:
            return
        call = {"nr": nr, "args": (a, b, c)}
        if nr == self.safe_nr:
            # the move as the guest wrote it: the target universe, and why
            # (the reason byte of the task, or of the interrupt context)
            m = self.machine
            call["tid"] = -1 if a in (U64, 0xFFFFFFFF) else a
            call["target"] = m.u8(self._target)
            try:
                raw = m.u8(self._irq_by) if call["tid"] == -1 else \
                    m.u8(self.kernel.task(call["tid"])._field("kgr_migrated_by"))
                call["by"] = self._safe_names.get(raw, "unknown")
            except (LabError, KeyError, IndexError):
                call["by"] = self._safe_names.get(b, f"kind-{b}")
        self.lab_calls.setdefault(self.machine.clock, []).append(call)

    def _on_entry(self, address):
        if self.entries is not None:
            k = self.kernel
            self.entries.setdefault(self.machine.clock, []).append((address, k.current, k.in_interrupt))

    def close(self):
        """Release the emulator now; the replayer cannot seek after."""
        self.machine.close()

    @property
    def clock(self):
        return self.machine.clock

    # ---- the mechanics ----
    def _restore(self, frame, actions):
        t = self.trace
        m, k = self.machine, self.kernel
        try:
            # only the pages that differ, and only their translations dropped:
            # the replay from here runs on the code already translated
            m.replace_ram(t._ram_bytes(frame))
            _set_protections(m, frame.read_only, frame.guards)
            with m.replayable():
                m.set_regs(**frame.regs)
            m.retired = frame.at
            k.restore_state(frame.kernel)
        except _REPLAY_ERRORS as exc:
            raise _damaged(t.path, f"keyframe {frame.index} (step {frame.at:,}) cannot be restored "
                                   f"({_one_line(exc)})") from None
        k._pending_actions = [a for a in actions if a[0] >= frame.at]
        self._frame = frame

    def _replay_action(self, name, args):
        try:
            self.kernel.replay_action(name, args)
        except _REPLAY_ERRORS as exc:
            raise _damaged(self.trace.path, f"action {name} {args} at step {self.clock:,} cannot be redone "
                                            f"({_one_line(exc)})") from None

    def _apply_actions(self, step, inclusive=False):
        """Redo the pending actions recorded before step (and at it, inclusive)."""
        pending = getattr(self.kernel, "_pending_actions", [])
        while pending and (pending[0][0] <= step if inclusive else pending[0][0] < step) \
                and pending[0][0] <= self.clock:
            _at, name, args = pending.pop(0)
            self._replay_action(name, args)

    def _run(self, instructions=None, until=None):
        k, t = self.kernel, self.trace
        before = self.clock
        try:
            k.run(instructions, until)
        except KernelPanic:
            pass                  # where the recorded run panicked too, or the events tell otherwise
        except _REPLAY_ERRORS as exc:
            raise _damaged(t.path, f"replay stopped at step {self.clock:,} ({_one_line(exc)})") from None
        finally:
            t.replayed += self.clock - before

    def _advance(self, step):
        """Run from the restored keyframe to step, redoing the actions
        recorded before it at their steps."""
        k = self.kernel
        pending = k._pending_actions
        while self.clock < step:
            if pending and pending[0][0] <= self.clock:
                _at, name, args = pending.pop(0)
                self._replay_action(name, args)
                continue
            target = step
            if pending and pending[0][0] < step:
                target = max(pending[0][0], self.clock)
            before = self.clock
            self._run(target - self.clock)
            if self.clock == before:
                raise _damaged(self.trace.path, f"the replayed kernel stopped at step {self.clock:,}"
                                                f"{f' ({k.panicked})' if k.panicked else ''}; the trace goes on to "
                                                f"step {step:,}")
        self._apply_actions(step)

    def _tick_due(self):
        k = self.kernel
        return not k.panicked and k._next_tick is not None and k.tick_due_at() <= k.clock

    def _deliver_due_tick(self):
        self._run(until=lambda k: k.tick_due_at() > k.clock)

    # ---- seeking ----
    def seek(self, step):
        """Put the machine at `step` (instructions retired since power-on),
        replayed from a verified keyframe; TraceError if the trace disagrees
        with its replay on the way."""
        t = self.trace
        step = max(t.start, min(step, t.end))
        frame = t.keyframe_for(step)
        # the keyframe after the step too: its agreement covers the replay up to step
        t.trust(frame.index + 1)
        if not (self._frame is not None and self._frame.index == frame.index and self.clock <= step):
            self._restore(frame, t.actions[frame.seq:])
        self._advance(step)
        return settle(self)

    # ---- what a viewer reads ----
    def regs(self):
        return self.machine.regs()

    def tasks(self):
        out = []
        for task in self.kernel.tasks:
            universe = self.machine.u8(task._field("kgr_universe"))
            out.append({"tid": task.tid, "name": task.name, "kind": task.kind,
                        "state": "oopsed" if task.oopsed else task.state.value,
                        "universe": universe, "current": task.tid == self.kernel.current})
        return out

    @property
    def target_universe(self):
        return self.machine.u8(self.trace.image.address("kgr_target_universe"))

    @property
    def in_irq(self):
        return self.kernel.in_interrupt

    @property
    def current(self):
        return self.kernel.current


def record(system, keyframe_every=DEFAULT_KEYFRAME_EVERY):
    """Start recording system; returns the Recorder (save() it at the end)."""
    if getattr(system, "recorder", None) is not None:
        return system.recorder
    system.recorder = Recorder(system, keyframe_every)
    return system.recorder


# ---- added for the viewer (lab/viewer): the state in which instruction N is about to run ----

def settle(replayer):
    """Do the work due between two slices at the replayer's clock: the actions
    recorded at this clock, then the timer tick if it falls due here.

    seek(N) stops before them (the kernel delivers a due tick at the start of
    the next slice), so at a tick's step it leaves the machine just before the
    interrupt.  After settle() the machine is as a per-instruction hook sees it
    at N: about to run the instruction at N (the interrupt entry, if a tick was
    delivered).  Moving on with seek() afterwards is the same run."""
    replayer._apply_actions(replayer.clock, inclusive=True)
    if replayer.kernel.panicked or replayer.clock >= replayer.trace.end:
        return replayer
    if replayer._tick_due():
        replayer._deliver_due_tick()
    return replayer


__all__ = ["Recorder", "Trace", "Replayer", "TraceError", "record", "seal", "write_trace", "header_hash",
           "TRACE_SCHEMA", "MEMBERS", "GPRS", "TaskState"]
