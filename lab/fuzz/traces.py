"""fuzz.traces - damaged traces against the trace loader and the replay's self-check, by a seeded fuzzer.

The base is a small valid trace (or the one given): the default workload
booted, patches/kgr_capable.o applied at 1e6 instructions, the transition
completed with the fake signal, about 2.7e6 instructions in all.  A case is
one damaged copy of it, a pure function of (seed, number), of one kind (each
run of 26 cases holds every kind, the forgeries several times):

  zip-flip        bytes flipped anywhere in the file
  member-flip     bytes flipped inside one member, re-zipped with a valid CRC
                  (the zip layer cannot tell; the member hashes can)
  truncate        the file cut short
  member-drop, member-dup, member-rename, member-extra
                  a member missing, twice, under another name, or one more
  event-edit      an event's clock or another field changed, every hash
                  recomputed (a consistent forgery: replay must catch it)
  input-edit      an action or a hypercall answer changed, hashes recomputed
  record-damage   a key deleted, a value of the wrong type, a huge or a
                  negative number, in any record or header field, hashes
                  recomputed (the schema check must catch it)
  header-forgery  a header field changed, hashes recomputed
  zip-bomb        a member that declares, or inflates to, far more than a
                  trace can hold
  empty, directory, not-zip

The labels that lab.trace's threat model leaves to a forger (why a task
migrated, a patch state and its detail, the livepatch's log lines, a call's
version, the stack a migration lists, the functions a transition names) are
not given other values of their type: that is not damage the trace can tell.
Damage to their type or presence is.

Each case is loaded and replayed to three steps of the original (its start,
middle and end) and gets one outcome:

  refused       a TraceError whose message is one line
  identical     accepted, and the replayed state at every probed step (clock,
                registers, RAM, the kernel's state, the tasks), the digest and
                the events equal the original's: the damage hit bytes nothing
                reads

or a failure:

  silent-wrong  accepted, but something probed differs from the original
  crash         any other exception, or a TraceError of more than one line
  hang          the replay ran more instructions than verifying the trace and
                seeking to the probes takes (the work is counted, not timed)

`python -m lab.fuzz.traces --cases N --seed S` prints one line per outcome
and exits 1 on any failure; `--case I` replays one case of the seed.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import pathlib
import random
import shutil
import struct
import sys
import tempfile
import time
import traceback
import zipfile
import zlib

from ..image import FIRMWARE_DIR, Image
from ..trace import MEMBERS, Trace, TraceError, seal

GOOD = FIRMWARE_DIR.parent / "patches" / "kgr_capable.o"
PATCH_AT = 1_000_000
SIGNAL_AFTER = 1_500_000
LIMIT = 6_000_000
AFTER = 200_000

OUTCOMES = ("refused", "identical")
FAILURES = ("silent-wrong", "crash", "hang")

KINDS = {          # kind -> cases of it in every deck of DECK cases
    "zip-flip": 2, "member-flip": 3, "truncate": 1, "member-drop": 1, "member-dup": 1, "member-rename": 1,
    "member-extra": 1, "event-edit": 4, "input-edit": 1, "record-damage": 3, "header-forgery": 4,
    "zip-bomb": 1, "empty": 1, "directory": 1, "not-zip": 1,
}
DECK = sum(KINDS.values())

# What lab.trace cannot check beyond its type (see its threat model).
LABELS = {"migrated": {"stack"}, "patch": {"name", "state", "detail"}, "transition-start": {"patch", "functions"},
          "transition-join": {"patch", "module", "functions"},
          "call": {"version", "patch"}}

_base = {}


def record_base(directory):
    """Record the base scenario into directory; the path of its trace."""
    import lab
    path = pathlib.Path(directory) / "base.trace"
    with lab.boot(signal_after=SIGNAL_AFTER, record=True) as system:
        system.run(PATCH_AT - system.clock)
        system.apply_patch(GOOD)
        system.run_until_patched(LIMIT)
        system.run(AFTER)
        system.save_trace(path)
    return path


class Base:
    """The valid trace the cases damage: its bytes, members and what a replay shows of it."""

    def __init__(self, path, image):
        self.path = pathlib.Path(path)
        self.image = image
        self.raw = self.path.read_bytes()
        with zipfile.ZipFile(self.path) as z:
            self.members = {name: z.read(name) for name in z.namelist()}
        self.header = json.loads(self.members["header.json"])
        trace = Trace.load(self.path, image=image)
        self.steps = (trace.start, (trace.start + trace.end) // 2, trace.end)
        self.events = [json.loads(line) for line in self.members["events.jsonl"].decode().split("\n") if line]
        self.actions = json.loads(self.members["actions.json"])
        self.answers = json.loads(self.members["answers.json"])
        self.probe, work = probe(trace, self.steps)
        # verifying once and seeking to each probe; twice that is plenty
        self.bound = 2 * work + 2 * trace.header["quantum"] * 64
        self.lab_consoles = {i for i, e in enumerate(self.events)
                             if e["kind"] == "console" and e["text"].startswith("livepatch")}


def probe(trace, steps):
    """(what a replay shows of a trace at steps, the instructions it replayed)."""
    states = []
    rp = trace.replayer()
    try:
        for step in steps:
            rp.seek(step)
            m, k = rp.machine, rp.kernel
            states.append({"clock": rp.clock, "regs": m.regs(), "ram": hashlib.sha256(bytes(m.ram)).hexdigest(),
                           "kernel": json.loads(json.dumps(k.snapshot_state())), "tasks": rp.tasks()})
    finally:
        rp.close()
        trace.close()
    events = hashlib.sha256(json.dumps([e.to_dict() for e in trace.events]).encode()).hexdigest()
    return {"digest": trace.header["digest"], "end": trace.end, "events": events, "states": states}, trace.replayed


# ---- making a case ----

def _zip(members, order=None):
    """A zip of (name, bytes) pairs, as the recorder lays it out."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, data in members:
            kind = zipfile.ZIP_STORED if name == "keyframes.bin" else zipfile.ZIP_DEFLATED
            z.writestr(name, data, compress_type=kind)
    return out.getvalue()


