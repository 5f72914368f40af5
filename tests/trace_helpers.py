"""Shared helpers of the trace and viewer tests (test_trace, test_viewer): the
recorded scenario (the demo's: the capable() patch, the sleeping pipe reader
moved by the fake signal), recorded once per test session."""
from __future__ import annotations

import json
import pathlib
import tempfile
import zipfile

import lab
from lab.image import FIRMWARE_DIR

CAPABLE = FIRMWARE_DIR.parent / "patches" / "kgr_capable.o"
PATCH_AT = 1_000_000
SIGNAL_AFTER = 1_500_000
LIMIT = 6_000_000         # the transition needs about 1.6e6 with the fake signal at 1.5e6
AFTER = 200_000           # run on past the completion, so the pad reads JMP for a while

_recorded = {}


def boot(record):
    return lab.boot(signal_after=SIGNAL_AFTER, record=record)


def drive(system):
    """The scenario, the same whether the run records or not."""
    system.run(max(PATCH_AT - system.clock, 1))
    system.apply_patch(CAPABLE)
    system.run_until_patched(LIMIT)
    system.run(AFTER)
    return system


def record(path):
    """Run the scenario with record=True and save the trace to path; the system."""
    system = drive(boot(record=True))
    system.save_trace(path)
    return system


def recorded():
    """(path, digest) of the scenario's trace, recorded once per process."""
    if "path" not in _recorded:
        directory = pathlib.Path(tempfile.mkdtemp(prefix="lab-trace-tests-"))
        path = directory / "scenario.trace"
        system = record(path)
        _recorded.update(path=path, digest=system.digest, end=system.clock)
    return _recorded["path"], _recorded["digest"]


def rewrite(src, dst, header=None, drop=()):
    """Copy a trace (a zip) with its header.json changed by header(dict) and members dropped."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            if item.filename in drop:
                continue
            data = zin.read(item.filename)
            if item.filename == "header.json" and header is not None:
                h = json.loads(data)
                header(h)
                data = json.dumps(h).encode()
            zout.writestr(item, data)
    return dst
