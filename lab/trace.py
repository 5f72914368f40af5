"""trace - recording a run (inputs, keyframes, events) and replaying it to any instruction.

The machine is deterministic, so a trace holds what it takes to recompute
any state, not the states: the run's inputs, keyframes (the registers and the
RAM pages that changed since the previous keyframe), the events, the actions
taken from outside the kernel (signals, fake signals, fault injection) and
the hypercall answers.  The state at instruction N is the nearest keyframe at
or before N, replayed forward by the same kernel model with no per-instruction
hook.  A keyframe is also taken after every write the lab makes that the
kernel model would not redo (patching), so a replay never has to redo one.

File: a zip archive (header.json, events.jsonl, actions.json, answers.json,
keyframes.bin), written to a temporary name and renamed, so a crash never
leaves a half file that looks whole.
"""
from __future__ import annotations

import bisect
import io
import json
import os
import pathlib
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass

from . import events as ev
from .errors import LabError
from .image import Image
from .kernel import Kernel, TaskState
from .machine import GPRS, RAM_BASE, RAM_END, Machine

TRACE_SCHEMA = 1
PAGE = 4096
DEFAULT_KEYFRAME_EVERY = 1_000_000
_FULL_EVERY = 16           # every 16th keyframe holds all of RAM, so a seek applies few deltas


class TraceError(LabError):
    """A trace file cannot be read or does not fit the image."""


@dataclass(frozen=True)
class Keyframe:
    index: int
    at: int
    seq: int               # position among actions: later actions are redone on replay
    regs: dict
    kernel: dict
    full: bool
    offset: int            # into keyframes.bin
    length: int


# Where kernel threads finish a round of their loops: the checker's unit
# boundaries for kernel threads.  Not their safe points: a unit bounded by the
# safe point itself could never show a misplaced one.
KTHREAD_LOOP_TOPS = ("kthread_iteration_done",)