def _sealed(header, members):
    """The trace bytes for a header and members with every hash recomputed."""
    header = seal(header, {n: members[n] for n in MEMBERS[1:]})
    data = dict(members, **{"header.json": json.dumps(header, sort_keys=True, separators=(",", ":")).encode()})
    return _zip([(n, data[n]) for n in MEMBERS])


def _flip(rng, data, count=None):
    data = bytearray(data)
    for _ in range(count or rng.choice((1, 1, 1, 2, 4, 16))):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8) if rng.random() < 0.7 else rng.randrange(1, 256)
    return bytes(data)


def _other_value(rng, v, name=""):
    """Another value of v's type (an in-schema edit)."""
    for _ in range(8):
        new = _another(rng, v, name)
        if new != v or type(new) is not type(v):
            return new
    return new


def _another(rng, v, name):
    if type(v) is bool:
        return not v
    if type(v) is int:
        if name in ("at", "seq", "events", "offset", "length", "index", "end"):
            return max(0, v + rng.choice((-1, 1, -3, 7, 1000, -1000, 20_000)))
        return rng.choice((v + 1, v - 1, v ^ 1, v * 2 + 1, 0, rng.randrange(0, 1 << 16)))
    if type(v) is str:
        return rng.choice((v + "x", v[:-1], v.upper() if v.upper() != v else v + "!", ""))
    if v is None:
        return 0
    if type(v) is float:
        return v + 1.0
    if type(v) is list:
        if v and rng.random() < 0.5:
            v = list(v)
            i = rng.randrange(len(v))
            v[i] = _other_value(rng, v[i], name)
            return v
        return v[:-1] if v else [0]
    if type(v) is dict:
        return {}
    return v


def _damage_value(rng, v):
    """A value a record cannot hold there: another type, a huge or a negative number."""
    choices = [x for x in ([], {}, None, "x", True, 1.5, 2 ** 64, 2 ** 70, 10 ** 30, -1, -(2 ** 63), -(2 ** 70),
                           [v], str(v)) if x != v or type(x) is not type(v)]
    return rng.choice(choices)


def _walk(rng, value, path=()):
    """A random leaf path into a JSON value (one child chosen per level)."""
    while isinstance(value, (dict, list)) and value:
        key = rng.choice(sorted(value)) if isinstance(value, dict) else rng.randrange(len(value))
        path += (key,)
        value = value[key]
        if rng.random() < 0.15:
            break
    return path


def _get(value, path):
    for key in path:
        value = value[key]
    return value


def _set(value, path, new):
    _get(value, path[:-1])[path[-1]] = new


def _delete(value, path):
    parent = _get(value, path[:-1])
    del parent[path[-1]]


