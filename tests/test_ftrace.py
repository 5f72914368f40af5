"""The ftrace layer under live patching: pads rewritten NOP -> CALL -> JMP ->
NOP and checked with capstone, the keystone-assembled kGraft trampoline, and
function tracers."""
import re

import pytest

from lab import LabError
from lab import events as ev
from lab.disasm import disassemble
from lab.ftrace import TRAMPOLINE_AREA, FtraceError, PadState
from lab.image import PAD_BYTES
from lab.livepatch.patch import build_trampoline
from lab.modules import MODULE_AREA

from livepatch_helpers import CAPABLE, LIMIT, boot, body_entries, completed, image, pad_bytes, patched


def trampoline_consts(image):
    """What the trampoline reads, from the image (not from the lab's core)."""
    return {
        "current_task": image.address("current_task"),
        "irq_depth": image.address("irq_depth"),
        "preempt_count": image.address("preempt_count"),
        "kgr_irq_universe": image.address("kgr_irq_universe"),
        "TASK_kgr_universe": image.const("TASK_kgr_universe"),
    }


def new_capable_address(patch):
    return patch.module.symbols["kgr_new_capable"].address


# ---- the pad through a patch's life ----

def test_every_pad_holds_the_five_byte_nop_while_nothing_is_patched():
    system = boot()
    system.run(300_000)
    pads = pad_bytes(system)
    assert len(pads) > 20
    assert {code.hex() for code in pads.values()} == {"0f1f440000"}
    assert all(system.ftrace.state(p.address) == (PadState.NOP, None) for p in system.image.pads)


def test_the_pad_calls_the_trampoline_while_the_transition_runs():
    system, patch = patched(CAPABLE)
    pad = system.image.pad("capable").address
    insn = system.ftrace.disassemble_pad(pad)
    assert insn.raw[0] == 0xE8 and len(insn.raw) == 5
    assert insn.mnemonic == "call"
    target = int(insn.operands, 16)
    assert TRAMPOLINE_AREA[0] <= target < TRAMPOLINE_AREA[1]
    assert insn.comment == "trampoline of capable"
    assert system.ftrace.state(pad) == (PadState.CALL, target)


def test_the_pad_jumps_straight_to_the_new_function_once_the_transition_completes():
    system, patch = completed(CAPABLE)
    pad = system.image.pad("capable").address
    insn = system.ftrace.disassemble_pad(pad)
    assert insn.raw[0] == 0xE9 and len(insn.raw) == 5
    assert insn.text == f"jmp {new_capable_address(patch):#x}"
    assert insn.comment == "kgr_new_capable [kgr_capable]"
    assert system.ftrace.state(pad) == (PadState.JMP, new_capable_address(patch))


def test_the_pad_is_the_original_nop_again_after_a_revert_and_the_old_body_runs():
    system, patch = completed(CAPABLE)
    pad = system.image.pad("capable").address
    system.revert(patch.name)
    system.run_until_patched(LIMIT)
    assert system.transition is None
    assert system.ftrace.read_pad(pad) == PAD_BYTES
    assert system.ftrace.disassemble_pad(pad).text == "nop dword ptr [rax + rax]"
    assert system.ftrace.state(pad) == (PadState.NOP, None)
    new_calls = []
    system.ftrace.register_tracer("kgr_new_capable", new_calls.append)
    old_body = body_entries(system, "capable")
    system.run(300_000)
    assert new_calls == []
    assert old_body, "cap-user keeps calling capable(), now the original one"


def test_a_patch_rewrites_only_the_pads_of_the_functions_it_replaces():
    system = boot()
    system.run(1_000_000)
    before = pad_bytes(system)
    system.apply_patch(CAPABLE)
    after = pad_bytes(system)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"capable"}


# ---- the trampoline ----

MEMORY_OPERAND = re.compile(r"\[([^\]]*)\]")


@pytest.mark.parametrize("old_target", [None, 0x601234], ids=["old-is-original-body", "old-is-older-patch"])
def test_the_trampoline_reaches_memory_only_through_a_register_never_rip_relative(old_target):
    consts = trampoline_consts(image())
    address, new_target = TRAMPOLINE_AREA[0] + 0x40, 0x600000
    code = build_trampoline(address, consts, old_target, new_target)
    insns = disassemble(code, address)
    assert sum(i.size for i in insns) == len(code), "every byte decodes"
    assert not any("rip" in i.operands for i in insns)
    memory = [m for i in insns for m in MEMORY_OPERAND.findall(i.operands)]
    assert memory, "the trampoline reads the universe flags from memory"
    assert all(re.fullmatch(r"r11( \+ 0x[0-9a-f]+)?", m) for m in memory), memory
    # the absolute addresses are loaded as immediates into the register
    loaded = {int(i.operands.split(", ")[1], 16) for i in insns
              if i.mnemonic == "mov" and i.operands.startswith("r11, 0x")}
    assert loaded == {consts["irq_depth"], consts["current_task"], consts["kgr_irq_universe"],
                      consts["preempt_count"]}
    # the decision runs with preemption disabled: raised first, dropped on each way out
    assert insns[1].text == "inc dword ptr [r11]"
    assert [i.text for i in insns].count("dec dword ptr [r11]") == 2
    assert f"r11 + {consts['TASK_kgr_universe']:#x}" in memory
    # the two ways out: the new function, and the old one (or back into the original body)
    jumps = [i.operands for i in insns if i.mnemonic == "jmp"]
    assert f"{new_target:#x}" in jumps
    if old_target is None:
        assert insns[-1].text == "ret"
    else:
        assert insns[-1].text == f"jmp {old_target:#x}"


