"""report - the JSON report of a run (schema 1, documented in the README)."""
from __future__ import annotations

from . import events as ev

SCHEMA = 1


def task_record(task):
    rec = {
        "tid": task.tid,
        "name": task.name,
        "kind": task.kind,
        "state": "oopsed" if task.oopsed else task.state.value,
        "universe": "old",
        "migrated_at": None,
        "migrated_by": None,
        "syscalls": task.syscalls,
        "switches": task.switches,
        "iterations": task.iterations,
        "signals": task.signals,
        "sleeps_in": task.sleeps_in() if task.state.value == "sleeping" else None,
    }
    return rec


def build_report(system):
    k = system.kernel
    log = k.log
    return {
        "schema": SCHEMA,
        "model": "kgraft",
        "workload": k.workload,
        "seed": k.seed,
        "quantum": k.quantum,
        "instructions": system.clock,
        "digest": log.digest,
        "events": len(log),
        "tasks": [task_record(t) for t in k.tasks],
        "patches": [],
        "signals": [{"tid": e.tid, "sig": e.sig, "fake": e.fake, "at": e.at} for e in log.of(ev.Signal)],
        "violations": [],
        "oopses": [{"tid": e.tid, "reason": e.reason, "address": e.address, "rip": e.rip,
                    "where": e.where, "at": e.at, "code": list(e.code)} for e in log.of(ev.Oops)],
        "panic": k.panicked,
        "console": k.console,
    }
