"""Tests for lab.image: loading kernel images, symbols, fentry pads, constants, workloads."""
import re

import pytest

import lab
from lab.image import DEFAULT_IMAGE, PAD_BYTES, PAD_SIZE, Image


# ---- loading ----

def test_the_default_image_is_the_firmware_kernel_and_starts_at_start(image):
    assert image.path == DEFAULT_IMAGE
    assert image.entry == image.symbol("_start").address


def test_loading_a_missing_file_raises_an_image_error_naming_it(tmp_path):
    missing = tmp_path / "nope.elf"
    with pytest.raises(lab.ImageError, match=re.escape(str(missing))) as info:
        Image.load(missing)
    assert "make -C firmware" in str(info.value)
    assert isinstance(info.value, lab.LabError)   # the one root the CLI catches


def test_loading_a_file_that_is_not_elf_raises_an_image_error_naming_it(text_file):
    with pytest.raises(lab.ImageError, match="not an ELF file") as info:
        Image.load(text_file)
    assert str(text_file) in str(info.value)


def test_loading_a_truncated_elf_raises_an_image_error_naming_it(truncated_elf):
    with pytest.raises(lab.ImageError) as info:
        Image.load(truncated_elf)
    assert str(truncated_elf) in str(info.value)


def test_loading_an_ordinary_program_raises_an_image_error_naming_it(program_elf):
    with pytest.raises(lab.ImageError) as info:
        Image.load(program_elf)
    assert str(program_elf) in str(info.value)


def test_loading_an_elf_without_mcount_loc_says_how_to_build_one(no_mcount_elf):
    with pytest.raises(lab.ImageError, match="no __mcount_loc section") as info:
        Image.load(no_mcount_elf)
    message = str(info.value)
    assert str(no_mcount_elf) in message
    assert "-pg -mfentry -mnop-mcount -mrecord-mcount" in message


# ---- fentry pads ----

def test_every_pad_is_a_function_entry_holding_the_five_byte_nop(image):
    assert PAD_BYTES == bytes.fromhex("0f1f440000") and PAD_SIZE == 5
    for pad in image.pads:
        func = image.function_at(pad.address)
        assert func is not None and func.address == pad.address and func.name == pad.function
        assert image.read(pad.address, PAD_SIZE) == PAD_BYTES, pad.function


def test_pads_are_sorted_and_each_function_has_at_most_one(image):
    addresses = [p.address for p in image.pads]
    assert addresses == sorted(set(addresses))
    assert len({p.function for p in image.pads}) == len(image.pads)


@pytest.mark.parametrize("name", ["capable", "cmdline_proc_show", "pipe_wait_readable", "fault_inject_crash"])
def test_ordinary_kernel_functions_are_traceable(image, name):
    pad = image.pad(name)
    assert pad is not None and pad.address == image.function(name).address


@pytest.mark.parametrize("name", ["schedule", "do_syscall_64", "preempt_schedule_irq", "kgr_task_safe"])
def test_a_notrace_function_has_no_pad(image, name):
    func = image.function(name)
    assert image.pad(name) is None
    assert image.read(func.address, PAD_SIZE) != PAD_BYTES


def test_user_programs_have_no_pads(image):
    assert not any(image.in_user(p.address) for p in image.pads)
    assert image.in_user(image.function("user_cap_main").address)
    assert not image.in_user(image.function("capable").address)


# ---- symbols ----

def test_lookup_returns_none_for_an_unknown_name(image):
    assert image.lookup("no_such_symbol") is None
    assert image.lookup("capable").kind == "func"


def test_an_unknown_symbol_raises_naming_it_and_suggesting_close_names(image):
    with pytest.raises(lab.ImageError, match="'capabl'") as info:
        image.symbol("capabl")
    assert "did you mean" in str(info.value) and "capable" in str(info.value)


def test_function_refuses_a_data_symbol(image):
    with pytest.raises(lab.ImageError, match="'jiffies'.*not a function"):
        image.function("jiffies")


def test_function_at_and_symbolize_name_the_containing_function(image):
    capable = image.function("capable")
    assert image.function_at(capable.address + capable.size - 1).name == "capable"
    assert image.symbolize(capable.address) == "capable"
    assert image.symbolize(capable.address + 5) == "capable+0x5"
    assert image.function_at(0x10) is None
    assert image.symbolize(0x10) == "0x10"


def test_read_returns_image_bytes_and_refuses_addresses_outside_it(image):
    capable = image.function("capable")
    assert image.read(capable.address, 5) == PAD_BYTES
    with pytest.raises(lab.ImageError, match="0x10"):
        image.read(0x10, 4)


# ---- constants, workloads, provenance ----

def test_constants_exported_by_asm_offsets_are_readable(image):
    assert image.const("HC_CONSOLE_NR") == 1          # include/hypercall.h
    assert image.const("TASK_COMM_SIZE") == 16        # TASK_COMM_LEN
    assert image.const("TASK_SIZE") > image.const("TASK_comm")


def test_an_unknown_constant_raises_naming_it(image):
    with pytest.raises(lab.ImageError, match="NO_SUCH_CONST"):
        image.const("NO_SUCH_CONST")
    with pytest.raises(lab.ImageError, match="capable"):
        image.const("capable")  # a function, not an absolute symbol


def test_the_image_lists_its_workloads_with_descriptions(image):
    names = [w.name for w in image.workloads]
    assert names == ["default", "unannotated", "quiet", "hammer", "writeback"]
    assert all(w.description for w in image.workloads)
    assert "pipe-reader" in image.workload("default").description


def test_an_unknown_workload_raises_naming_the_choices(image):
    with pytest.raises(lab.ImageError, match="'nope'") as info:
        image.workload("nope")
    assert "default, unannotated, quiet, hammer, writeback" in str(info.value)


def test_the_image_carries_the_sha256_of_its_sources(image):
    assert re.fullmatch(r"[0-9a-f]{64}", image.source_hash)


def test_system_calls_are_named_from_the_kernels_own_table():
    """sys_call_table's entries are __x64_sys_NAME functions: the names come
    from the image, and the event lines use them instead of numbers."""
    from lab.events import SyscallEntry
    from lab.image import Image
    from lab.viewer.state import describe
    names = Image.load().syscall_names()
    assert (names[0], names[12], names[15]) == ("read", "sethostname", "init_module")
    e = SyscallEntry(0, 100, 1, 12)
    assert describe(e, lambda tid: "cap-user", names) == "syscall sethostname by cap-user"
    assert describe(e, lambda tid: "cap-user") == "syscall 12 by cap-user"     # no table given