def test_the_trampoline_in_guest_memory_is_the_one_built_for_this_pad():
    system, patch = patched(CAPABLE)
    _, target = system.ftrace.state(system.image.pad("capable").address)
    expected = build_trampoline(target, trampoline_consts(system.image), None, new_capable_address(patch))
    assert system.machine.read(target, len(expected)) == expected


# ---- function tracers ----

def test_a_tracer_on_capable_sees_each_call_with_the_calling_tasks_tid():
    system = boot(workload="hammer", cmdline="nr_hammer=4")
    system.run(200_000)
    calls = []
    system.ftrace.register_tracer("capable", calls.append)
    system.run(400_000)
    hammers = {t.tid for t in system.tasks if t.name == "hammer"}
    assert len(hammers) == 4
    assert {c.tid for c in calls} == hammers
    pad = system.image.pad("capable").address
    assert all(c.function == "capable" and c.address == pad and not c.in_irq for c in calls)
    assert {system.image.function_at(c.return_address).name for c in calls} == {"__x64_sys_sethostname"}
    assert [c.at for c in calls] == sorted(c.at for c in calls)


def test_a_tracer_on_the_timer_interrupt_sees_one_call_per_tick_in_interrupt_context():
    system = boot()
    ticks = []
    system.ftrace.register_tracer("timer_interrupt", ticks.append)
    inlined = []
    system.ftrace.register_tracer("account_process_tick", inlined.append)
    system.run(400_000)
    interrupts = system.kernel.log.of(ev.Interrupt)
    assert len(interrupts) > 10
    for this, nxt in zip(interrupts, interrupts[1:]):
        assert len([c for c in ticks if this.at <= c.at < nxt.at]) == 1
    assert all(c.in_irq for c in ticks)
    # gcc inlined account_process_tick() into timer_interrupt(): its own pad
    # never runs, which is why a patch of an inlined function does nothing
    assert inlined == []


def test_unregistering_a_tracer_stops_it_and_leaves_the_others_running():
    system = boot()
    system.run(200_000)
    first, second = [], []
    h1 = system.ftrace.register_tracer("capable", first.append)
    h2 = system.ftrace.register_tracer("capable", second.append)
    system.run(200_000)
    assert first and len(first) == len(second)
    system.ftrace.unregister_tracer(h1)
    seen = len(first)
    system.run(200_000)
    assert len(first) == seen
    assert len(second) > seen
    system.ftrace.unregister_tracer(h2)
    seen2 = len(second)
    system.run(200_000)
    assert len(second) == seen2


@pytest.mark.parametrize("function", ["schedule", "do_syscall_64", "kgr_task_safe"])
def test_tracing_a_notrace_function_is_refused_naming_it(function):
    system = boot()
    assert system.image.function(function) is not None
    with pytest.raises(FtraceError, match=re.escape(function)) as info:
        system.ftrace.register_tracer(function, lambda call: None)
    assert "notrace" in str(info.value)
    with pytest.raises(FtraceError, match="notrace"):
        system.ftrace.resolve(function)
    assert isinstance(info.value, LabError)


def test_tracing_an_unknown_function_is_refused_naming_it():
    system = boot()
    with pytest.raises(FtraceError, match="no_such_function"):
        system.ftrace.register_tracer("no_such_function", lambda call: None)


def test_a_tracer_keeps_seeing_calls_whatever_the_pad_holds():
    system = boot(signal_after=300_000)
    system.run(600_000)
    calls = []
    system.ftrace.register_tracer("capable", calls.append)
    system.run(400_000)
    with_nop = len(calls)
    patch = system.apply_patch(CAPABLE)
    system.run(20_000)
    with_call = len(calls) - with_nop
    system.run_until_patched(LIMIT)
    seen = len(calls)
    system.run(300_000)
    with_jmp = len(calls) - seen
    assert with_nop > 0 and with_call > 0 and with_jmp > 0
    assert patch.state.value == "complete"


def test_a_module_function_is_traceable_once_its_module_is_loaded():
    system = boot(signal_after=300_000)
    system.run(1_000_000)
    with pytest.raises(FtraceError, match="kgr_new_capable"):
        system.ftrace.resolve("kgr_new_capable")
    patch = system.apply_patch(CAPABLE)
    name, address = system.ftrace.resolve("kgr_new_capable")
    assert (name, address) == ("kgr_new_capable", new_capable_address(patch))
    assert MODULE_AREA[0] <= address < MODULE_AREA[1]
    calls = []
    system.ftrace.register_tracer("kgr_new_capable", calls.append)
    system.run_until_patched(LIMIT)
    system.run(200_000)
    assert calls
    assert {c.tid for c in calls} == {system.task("cap-user").tid}