class Observer:
    """Adds the events the checker and the viewer need: system call entries,
    entries into the old and new versions of every function a transition
    switches, and kernel threads passing the top of their loops.  A Python
    call for each of those, never one per instruction."""

    def __init__(self, system):
        self.system = system
        k = system.kernel
        k.watch_syscalls(self._on_syscall)
        self._watched = set()
        system.livepatch.on_transition = self._watch_transition
        for name in KTHREAD_LOOP_TOPS:
            sym = system.image.lookup(name)
            if sym is not None:
                # function entries, always reached by a call: a block hook sees them
                system.machine.add_entry_hook(sym.address, lambda _a, name=name: self._on_loop(name))

    def _on_loop(self, where):
        k = self.system.kernel
        if not k.in_interrupt:
            k.log.add(ev.KthreadLoop, self.system.machine.clock, tid=k.current, where=where)

    def _on_syscall(self, tid, nr):
        k = self.system.kernel
        k.log.add(ev.SyscallEntry, self.system.machine.clock, tid=tid, nr=nr)

    def _watch_transition(self, transition):
        """Record every entry into the old and new versions of the functions a
        transition switches (the old body begins right after the pad), and,
        as entered at this instant, the ones already on a task's stack: a task
        inside an old function when the switch happens is running old code."""
        ft, k = self.system.ftrace, self.system.kernel
        leaving = {}
        for pad, (old, new) in transition.funcs.items():
            version, target = ("old", old) if transition.target == 1 else ("new", new)
            start = pad if target is None else target
            name = k.function_name(start)
            sym = self.system.image.function_at(start) if target is None else None
            size = sym.size if sym else 1
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
        for pad, (old, new) in transition.funcs.items():
            name = ft.symbolize(pad)
            for address, version in ((pad + 5 if old is None else old, "old"),
                                     (pad + 5 if new is None else new, "new")):
                if (address, version) in self._watched:
                    continue
                self._watched.add((address, version))
                self.system.machine.add_code_hook(
                    address, lambda _a, name=name, version=version, patch=transition.patch.name:
                    self._on_entry(name, version, patch))

    def _on_entry(self, function, version, patch):
        k = self.system.kernel
        k.log.add(ev.FuncEntry, self.system.machine.clock, tid=k.current, in_irq=k.in_interrupt,
                  function=function, version=version, patch=patch)


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
        self._prev_ram = None
        self._seen_writes = None
        system.observer = Observer(system)
        self.keyframe()

    # ---- keyframes ----
    def _after_slice(self):
        m = self.system.machine
        if m.lab_writes != self._seen_writes or m.clock - self.keyframes[-1].at >= self.every:
            self.keyframe()

    def before_run(self):
        if self.system.machine.lab_writes != self._seen_writes:
            self.keyframe()

    def keyframe(self):
        sysm = self.system
        m, k = sysm.machine, sysm.kernel
        if self.keyframes and self.keyframes[-1].at == m.clock and m.lab_writes == self._seen_writes:
            return
        ram = bytes(m.ram)
        index = len(self.keyframes)
        full = self._prev_ram is None or index % _FULL_EVERY == 0
        out = bytearray()
        for page in range(len(ram) // PAGE):
            a = page * PAGE
            chunk = ram[a:a + PAGE]
            if full or chunk != self._prev_ram[a:a + PAGE]:
                out += struct.pack("<I", page) + chunk
        data = zlib.compress(bytes(out), 1)
        offset = self._blobs.tell()
        self._blobs.write(data)
        self.keyframes.append(Keyframe(index, m.clock, len(k.action_log), m.regs(), k.snapshot_state(),
                                       full, offset, len(data)))
        self._prev_ram = ram
        self._seen_writes = m.lab_writes

    # ---- writing ----
    def header(self):
        s = self.system
        k = s.kernel
        return {
            "schema": TRACE_SCHEMA,
            "image": s.image.path.name,
            "image_hash": s.image.source_hash,
            "workload": k.workload, "seed": k.seed, "quantum": k.quantum, "cmdline": k.cmdline,
            "signal_after": s.livepatch.signal_after,
            "boot_patches": list(s.boot_patches),
            "end": s.clock,
            "ram": [RAM_BASE, RAM_END],
            "keyframes": [{"index": f.index, "at": f.at, "seq": f.seq, "regs": f.regs, "kernel": f.kernel,
                           "full": f.full, "offset": f.offset, "length": f.length} for f in self.keyframes],
            "digest": s.digest,
            "patches": [{"name": p.name, "module": str(p.module.path), "state": p.state.value,
                         "functions": [[f.old_name, f.old_addr, f.new_name, f.new_addr]
                                       for f in p.description.functions] if p.description else []}
                        for p in s.livepatch.patches],
            "pads": sorted({a for p in s.livepatch.patches if p.description
                            for a in (f.old_addr for f in p.description.functions)}),
            "tasks": [{"tid": t.tid, "name": t.name, "kind": t.kind} for t in s.tasks],
            "modules": [{"name": mod.name, "base": mod.base, "size": mod.size,
                         "functions": sorted([sym.name, sym.address, sym.size] for sym in mod.symbols.values()
                                             if sym.kind == "func")}
                        for mod in s.modules.modules],
        }

    def save(self, path):
        """Write the trace atomically (temporary file, then rename)."""
        self.keyframe()
        path = pathlib.Path(path)
        s = self.system
        events = "\n".join(json.dumps(e.to_dict(), separators=(",", ":")) for e in s.events)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent or ".")
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
                z.writestr("header.json", json.dumps(self.header()))
                z.writestr("events.jsonl", events)
                z.writestr("actions.json", json.dumps(s.kernel.action_log))
                z.writestr("answers.json", json.dumps(s.machine.answer_log))
                z.writestr("keyframes.bin", self._blobs.getvalue(), compress_type=zipfile.ZIP_STORED)
            os.replace(tmp, path)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise
        return path