def make_case(base, seed, number, directory):
    """(path, description) of case `number` of `seed`, written under directory."""
    # every run of DECK consecutive cases holds each kind as often as KINDS says, in a seeded order
    deck = [kind for kind, count in KINDS.items() for _ in range(count)]
    random.Random(f"lab-trace-fuzz:{seed}:deck:{number // DECK}").shuffle(deck)
    kind = deck[number % DECK]
    rng = random.Random(f"lab-trace-fuzz:{seed}:{number}")
    path = pathlib.Path(directory) / f"case-{seed}-{number}.trace"
    members = dict(base.members)
    what = kind
    if kind == "zip-flip":
        data = _flip(rng, base.raw)
        what = f"zip-flip of the file's bytes ({sum(a != b for a, b in zip(data, base.raw))} changed)"
    elif kind == "member-flip":
        name = rng.choice(MEMBERS)
        members[name] = _flip(rng, members[name])
        data = _zip([(n, members[n]) for n in MEMBERS])
        what = f"member-flip in {name}, re-zipped with a valid CRC"
    elif kind == "truncate":
        cut = rng.choice((rng.randrange(len(base.raw)), len(base.raw) - rng.randrange(1, 64), rng.randrange(64)))
        data = base.raw[:cut]
        what = f"truncate to {cut} of {len(base.raw)} bytes"
    elif kind in ("member-drop", "member-dup", "member-rename", "member-extra"):
        name = rng.choice(MEMBERS)
        pairs = [(n, members[n]) for n in MEMBERS]
        if kind == "member-drop":
            pairs = [p for p in pairs if p[0] != name]
        elif kind == "member-dup":
            pairs.append((name, members[name] if rng.random() < 0.5 else _flip(rng, members[name])))
        elif kind == "member-rename":
            new = rng.choice((name.upper(), name + ".bak", "x/" + name, name.replace(".", "_")))
            pairs = [(new if n == name else n, d) for n, d in pairs]
            name = f"{name} -> {new}"
        else:
            name = rng.choice(("notes.txt", "header.json.orig", "../evil", "keyframes2.bin"))
            pairs.append((name, b"extra"))
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # zipfile warns of a duplicate name
            data = _zip(pairs)
        what = f"{kind} {name}"
    elif kind == "event-edit":
        header = json.loads(members["header.json"])
        events = [dict(e) for e in base.events]
        i = rng.randrange(len(events))
        e = events[i]
        fields = [k for k in e if k not in ("kind",) and k not in LABELS.get(e["kind"], ())]
        if i in base.lab_consoles:
            fields = ["at"]
        field = rng.choice(fields)
        old = e[field]
        e[field] = _other_value(rng, old, field)
        members["events.jsonl"] = "\n".join(json.dumps(x, separators=(",", ":")) for x in events).encode()
        data = _sealed(header, members)
        what = f"event-edit: event {i} ({e['kind']}) {field} {_short(old)} -> {_short(e[field])}, hashes recomputed"
    elif kind == "input-edit":
        header = json.loads(members["header.json"])
        name = rng.choice(("actions.json", "answers.json"))
        records = json.loads(members[name])
        if not records:
            records, name = json.loads(members["actions.json"]), "actions.json"
        i = rng.randrange(len(records))
        p = _walk(rng, records[i])
        old = _get(records[i], p) if p else records[i]
        if p:
            _set(records[i], p, _other_value(rng, old, "at" if p == (0,) else ""))
        else:
            records[i] = _other_value(rng, old)
        members[name] = json.dumps(records).encode()
        data = _sealed(header, members)
        what = f"input-edit: {name} record {i} at {list(p)}: {_short(old)} -> {_short(_get(records[i], p))}, " \
               "hashes recomputed"
    elif kind == "record-damage":
        header = json.loads(members["header.json"])
        target = rng.choice(("events.jsonl", "events.jsonl", "actions.json", "answers.json", "header.json"))
        if target == "events.jsonl":
            records = [dict(e) for e in base.events]
            root, i = records, rng.randrange(len(records))
            p = (i,) + _walk(rng, records[i])
        elif target == "header.json":
            root = {k: v for k, v in header.items() if k not in ("members", "sha256")}
            p = _walk(rng, root)
        else:
            root = json.loads(members[target])
            i = rng.randrange(len(root)) if root else None
            p = () if i is None else (i,) + _walk(rng, root[i])
        if not p:
            root = _damage_value(rng, root)
            how = "the whole member replaced"
        elif isinstance(_get(root, p[:-1]), dict) and rng.random() < 0.35:
            _delete(root, p)
            how = f"{_path(p)} deleted"
        else:
            old = _get(root, p)
            new = _damage_value(rng, old)
            _set(root, p, new)
            how = f"{_path(p)}: {_short(old)} -> {_short(new)}"
        if target == "events.jsonl":
            members[target] = "\n".join(json.dumps(x, separators=(",", ":")) for x in root).encode()
        elif target == "header.json":
            header = dict(root) if isinstance(root, dict) else root
        else:
            members[target] = json.dumps(root).encode()
        if isinstance(header, dict):
            data = _sealed(header, members)
        else:
            data = _zip([("header.json", json.dumps(header).encode())] + [(n, members[n]) for n in MEMBERS[1:]])
        what = f"record-damage in {target}: {how}, hashes recomputed"
    elif kind == "header-forgery":
        header = json.loads(members["header.json"])
        root = {k: v for k, v in header.items() if k not in ("members", "sha256")}
        # half of them in the keyframes: what a seek starts from
        p = ("keyframes",) + _walk(rng, root["keyframes"]) if rng.random() < 0.5 else _walk(rng, root)
        old = _get(root, p)
        new = _other_value(rng, old, p[-1] if isinstance(p[-1], str) else "")
        _set(root, p, new)
        data = _sealed(root, members)
        what = f"header-forgery: {_path(p)}: {_short(old)} -> {_short(new)}, hashes recomputed"
    elif kind == "zip-bomb":
        data, what = _bomb(rng, base, members)
    elif kind == "empty":
        data = b""
    elif kind == "directory":
        path.mkdir()
        (path / "header.json").write_bytes(members["header.json"])
        return path, "directory: a directory named like the trace"
    else:
        data = rng.choice((rng.randbytes(rng.randrange(1, 4096)), members["header.json"],
                           b"PK\x05\x06" + bytes(18), _zip([("readme.txt", b"not a trace")])))
        what = "not-zip: other bytes where the trace should be"
    path.write_bytes(data)
    return path, what


