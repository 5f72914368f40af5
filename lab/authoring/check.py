"""check - a generated patch tried before it is handed over: it loads, it replaces the expected functions, the explorer finds no violation, and its new code runs and shows."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..errors import LabError

PATCH_AT = 1_000_000          # where the check loads the patch (lab run's default --patch-at)
SIGNAL_AFTER = 200_000        # the fake signal's interval, so the eternal sleeper moves
COMPLETE_WITHIN = 8_000_000   # instructions a transition may take
WINDOW = 2_000_000            # instructions run after completion to see the new code at work
PROBE = 4_000_000             # instructions a workload runs at most while the check looks for the patched functions
PROBE_STEP = 250_000
SCHEDULES = 8                 # schedules the explorer runs
_OWN = ("livepatch:", "kgr:")


@dataclass
class CheckReport:
    """The verdict on one generated patch, with its evidence."""

    workload: str
    expected: list
    loaded: bool = False
    state: str | None = None
    reason: str | None = None
    functions: list = field(default_factory=list)        # (old, new) as the running kernel took them
    entered: dict = field(default_factory=dict)          # new function -> entries in the window
    console_new: list = field(default_factory=list)      # lines only the patched run printed
    console_gone: list = field(default_factory=list)     # lines only the unpatched run printed
    exploration: dict | None = None
    problems: list = field(default_factory=list)

    @property
    def functions_ok(self):
        return sorted(old for old, _new in self.functions) == sorted(self.expected)

    @property
    def ran(self):
        return any(self.entered.values())

    @property
    def visible(self):
        """Whether the run shows the patch: its new code ran and the console
        differs from the same run without the patch."""
        return self.ran and bool(self.console_new or self.console_gone)

    @property
    def passed(self):
        return not self.problems

    def to_dict(self):
        return {
            "workload": self.workload, "passed": self.passed, "loaded": self.loaded, "state": self.state,
            "reason": self.reason, "expected": sorted(self.expected),
            "functions": [{"old": o, "new": n} for o, n in self.functions], "functions_ok": self.functions_ok,
            "entered": dict(sorted(self.entered.items())), "ran": self.ran, "visible": self.visible,
            "console_new": self.console_new, "console_gone": self.console_gone,
            "exploration": self.exploration, "problems": self.problems,
        }


def choose_workload(image, functions):
    """The workload whose run enters most of functions (the kernel's
    symbols) within PROBE instructions, the first such in the image's
    order; and the counts."""
    import lab
    best, best_counts, chosen = None, {}, image.workloads[0].name
    for w in image.workloads:
        counts = Counter()
        with lab.boot(image, workload=w.name) as system:
            for name in functions:
                try:
                    system.ftrace.register_tracer(name, lambda call: counts.update([call.function]))
                except LabError:
                    continue
            while system.clock < PROBE and not all(counts[f] for f in functions):
                system.run(PROBE_STEP)
        score = (len([f for f in functions if counts[f]]), sum(counts.values()))
        if best is None or score > best:
            best, best_counts, chosen = score, dict(counts), w.name
        if score[0] == len(functions):
            break
    return chosen, best_counts


def check_patch(creation, image, *, workload=None, schedules=None):
    """Load creation's module in the lab and look at it (a CheckReport)."""
    expected = creation.replaced()
    if workload is None:
        workload, _counts = choose_workload(image, expected)
    report = CheckReport(workload, expected)
    module = creation.module
    _run(report, image, module, workload)
    if report.loaded and report.state == "complete":
        _explore(report, image, module, workload, schedules or SCHEDULES)
    return report


def _console_tail(system, since):
    return [line for line in system.console[since:] if not line.startswith(_OWN)]


def _run(report, image, module, workload):
    import lab
    from ..livepatch import LivepatchError
    with lab.boot(image, workload=workload, signal_after=SIGNAL_AFTER, observe=True) as system:
        system.run(PATCH_AT - system.clock)
        mark = len(system.console)
        try:
            patch = system.apply_patch(module)
        except LivepatchError as exc:
            report.reason = str(exc)
            report.problems.append(f"the patch does not load: {exc}")
            return
        report.loaded = True
        entered = Counter()
        new_names = {}
        if patch.description is not None:
            for f in patch.description.functions:
                new_names[f.new_name] = f.old_name
                system.ftrace.register_tracer(f.new_name, lambda call: entered.update([call.function]))
        system.run_until_patched(COMPLETE_WITHIN)
        report.state = patch.state.value
        report.reason = patch.reason
        if patch.description is not None:
            report.functions = [(f.old_name, f.new_name) for f in patch.description.functions]
        if patch.state.value != "complete":
            report.problems.append(f"the transition did not complete within {COMPLETE_WITHIN:,} instructions "
                                   f"(the patch is {patch.state.value})")
            return
        system.run(WINDOW)
        end = system.clock
        patched_tail = _console_tail(system, mark)
        report.entered = {n: entered[n] for n in new_names}
        names = {t.tid: t.name for t in system.tasks}
        for v in system.violations():
            d = v.to_dict(names)
            report.problems.append(f"the consistency checker: {d['task']} ({d['tid']}) broke the {d['rule']} rule "
                                   f"at {d['first_mixed_at']:,} ({d['unit']}; old {', '.join(d['old']) or '-'}; "
                                   f"new {', '.join(d['new']) or '-'})")
    with lab.boot(image, workload=workload, signal_after=SIGNAL_AFTER) as reference:
        reference.run(end - reference.clock)
        reference_tail = _console_tail(reference, mark)
    a, b = Counter(patched_tail), Counter(reference_tail)
    report.console_new = [line for line in patched_tail if (a - b)[line]][:20]
    report.console_gone = [line for line in reference_tail if (b - a)[line]][:20]
    if not report.functions_ok:
        report.problems.append(f"the kernel replaced {sorted(o for o, _ in report.functions)}, not the expected "
                               f"{sorted(report.expected)}")
    if not report.ran:
        report.problems.append(f"none of the new functions ran in {WINDOW:,} instructions of workload "
                               f"{workload!r}: the patch cannot be seen at work there (a function that never "
                               "returns, such as a kernel thread's loop, keeps running its old code); "
                               "try another --workload")


def _explore(report, image, module, workload, schedules):
    from ..explore import Plan, explore
    from ..kernel import DEFAULT_QUANTUM
    plan = Plan(patch=str(module), model="kgraft", workload=workload, image=str(image.path),
                seeds=(0, 1), quanta=(DEFAULT_QUANTUM,), patch_ats=(PATCH_AT,), preemptions=1,
                schedules=schedules)
    result = explore(plan)
    report.exploration = {"schedules": result.schedules, "clean": result.clean,
                          "completed": result.completed, "reproducer": result.reproducer,
                          "failure": result.minimal.summary() if result.minimal else None}
    if not result.clean:
        report.problems.append(f"the explorer found a failing schedule: {result.minimal.summary()}; "
                               f"reproduce it with: {result.reproducer}")
