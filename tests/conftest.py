"""Fixtures shared by the lab's tests: the image, booted systems, the CLI, bad inputs."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import shutil
import sys
from dataclasses import dataclass

import pytest

import lab
from lab import cli
from lab.image import DEFAULT_IMAGE, FIRMWARE_DIR

SETTLE = 500_000  # enough for every task of every workload to start and the reader to fall asleep


def pytest_runtest_setup(item):
    if item.get_closest_marker("gcc") and not (shutil.which("gcc") and shutil.which("make")):
        pytest.skip("needs gcc and make")


# ---- the image and booted systems ----

@pytest.fixture(scope="session")
def image():
    """The committed kernel image, parsed once."""
    return lab.Image.load()


@pytest.fixture
def booted(image):
    """A system straight out of lab.boot(): not one instruction run yet."""
    return lab.boot(image)


@pytest.fixture
def settled(image):
    """The default workload after SETTLE instructions: every task has started,
    the pipe reader sleeps in its read()."""
    system = lab.boot(image)
    system.run(SETTLE)
    return system


@pytest.fixture(scope="session")
def firmware_dir():
    return FIRMWARE_DIR


@pytest.fixture(scope="session")
def srchash():
    """firmware/tools/srchash.py, imported from its file."""
    path = FIRMWARE_DIR / "tools" / "srchash.py"
    spec = importlib.util.spec_from_file_location("lab_firmware_srchash", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- files that are not kernel images ----

@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "somefile.txt"
    path.write_text("this is not a kernel\n")
    return path


@pytest.fixture
def truncated_elf(tmp_path):
    path = tmp_path / "truncated.elf"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00" + b"\0" * 8)
    return path


@pytest.fixture
def program_elf(tmp_path):
    """An ordinary user-space program (a copy of /bin/true): ELF, but no kernel."""
    src = pathlib.Path("/bin/true")
    if not src.is_file() or src.read_bytes()[:4] != b"\x7fELF":
        pytest.skip("/bin/true is not an ELF file here")
    path = tmp_path / "true"
    shutil.copyfile(src, path)
    return path


@pytest.fixture
def no_mcount_elf(tmp_path):
    """The kernel image with its __mcount_loc section renamed: a valid x86-64
    executable that lists no ftrace pads."""
    import struct
    data = bytearray(DEFAULT_IMAGE.read_bytes())
    # the section header string table's own copy (a module image the kernel
    # carries has one too): e_shoff, e_shentsize, e_shstrndx from the header
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, _shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    strtab_off, strtab_size = struct.unpack_from("<QQ", data, shoff + shstrndx * shentsize + 0x18)
    table = bytes(data[strtab_off:strtab_off + strtab_size])
    assert table.count(b"__mcount_loc\0") == 1, "the section name string is expected once in .shstrtab"
    at = strtab_off + table.index(b"__mcount_loc\0")
    data[at:at + 13] = b"__mcount_xxx\0"
    path = tmp_path / "nomcount.elf"
    path.write_bytes(bytes(data))
    return path


# ---- the command line ----

@dataclass
class CliResult:
    status: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)

    @property
    def error_lines(self):
        return [line for line in self.err.splitlines() if line.startswith("lab: error:")]


@pytest.fixture
def run_lab(capsys, monkeypatch):
    """Run `lab ARGS...` in this process (lab.cli.main); returns status, stdout, stderr.
    Usage errors found by argparse leave through SystemExit, which is caught here."""
    monkeypatch.setenv("COLUMNS", "200")  # rich tables must not truncate what the tests look for

    def run(*argv):
        capsys.readouterr()
        try:
            status = cli.main([str(a) for a in argv])
        except SystemExit as exc:
            status = exc.code
        out, err = capsys.readouterr()
        return CliResult(status, out, err)

    return run


@pytest.fixture(scope="session")
def lab_script():
    """The `lab` console script installed next to this Python."""
    path = pathlib.Path(sys.executable).parent / "lab"
    assert path.is_file(), f"the lab console script is not installed at {path}; pip install -e ."
    return path
