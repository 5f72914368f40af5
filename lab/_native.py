"""_native - the lab's one piece of host C (lab/_pages.c), compiled on first use.

pages() returns the compiled lab_copy_changed() as a ctypes function, or
None where it cannot be had (no C compiler, a failed build, or LAB_NATIVE=0
in the environment): the callers then take their Python path, which does the
same (tests run both).  The library is built once per machine and source,
into $XDG_CACHE_HOME/kgraft-lab (~/.cache/kgraft-lab), named by the
source's sha256, and moved into place whole, so processes that build it at
the same moment (a Dask cluster's workers) never load half a file; where
that directory cannot be written, a temporary one serves this process.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

SOURCE = pathlib.Path(__file__).with_name("_pages.c")
_UNSET = object()
_pages = _UNSET


def _cache_dirs():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    yield pathlib.Path(base) / "kgraft-lab"
    yield pathlib.Path(tempfile.gettempdir()) / f"kgraft-lab-{os.getuid()}"


def _build(source, again=False):
    """The library built from source: the cached one, or one built now (again:
    built now whatever is cached).  None without a working compiler."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        return None
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    for folder in _cache_dirs():
        lib = folder / f"pages-{digest}.so"
        if lib.exists() and not again:
            return lib
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, partial = tempfile.mkstemp(suffix=".so", dir=folder)
            os.close(fd)
        except OSError:
            continue
        try:
            done = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", partial, str(source)],
                                  capture_output=True, timeout=120)
            if done.returncode != 0:
                return None
            os.replace(partial, lib)
            return lib
        except (OSError, subprocess.SubprocessError):
            continue
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    return None


def pages():
    """lab_copy_changed(ram, copy, runs, nruns, code, ncode, drops, max) -> n, or None."""
    global _pages
    if _pages is _UNSET:
        _pages = None
        if os.environ.get("LAB_NATIVE", "1") != "0" and SOURCE.exists():
            fn = _load(_build(SOURCE))
            if fn is None:
                # a cached library that does not load (cut short, another
                # machine's) is built again, once
                fn = _load(_build(SOURCE, again=True))
            if fn is not None:
                p, n = ctypes.c_void_p, ctypes.c_long
                fn.argtypes = [p, p, p, n, p, n, p, n]
                fn.restype = n
                _pages = fn
    return _pages


def _load(lib):
    if lib is None:
        return None
    try:
        return ctypes.CDLL(str(lib)).lab_copy_changed
    except (OSError, AttributeError):
        return None