def _bomb(rng, base, members):
    """A member declaring a size far above what a trace holds, or inflating
    past the size it declares."""
    name = rng.choice(MEMBERS)
    how = rng.choice(("declares", "inflates", "huge-header"))
    if how == "huge-header":
        # a real bomb: header.json inflating to 80 MiB of spaces (80 KiB in the file)
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        chunk = b" " * (1 << 20)
        body = b"".join(comp.compress(chunk) for _ in range(80)) + comp.flush()
        data = raw_zip([("header.json", body, 80 << 20, zlib.crc32(chunk * 80), 8)]
                        + [(n, members[n], len(members[n]), zlib.crc32(members[n]), 0) for n in MEMBERS[1:]])
        return data, "zip-bomb: header.json inflates to 80 MiB"
    entries = []
    for n in MEMBERS:
        body = members[n]
        size = len(body)
        if n == name:
            if how == "declares":
                size = 0xFFFFFFF0         # the zip entry lies: 4 GiB
            else:
                body = zlib.compress(members[n] + b"\0" * (8 << 20), 9)[2:-4]   # 8 MiB more than declared
                entries.append((n, body, size, zlib.crc32(members[n]), 8))
                continue
        entries.append((n, body, size, zlib.crc32(body if n != name else members[n]), 0))
    return raw_zip(entries), f"zip-bomb: {name} {how} far more than the header says"


def raw_zip(entries):
    """A zip built by hand from (name, bytes as stored, declared size, crc,
    method 0 or 8): the sizes and CRCs it declares may lie, names may repeat."""
    out = io.BytesIO()
    central = []
    for name, body, size, crc, method in entries:
        offset = out.tell()
        n = name.encode()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc & 0xFFFFFFFF, len(body),
                              size, len(n), 0) + n + body)
        central.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc & 0xFFFFFFFF,
                                   len(body), size, len(n), 0, 0, 0, 0, 0, offset) + n)
    start = out.tell()
    for c in central:
        out.write(c)
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), out.tell() - start, start, 0))
    return out.getvalue()


def _path(p):
    return "".join(f"[{k}]" if isinstance(k, int) else (f".{k}" if i else str(k)) for i, k in enumerate(p))


def _short(v):
    text = json.dumps(v) if not isinstance(v, bytes) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


# ---- judging a case ----

