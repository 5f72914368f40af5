"""Shared helpers of the trace and viewer tests (test_trace, test_viewer): the
recorded scenario (the demo's: the capable() patch, the sleeping pipe reader
moved by the fake signal), recorded once per test session."""
from __future__ import annotations

import json
import pathlib
import tempfile
import zipfile

import lab
import lab.events
import lab.trace
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


def members(path):
    """(header dict, {member name: bytes}) of a trace file."""
    with zipfile.ZipFile(path) as z:
        data = {name: z.read(name) for name in z.namelist()}
    return json.loads(data.pop("header.json")), data


def digest_of(events):
    """The digest of events given as dicts (as events.jsonl holds them)."""
    log = lab.events.EventLog()
    log.events = [lab.events.from_dict(e) for e in events]
    return log.digest


def rewrite(src, dst, header=None, drop=(), edit=None, events=None, seal=True):
    """Copy a trace (a zip) with its header.json changed by header(dict), its
    events by events(list of dicts) (the header's digest following them), its
    other members by edit(name, bytes) -> bytes, and members dropped; with
    seal, the header's member hashes and its own hash are recomputed, as a
    forger who knows the format would."""
    head, data = members(src)
    if events is not None:
        listed = [json.loads(line) for line in data["events.jsonl"].decode().split("\n")]
        events(listed)
        data["events.jsonl"] = "\n".join(json.dumps(e, separators=(",", ":")) for e in listed).encode()
        head["digest"] = digest_of(listed)
    if header is not None:
        header(head)
    if edit is not None:
        data = {name: edit(name, blob) for name, blob in data.items()}
    if seal:
        head = lab.trace.seal(head, data)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, blob in [("header.json", json.dumps(head).encode())] + list(data.items()):
            if name not in drop:
                zout.writestr(name, blob)
    return dst
