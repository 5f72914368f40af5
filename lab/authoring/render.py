"""render - what lab patch analyze and lab patch create show a person: one record per line, never cut, in a terminal or a pipe."""
from __future__ import annotations

from rich.text import Text

from .compiled import CLONE_KINDS


def _line(*parts):
    return Text.assemble(*parts)


def _label(text):
    return (f"  {text:<16}", "bold")


class AnalysisView:
    """lab patch analyze's answer for one function (an analyze.FunctionAnalysis)."""

    def __init__(self, analysis):
        self.a = analysis

    def __rich_console__(self, console, options):
        a = self.a
        where = f"{a.file}:{a.line}" if a.file else "?"
        if a.symbol:
            what = f"{'static' if a.static else 'global'}, at {a.address:#x}, " + \
                ("fentry pad" if a.pad else "notrace: no fentry pad")
        else:
            what = f"{'static' if a.static else 'global'}, no out-of-line copy of its own"
        yield _line((a.name, "bold cyan"), f"  {where}  ", (what, "" if a.pad or not a.symbol else "bold red"))
        yield _line(_label("inlined into"), ", ".join(f"{h} ({f}:{n})" for h, f, n in a.inlined_into) or "nothing")
        if a.clones:
            for c in a.clones:
                changes = "; ".join(c.changes()) or "same parameters"
                kinds = ", ".join(CLONE_KINDS[k].split(":")[0] for k in c.kinds)
                yield _line(_label("clone"), (c.symbol, "magenta"), f"  {kinds}: {changes}; called from "
                            f"{', '.join(c.callers) or 'nothing'}")
        else:
            yield _line(_label("clones"), "none")
        if a.symbol:
            yield _line(_label("called from"), ", ".join(a.called_from) or "no direct call")
            yield _line(_label("tail calls from"), ", ".join(a.tail_called_from) or "none")
        yield _line(_label("static locals"), ", ".join(f"{n} (kernel symbol {s})" for n, s in a.static_locals)
                    or "none")
        yield _line(_label("needs kallsyms"), "yes: it is static" if a.static and a.symbol else "no")
        verdict = "" if a.patchable else ("  cannot be live-patched", "bold red")
        yield _line(("  a patch of it must replace:", "bold"), verdict)
        width = max((len(r.function) for r in a.must_replace), default=0)
        for r in a.must_replace:
            style = "" if r.patchable else "bold red"
            yield _line("    ", (f"{r.function:<{width}}", style or "green"), f"  {r.why}")
        for n in a.notes:
            yield _line(("  note: ", "yellow"), n)


class CreationView:
    """lab patch create's answer (a create.Creation).  paths=False names the
    diff and the module by their file names, times=False leaves the seconds
    out: what a notebook shows must not change from run to run."""

    def __init__(self, creation, *, paths=True, times=True):
        self.c = creation
        self.paths = paths
        self.times = times

    def _path(self, p):
        return str(p) if self.paths else p.name

    def __rich_console__(self, console, options):
        c = self.c
        yield _line((self._path(c.diff), "bold"), f": changes {', '.join('firmware/' + f for f in c.files) or 'nothing'}")
        for ch in sorted(c.changes, key=lambda ch: (ch.kind != "function", ch.status, ch.name)):
            if ch.status == "gone" and ch.kind == "function":
                style = "dim"
            else:
                style = "yellow" if ch.status == "changed" else "cyan"
            detail = f" ({ch.detail})" if ch.detail else ""
            kind = "function" if ch.kind == "function" else ("variable" if ch.writable else "constant")
            yield _line(f"  {ch.status:<8} ", (f"{ch.name}", style), f"  {ch.bound} {kind} in {ch.unit}{detail}")
        for lay in c.layouts:
            yield _line("  layout   ", (lay.name, "yellow"), f"  {lay.what} ({lay.unit})")
        if c.refusals:
            yield _line(("refused:", "bold red"))
            for r in c.refusals:
                yield _line("  ", (r.what, "bold"), f": {r.why}")
                yield _line("    way out: ", r.way_out)
            return
        if not c.targets:
            yield _line(("nothing to patch:", "bold yellow"), " no function of the running kernel changes")
            return
        yield _line(("replaces:", "bold"))
        width = max(len(t.symbol) for t in c.targets)
        for t in c.targets:
            yield _line("  ", (f"{t.symbol:<{width}}", "green"), f"  {t.why}")
        carried = sorted({x for g in c.generated for x in g.carried})
        if carried:
            yield _line(("carries:", "bold"), " ", ", ".join(carried),
                        ("  (the kernel has no copy the new code can call: the module has its own)", "dim"))
        resolved = [r for g in c.generated for r in g.resolved]
        if resolved:
            yield _line(("kallsyms:", "bold"), " ", ", ".join(f"{r.symbol} ({r.what})" for r in resolved),
                        ("  (static in the kernel: looked up in the module's init)", "dim"))
        for g in c.generated:
            for n in g.notes:
                yield _line(("note: ", "yellow"), n)
        if c.module:
            yield _line(("module:", "bold"), f" {self._path(c.module)}  (sources in {self._path(c.sources)}/)")
        if c.check is not None:
            yield from _check_lines(c.check)
        yield _line(("verdict: ", "bold"), (c.verdict, "bold green" if c.ok else "bold red"),
                    f"  ({c.seconds.get('total', 0):.1f} s)" if self.times else "")


class CheckView:
    """The check of a generated patch (a check.CheckReport)."""

    def __init__(self, report):
        self.report = report

    def __rich_console__(self, console, options):
        yield from _check_lines(self.report)


def _check_lines(k):
    yield _line(("checked in workload ", "bold"), (k.workload, "bold"), ":")
    if not k.loaded:
        yield _line("  load       ", ("refused: ", "bold red"), k.reason or "")
        return
    yield _line("  load       ", f"the patch is {k.state}")
    got = ", ".join(f"{o} -> {n}" for o, n in k.functions)
    yield _line("  functions  ", ("as expected: " if k.functions_ok else "NOT as expected: ",
                                  "green" if k.functions_ok else "bold red"), got)
    if k.entered:
        yield _line("  ran        ", ", ".join(f"{n} x{c}" for n, c in sorted(k.entered.items())))
    for line in k.console_new[:6]:
        yield _line("  console +  ", line)
    for line in k.console_gone[:6]:
        yield _line("  console -  ", (line, "dim"))
    if k.exploration is not None:
        e = k.exploration
        yield _line("  explorer   ", f"{e['schedules']} schedules, ",
                    ("no violation" if e["clean"] else f"FAILED: {e['failure']}",
                     "green" if e["clean"] else "bold red"))
    for p in k.problems:
        yield _line(("  problem    ", "bold red"), p)
