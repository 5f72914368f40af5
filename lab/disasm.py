"""disasm - capstone disassembly with kernel symbols in place of raw targets."""
from __future__ import annotations

import re
from dataclasses import dataclass

import capstone

_cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
_HEX = re.compile(r"0x[0-9a-f]+")


@dataclass(frozen=True)
class Insn:
    address: int
    raw: bytes
    mnemonic: str
    operands: str
    comment: str = ""  # the symbol a target or rip-relative operand names

    @property
    def size(self):
        return len(self.raw)

    @property
    def text(self):
        return f"{self.mnemonic} {self.operands}".strip()


def _comment(mnemonic, operands, address, size, symbolize):
    if not symbolize:
        return ""
    if "rip" in operands:
        m = re.search(r"\[rip ([+-]) (0x[0-9a-f]+|\d+)\]", operands)
        if m:
            disp = int(m.group(2), 0)
            target = address + size + (disp if m.group(1) == "+" else -disp)
            return symbolize(target)
    if mnemonic.startswith(("call", "j")) and _HEX.fullmatch(operands):
        return symbolize(int(operands, 16))
    m = re.search(r"\[(0x[0-9a-f]{5,})\]", operands)
    if m:
        return symbolize(int(m.group(1), 16))
    return ""


def disassemble(code, address, count=0, symbolize=None):
    """Decode code (bytes) placed at address; stop after count instructions if count."""
    out = []
    for addr, size, mnemonic, operands in _cs.disasm_lite(bytes(code), address, count):
        raw = bytes(code[addr - address:addr - address + size])
        out.append(Insn(addr, raw, mnemonic, operands, _comment(mnemonic, operands, addr, size, symbolize)))
    return out