def judge(base, path):
    """(outcome, detail) of loading and replaying a damaged trace."""
    trace = None
    try:
        trace = Trace.load(path, image=base.image)
        got, work = probe(trace, base.steps)
    except TraceError as exc:
        if trace is not None and trace.replayed > base.bound:
            return "hang", f"refused only after {trace.replayed:,} instructions replayed: {exc}"
        text = str(exc)
        if "\n" in text or not text.strip():
            return "crash", f"a TraceError of {text.count(chr(10)) + 1} lines: {text!r}"
        return "refused", text
    except Exception as exc:     # noqa: BLE001 - any other exception is the failure being looked for
        return "crash", f"{type(exc).__name__}: {exc} | " + \
            " <- ".join(f"{f.name}:{f.lineno}" for f in traceback.extract_tb(exc.__traceback__)[-4:])
    finally:
        if trace is not None:
            trace.close()
    if work > base.bound:
        return "hang", f"{work:,} instructions replayed, more than the {base.bound:,} the original needs"
    if got != base.probe:
        diff = [k for k in got if got[k] != base.probe[k]]
        if "states" in diff:
            at = next(i for i, (a, b) in enumerate(zip(got["states"], base.probe["states"])) if a != b) \
                if len(got["states"]) == len(base.probe["states"]) else 0
            diff = [k for k in diff if k != "states"] + [f"the state at step {base.steps[at]:,}"]
        return "silent-wrong", f"accepted, but {', '.join(diff)} differ from the original's"
    return "identical", "accepted; every probed state is the original's"


def fuzz_traces(n, seed=0, trace_path=None, progress=None, *, cases=None, keep_failures=None):
    """Run n damaged traces (or the given case numbers) of seed against
    Trace.load and replay.  Returns {"cases", "seed", "outcomes": {outcome:
    count}, "failures": [{"case", "kind", "why", "detail", "reproducer"}],
    "trace", "seconds"}.  progress(done, total, outcome) after each case."""
    start = time.monotonic()
    image = Image.load(None)
    work = pathlib.Path(tempfile.mkdtemp(prefix="lab-fuzz-traces-"))
    try:
        if trace_path is None:
            if "path" not in _base or not _base["path"].exists():
                _base["path"] = record_base(tempfile.mkdtemp(prefix="lab-fuzz-base-"))
            trace_path = _base["path"]
        base = Base(trace_path, image)
        numbers = list(cases) if cases is not None else list(range(n))
        outcomes = {k: 0 for k in OUTCOMES + FAILURES}
        failures = []
        for done, number in enumerate(numbers, 1):
            path, what = make_case(base, seed, number, work)
            outcome, detail = judge(base, path)
            outcomes[outcome] += 1
            if outcome in FAILURES:
                where = f" --trace {trace_path}" if trace_path != _base.get("path") else ""
                failures.append({"case": number, "kind": what.split(":")[0].split(" ")[0], "why": outcome,
                                 "detail": f"{what}: {detail}",
                                 "reproducer": f"python -m lab.fuzz.traces --seed {seed} --case {number}{where} "
                                               f"({what})"})
                if keep_failures is not None:
                    pathlib.Path(keep_failures).mkdir(parents=True, exist_ok=True)
                    if path.is_file():
                        shutil.copy(path, pathlib.Path(keep_failures) / path.name)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            if progress is not None:
                progress(done, len(numbers), outcome)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"cases": len(numbers), "seed": seed, "outcomes": {k: v for k, v in outcomes.items() if v},
            "failures": failures, "trace": str(trace_path), "seconds": time.monotonic() - start}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lab.fuzz.traces", description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=60, metavar="N", help="damaged traces (default 60)")
    p.add_argument("--seed", type=int, default=0, metavar="S")
    p.add_argument("--case", type=int, action="append", metavar="I",
                   help="only case I of the seed (repeatable): a failure's reproducer")
    p.add_argument("--trace", metavar="FILE", help="damage this trace instead of recording the base scenario")
    p.add_argument("--save-failures", metavar="DIR", help="keep the damaged files of failing cases in DIR")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    args = p.parse_args(argv)
    if args.cases < 0:
        p.error("--cases must be 0 or more")

    def progress(done, total, outcome):
        if args.verbose:
            print(f"{done}/{total} {outcome}", file=sys.stderr)

    result = fuzz_traces(args.cases, args.seed, args.trace, progress, cases=args.case,
                         keep_failures=args.save_failures)
    print(f"traces: {result['cases']} cases, seed {args.seed}, {result['seconds']:.0f} s")
    for outcome in OUTCOMES + FAILURES:
        print(f"  {outcome:<13} {result['outcomes'].get(outcome, 0):>6,}")
    for f in result["failures"]:
        print(f"  FAILURE {f['why']}: {f['detail']}")
        print(f"    reproduce: {f['reproducer']}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
