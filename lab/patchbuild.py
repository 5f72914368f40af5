"""patchbuild - compiling a C live patch into a loadable object with the firmware's own flags."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

from .errors import LabError
from .image import FIRMWARE_DIR


class BuildError(LabError):
    """A patch source could not be compiled."""


def firmware_cflags():
    """The flags the kernel was compiled with (firmware/Makefile print-cflags)."""
    if shutil.which("make") is None:
        raise BuildError("make is not installed; install make and gcc, or use the prebuilt objects in patches/")
    proc = subprocess.run(["make", "-s", "-C", str(FIRMWARE_DIR), "print-cflags"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"cannot read the firmware's flags: {proc.stderr.strip()}")
    return proc.stdout.split()


def build_patch(source, output=None, cc="gcc"):
    """Compile source (a .c live patch) into output (default: source with .o).
    Returns the output path."""
    source = pathlib.Path(source)
    if not source.is_file():
        raise BuildError(f"{source}: no such patch source")
    if source.suffix != ".c":
        # gcc would take any other file for linker input and, with -c, write nothing
        raise BuildError(f"{source}: not a C source (.c); give the C source of a live patch")
    if shutil.which(cc) is None:
        raise BuildError(f"{cc} is not installed; install gcc, or use the prebuilt objects in patches/")
    output = pathlib.Path(output) if output else source.with_suffix(".o")
    # Built the way patches/Makefile builds, from the source's own directory
    # with the include path relative to it: the same source gives the same
    # bytes wherever the command is run from (the DWARF names no absolute path).
    where = source.parent.resolve()
    include = os.path.relpath(FIRMWARE_DIR / "include", where)
    # KBUILD_MODNAME: the module's name, as kbuild passes it (a klp
    # module's struct module and pr_fmt() use it)
    cmd = [cc, *firmware_cflags(), f"-I{include}", f"-fdebug-prefix-map={where}=.",
           f'-DKBUILD_MODNAME="{source.stem}"', "-c",
           "-o", str(output.resolve()), source.name]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=where)
    if proc.returncode != 0:
        first = next((line for line in proc.stderr.splitlines() if "error" in line), proc.stderr.strip())
        raise BuildError(f"{source}: does not compile: {first}")
    if not output.is_file():
        raise BuildError(f"{source}: {cc} wrote no {output}; check that it is a C source")
    return output