class Trace:
    """A recorded run, read back.  Open one with Trace.load(path)."""

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

    @classmethod
    def load(cls, path, image=None):
        path = pathlib.Path(path)
        if not path.is_file():
            raise TraceError(f"{path}: no such trace; record one with `lab run --trace {path}`")
        try:
            with zipfile.ZipFile(path) as z:
                header = json.loads(z.read("header.json"))
                if header.get("schema") != TRACE_SCHEMA:
                    raise TraceError(f"{path}: trace schema {header.get('schema')} is not {TRACE_SCHEMA}; "
                                     "record it again with this version of the lab")
                events = [ev.from_dict(json.loads(line)) for line in z.read("events.jsonl").decode().splitlines()
                          if line]
                actions = json.loads(z.read("actions.json"))
                answers = json.loads(z.read("answers.json"))
                blobs = z.read("keyframes.bin")
        except TraceError:
            raise
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError, zlib.error) as exc:
            raise TraceError(f"{path}: not a lab trace, or a damaged one ({exc}); record it again") from None
        image = image if isinstance(image, Image) else Image.load(image)
        try:
            trace = cls(path, header, events, actions, answers, blobs, image)
            for frame in trace.keyframes:      # every keyframe must decompress
                zlib.decompress(blobs[frame.offset:frame.offset + frame.length])
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise TraceError(f"{path}: a damaged trace ({exc!r}); record it again") from None
        if header.get("image_hash") != image.source_hash:
            raise TraceError(f"{path}: recorded on another kernel image ({header.get('image')}, sources "
                             f"{str(header.get('image_hash'))[:12]}); replay it with that image")
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

    def _pages(self, frame):
        data = zlib.decompress(self._blobs[frame.offset:frame.offset + frame.length])
        rec = 4 + PAGE
        for i in range(0, len(data), rec):
            yield struct.unpack_from("<I", data, i)[0], data[i + 4:i + rec]

    def ram_at(self, frame):
        """RAM as it was at a keyframe (a bytearray)."""
        cached_index, cached = self._ram_cache
        if cached_index is not None and cached_index <= frame.index and \
                not any(f.full for f in self.keyframes[cached_index + 1:frame.index + 1]):
            ram, start = bytearray(cached), cached_index + 1
        else:
            base = max(i for i in range(frame.index + 1) if self.keyframes[i].full)
            ram, start = bytearray(RAM_END - RAM_BASE), base
        for f in self.keyframes[start:frame.index + 1]:
            for page, chunk in self._pages(f):
                ram[page * PAGE:(page + 1) * PAGE] = chunk
        self._ram_cache = (frame.index, bytes(ram))
        return ram

    def replayer(self):
        return Replayer(self)

    def symbolize(self, address):
        """Kernel symbols, the recorded modules' functions, the trampolines."""
        for mod in self.header.get("modules", ()):
            if mod["base"] <= address < mod["base"] + mod["size"]:
                for name, start, size in mod["functions"]:
                    if start <= address < start + max(size, 1):
                        off = address - start
                        return f"{name} [{mod['name']}]" if not off else f"{name}+{off:#x} [{mod['name']}]"
                return f"{address:#x} [{mod['name']}]"
        from .ftrace import TRAMPOLINE_AREA
        if TRAMPOLINE_AREA[0] <= address < TRAMPOLINE_AREA[1]:
            return f"{address:#x} [trampoline]"
        return self.image.symbolize(address)


class Replayer:
    """Recomputes the machine at any instruction of a trace."""

    def __init__(self, trace):
        self.trace = trace
        h = trace.header
        self.machine = Machine()
        self.machine.answers = {int(at): value for at, _nr, value in trace.answers}
        self.kernel = Kernel(trace.image, self.machine, workload=h["workload"], seed=h["seed"],
                             quantum=h["quantum"], cmdline=h["cmdline"].split(" ", 1)[1] if " " in h["cmdline"] else "",
                             replay_state=trace.keyframes[0].kernel)
        for name in ("KGR_PATCH", "KGR_UNPATCH", "KGR_SAFE", "MODULE_DONE", "KALLSYMS_LOOKUP"):
            self.kernel.on_hypercall(name, lambda *_: None)
        self._frame = None

    @property
    def clock(self):
        return self.machine.clock

    def seek(self, step):
        """Put the machine at `step` (instructions retired since power-on)."""
        t = self.trace
        step = max(t.start, min(step, t.end))
        frame = t.keyframe_for(step)
        m, k = self.machine, self.kernel
        if not (self._frame is not None and self._frame.index == frame.index and self.clock <= step):
            ram = t.ram_at(frame)
            m.ram[:] = ram
            m.flush_translations()
            with m.replayable():
                m.set_regs(**frame.regs)
            m.retired = frame.at
            k.restore_state(frame.kernel)
            k._pending_actions = [a for a in t.actions[frame.seq:] if a[0] >= frame.at]
            self._frame = frame
        pending = k._pending_actions
        while self.clock < step:
            target = step
            if pending and pending[0][0] < step:
                target = max(pending[0][0], self.clock)
            if pending and pending[0][0] <= self.clock:
                at, name, args = pending.pop(0)
                k.replay_action(name, args)
                continue
            k.run(target - self.clock)
        while pending and pending[0][0] <= self.clock and pending[0][0] < step:
            at, name, args = pending.pop(0)
            k.replay_action(name, args)
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
    from .kernel import _STALL_CHUNK
    k = replayer.kernel
    pending = getattr(k, "_pending_actions", [])
    while pending and pending[0][0] <= replayer.clock:
        _at, name, args = pending.pop(0)
        k.replay_action(name, args)
    if k.panicked or replayer.clock >= replayer.trace.end:
        return replayer
    k.run(until=lambda k: k._next_tick + k._stall * _STALL_CHUNK > k.clock)
    return replayer


__all__ = ["Recorder", "Trace", "Replayer", "TraceError", "record", "TRACE_SCHEMA", "GPRS", "TaskState"]
