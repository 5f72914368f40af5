"""frames - the call chain of the task on the CPU, through interrupt frames, and what an address points at, read from a replayed machine (gdb's `bt`, pwndbg's telescope)."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import LabError
from ..machine import RAM_BASE, RAM_END

# frame kinds: how the unwinder found the address
CURRENT = "current"          # rip itself
CALL = "call"                # a return address on the frame-pointer chain
LEAF = "leaf caller"         # [rsp] of a function that has not pushed its frame yet
INTERRUPTED = "interrupted"  # the ip an interrupt frame (pt_regs) saved
STALE = "maybe"              # the word at the interrupted rsp: the caller if the function had not pushed yet
USER = "user"                # the user-mode ip an interrupt or system call left
_SCAN_WORDS = 4              # how far up the stack a frameless trampoline's callers are looked for


@dataclass(frozen=True)
class Frame:
    """One line of a backtrace."""

    address: int
    symbol: str
    source: str        # "sched.c:58", or "" where DWARF says nothing (modules, trampolines)
    kind: str


def backtrace(replayer, sources, limit=24):
    """The frames of the task on the CPU, innermost first.

    The walk is the one lab.kernel's Task.unwind does (frame pointers, an
    interrupt's pt_regs where a return address is an interrupt return site,
    gcc's frameless leaf functions), with each frame labelled by how it was
    found, so the pane can draw the interrupt boundaries; an interrupted user
    task ends the chain with its user-mode ip."""
    rp, trace = replayer, replayer.trace
    k, m = rp.kernel, rp.machine
    img = trace.image
    regs = m.regs()
    at = m.clock

    def frame(address, kind):
        where = sources.line_of(address)
        return Frame(address, trace.symbolize(address, at), str(where) if where else "", kind)

    rip = regs["rip"]
    if img.in_user(rip):
        return (frame(rip, USER),)
    try:
        task = k.task(k.current)
        lo, hi = task.stack_range
    except LabError:
        return (frame(rip, CURRENT),)
    out = [frame(rip, CURRENT)]
    rbp = regs["rbp"]
    if img.function_at(rip) is None:
        # a trampoline or a module's function: no frame of its own the lab can read, so the return
        # addresses between rsp and the frame chain (the pad's call, the patched function's caller)
        for sp in range(regs["rsp"], min(rbp, regs["rsp"] + 8 * _SCAN_WORDS), 8):
            try:
                word = m.u64(sp)
            except LabError:
                break
            if lo <= sp < hi and img.function_at(word) is not None:
                out.append(frame(word, LEAF))
    else:
        caller = task._frameless_caller(regs)
        if caller is not None:
            out.append(frame(caller, LEAF))
    returns = k.interrupt_return_sites
    ip_off = k.c["PT_REGS_ip"]
    try:
        while len(out) < limit and lo <= rbp < hi - 16:
            ret = m.u64(rbp + 8)
            if ret in returns:
                regs_at = rbp + 16
                ip, cs, sp = m.u64(regs_at + ip_off), m.u64(regs_at + ip_off + 8), m.u64(regs_at + ip_off + 24)
                if cs & 3:
                    out.append(frame(ip, USER))
                    break
                out.append(frame(ip, INTERRUPTED))
                if lo <= sp < hi:
                    top = m.u64(sp)
                    if k.function_name(top) is not None:
                        out.append(frame(top, STALE))
                rbp = m.u64(regs_at + 4 * 8)    # pt_regs.bp
                continue
            if k.function_name(ret) is None:
                break
            out.append(frame(ret, CALL))
            rbp = m.u64(rbp)
    except LabError:
        pass                 # a frame pointer out of RAM ends the walk where it is
    return tuple(out)


class AddressNames:
    """What an address is, for a register or a memory word: a task struct's
    field (task[3] pipe-reader .kgr_universe), a task's kernel stack, a
    variable or function of the image (name+off), a module's function, a
    trampoline.  The task struct's fields are the firmware's asm-offsets."""

    def __init__(self, trace):
        self.trace = trace
        img = trace.image
        self._tasks = img.lookup("tasks")
        self._task_size = img.lookup("TASK_SIZE").address if img.lookup("TASK_SIZE") else 0
        fields = sorted((s.address, s.name[5:]) for s in img.symbols
                        if s.kind == "abs" and s.name.startswith("TASK_") and s.name[5:6].islower())
        self._fields = fields

    def field_at(self, offset):
        """The task struct field holding byte offset, and the offset into it."""
        best = None
        for off, name in self._fields:
            if off <= offset:
                best = (name, offset - off)
        return best

    def describe(self, address, replayer=None, names=None):
        """A few words for address, or None when it is nothing the lab knows."""
        if not RAM_BASE <= address < RAM_END:
            return None
        trace = self.trace
        t = self._tasks
        if t is not None and self._task_size and t.address <= address < t.address + t.size:
            tid, offset = divmod(address - t.address, self._task_size)
            name = names(tid) if names else f"task {tid}"
            field = self.field_at(offset)
            where = f".{field[0]}" + (f"+{field[1]}" if field[1] else "") if field else f"+{offset:#x}"
            return f"task[{tid}] {name} {where}"
        if replayer is not None:
            for task in _tasks(replayer):
                lo, hi = task.stack_range
                if lo <= address < hi:
                    return f"stack of {names(task.tid) if names else task.tid} (top-{hi - address:#x})"
        text = trace.symbolize(address, replayer.machine.clock if replayer else None)
        if text.startswith("0x"):
            return None if "[" not in text else text
        return text


def _tasks(replayer):
    try:
        return [t for t in replayer.kernel.tasks if t.stack_top]
    except LabError:
        return []


__all__ = ["Frame", "backtrace", "AddressNames", "CURRENT", "CALL", "LEAF", "INTERRUPTED", "STALE", "USER"]
