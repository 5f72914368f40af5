"""tree - the firmware's sources before and after a diff, each compilation unit built the way create-diff-object needs it: one section per function and per variable."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..image import FIRMWARE_DIR
from ..patchbuild import BuildError, firmware_cflags
from .errors import AuthoringError

COMPARE_CFLAGS = ("-ffunction-sections", "-fdata-sections")
CACHE_DIR = FIRMWARE_DIR / "build" / "authoring"
_KERNEL_SKIP = {"asm-offsets.c"}      # compiled for its constants only: no code of the running kernel


def _srchash():
    spec = importlib.util.spec_from_file_location("lab_authoring_srchash", FIRMWARE_DIR / "tools" / "srchash.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kernel_sources(root):
    """The compilation units of the kernel proper under a firmware root (user programs are not kernel code)."""
    root = pathlib.Path(root)
    return sorted(p.name for p in root.glob("*.c") if p.name not in _KERNEL_SKIP)


def _gcc(cc="gcc"):
    if shutil.which(cc) is None:
        raise AuthoringError(f"{cc} is not installed; lab patch create compiles the kernel twice and needs gcc and make")
    return subprocess.run([cc, "-dumpfullversion"], capture_output=True, text=True).stdout.strip()


def compile_units(root, units, outdir, cc="gcc", jobs=None):
    """Compile units (file names under root) into outdir with the kernel's
    flags and one section per function and variable; {unit: object path}."""
    root = pathlib.Path(root).resolve()
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        flags = firmware_cflags()
    except BuildError as exc:
        raise AuthoringError(str(exc)) from None
    _gcc(cc)

    def one(unit):
        out = outdir / (pathlib.Path(unit).stem + ".o")
        tmp = out.with_suffix(f".o.{os.getpid()}.tmp")
        cmd = [cc, *flags, *COMPARE_CFLAGS, "-Iinclude", f"-fdebug-prefix-map={root}=.", "-c", "-o", str(tmp), unit]
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if proc.returncode != 0:
            first = next((line for line in proc.stderr.splitlines() if "error" in line), proc.stderr.strip())
            tmp.unlink(missing_ok=True)
            raise AuthoringError(f"{unit} does not compile: {first}")
        os.replace(tmp, out)
        return unit, out

    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
        return dict(pool.map(one, units))


def original_objects(image, cc="gcc"):
    """The kernel's own compilation units built for comparison, cached under
    firmware/build/authoring by the hash of the sources, gcc's version and the
    flags: a second `lab patch create` builds only the patched tree."""
    srchash = _srchash()
    digest = srchash.source_hash(FIRMWARE_DIR)
    if image.source_hash != digest:
        raise AuthoringError(f"{image.path.name} was not built from the sources in {FIRMWARE_DIR} (its note says "
                             f"{(image.source_hash or 'nothing')[:12]}, the sources hash to {digest[:12]}); "
                             "rebuild it with `make -C firmware`: a patch is made for the kernel that runs")
    try:
        flags = firmware_cflags()
    except BuildError as exc:
        raise AuthoringError(str(exc)) from None
    key = hashlib.sha256(f"{digest} {_gcc(cc)} {' '.join(flags)} {' '.join(COMPARE_CFLAGS)}".encode()).hexdigest()
    where = CACHE_DIR / key[:16]
    units = kernel_sources(FIRMWARE_DIR)
    objects = {u: where / (pathlib.Path(u).stem + ".o") for u in units}
    if all(o.is_file() for o in objects.values()):
        return objects
    missing = [u for u, o in objects.items() if not o.is_file()]
    compile_units(FIRMWARE_DIR, missing, where, cc)
    return objects


@dataclass
class PatchedTree:
    """A copy of the firmware's sources with the diff applied."""

    diff: pathlib.Path
    root: pathlib.Path                 # the copy's firmware directory
    changed: list = field(default_factory=list)    # paths under firmware/ whose bytes differ
    added: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    _tmp: object = None

    def cleanup(self):
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def units(self):
        """The kernel compilation units the diff affects: the .c files it
        changes, and every one if it changes a header."""
        all_units = kernel_sources(self.root)
        if any(p.startswith("include/") for p in self.changed):
            return all_units
        return [p for p in self.changed if p in all_units]


_DIFF_PATH = re.compile(r"^\+\+\+ (\S+)", re.M)


def _strip(path):
    return path.split("/", 1)[1] if "/" in path else path


def apply_diff(diff, workdir=None):
    """Copy firmware/ (sources only) into a temporary directory and apply
    diff to it with patch(1); a PatchedTree.  The diff's paths may start at
    the repository (a/firmware/sched.c) or at firmware/ (a/sched.c)."""
    diff = pathlib.Path(diff)
    text = diff.read_text(errors="replace")
    targets = [p for p in _DIFF_PATH.findall(text) if p != "/dev/null"]
    if not targets:
        raise AuthoringError(f"{diff}: not a unified diff (no +++ line); make one with `git diff` or `diff -u`")
    if shutil.which("patch") is None:
        raise AuthoringError("patch(1) is not installed; install it to apply diffs")
    tmp = tempfile.TemporaryDirectory(prefix="lab-create-", dir=workdir)
    top = pathlib.Path(tmp.name)
    root = top / "firmware"
    srchash = _srchash()
    for rel in srchash.source_files(FIRMWARE_DIR):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(FIRMWARE_DIR / rel, root / rel)
    at_repo = all(_strip(p).startswith("firmware/") for p in targets)
    where = top if at_repo else root
    cmd = ["patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-r", "-", "-d", str(where), "-i",
           str(diff.resolve())]
    dry = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True)
    if dry.returncode != 0:
        tmp.cleanup()
        why = " ".join(line.strip() for line in (dry.stdout + dry.stderr).splitlines()
                       if "FAILED" in line or "can't find" in line or "No file" in line or "malformed" in line)
        raise AuthoringError(f"{diff}: does not apply to the firmware's sources ({why or 'patch(1) refused it'}); "
                             "make it against the tree as it is (paths a/firmware/FILE or a/FILE)")
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    tree = PatchedTree(diff, root, _tmp=tmp)
    before = {r.as_posix() for r in srchash.source_files(FIRMWARE_DIR)}
    after = {r.as_posix() for r in srchash.source_files(root)}
    for rel in sorted(before & after):
        if (FIRMWARE_DIR / rel).read_bytes() != (root / rel).read_bytes():
            tree.changed.append(rel)
    tree.added = sorted(after - before)
    tree.removed = sorted(before - after)
    return tree
