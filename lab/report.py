"""report - the JSON report of a run (schema 1, documented in the README)."""
from __future__ import annotations

from . import events as ev
from .kernel import TaskState
from .livepatch import IRQ

SCHEMA = 1


def _universe(system, task):
    """(universe, migrated_at, migrated_by) with respect to the latest transition."""
    lp = system.livepatch
    t = lp.transition or lp.last_transition
    if task.state in (TaskState.DEAD, TaskState.UNUSED):
        return None, None, None      # gone: no transition waits for it
    if t is None:
        return "old", None, None
    # the universe and why the task got there, as the guest keeps them
    at_target = task.kgr_universe == t.target
    if not at_target:
        return "old", None, None
    mig = t.migrated.get(task.tid)
    by = t.migrated_by(task.tid)
    if by in ("boot", "fork"):
        return "new", None, by       # born in it: created after the patch was applied
    return "new", (mig.at if mig else None), (by if mig else None)


def task_record(system, task):
    universe, at, by = _universe(system, task)
    sleeping = task.state == TaskState.SLEEPING
    return {
        "tid": task.tid,
        "name": task.name,
        "kind": task.kind,
        "state": "oopsed" if task.oopsed else task.state.value,
        "universe": universe,
        "migrated_at": at,
        "migrated_by": by,
        "syscalls": task.syscalls,
        "switches": task.switches,
        "iterations": task.iterations,
        "signals": task.signals,
        "sleeps_in": task.sleeps_in() if sleeping else None,
    }


def patch_record(patch):
    d = patch.description
    return {
        "name": patch.name,
        "module": patch.module.path.name,
        "state": patch.state.value,
        "started_at": patch.started_at,
        "completed_at": patch.completed_at,
        # the kernel's and those of its module objects whose module is loaded
        "functions": [{"old": f.old_name, "new": f.new_name} for f in patch.functions()],
        "skipped": list(d.skipped) if d else [],
        "replace_all": bool(d and d.replace_all),
        "replaced_by": patch.replaced_by,
        "forced": patch.forced,
        "reason": patch.reason,
    }


def transition_record(system):
    lp = system.livepatch
    t = lp.transition
    if t is None:
        return None
    return {
        "patch": t.patch.name,
        "direction": "patching" if t.target == 1 else "unpatching",
        "started_at": t.started_at,
        "irq_universe": "new" if t.irq_universe() == t.target else "old",
        "pending": [{"tid": task.tid, "name": task.name, "sleeps_in": where}
                    for task, where in lp.pending()],
    }


def violations(system):
    """The checker's findings, when the run was observed; else []."""
    if system.observer is None:
        return []
    names = {t.tid: t.name for t in system.tasks}
    return [v.to_dict(names) for v in system.violations()]


def build_report(system):
    k = system.kernel
    log = k.log
    irq = None
    t = system.livepatch.transition or system.livepatch.last_transition
    if t is not None and IRQ in t.migrated:
        irq = {"migrated_at": t.migrated[IRQ].at, "migrated_by": t.migrated[IRQ].by}
    return {
        "schema": SCHEMA,
        "model": system.livepatch.model,
        "workload": k.workload,
        "seed": k.seed,
        "quantum": k.quantum,
        "instructions": system.clock,
        "digest": log.digest,
        "events": len(log),
        "tasks": [task_record(system, t) for t in k.tasks],
        "interrupts": irq,
        "patches": [patch_record(p) for p in system.livepatch.patches],
        "transition": transition_record(system),
        "signals": [{"tid": e.tid, "sig": e.sig, "fake": e.fake, "at": e.at} for e in log.of(ev.Signal)],
        "violations": violations(system),
        "stopped_instructions": system.livepatch.stopped_instructions,
        "stop_attempts": [{"at": at, "clean": clean, "frames": frames, "cost": cost, "blocker": blocker}
                          for at, clean, frames, cost, blocker in system.livepatch.stop_attempts],
        "taints": list(system.livepatch.taints),
        "oopses": [{"tid": e.tid, "reason": e.reason, "address": e.address, "rip": e.rip,
                    "where": e.where, "at": e.at, "code": list(e.code)} for e in log.of(ev.Oops)],
        "panic": k.panicked,
        "console": k.console,
    }
