"""report - explorations as a person reads them (lines, a rich renderable), as JSON (schema 1), as JUnit XML."""
from __future__ import annotations

import os
import pathlib
import tempfile
from xml.sax.saxutils import escape, quoteattr

from rich.text import Text

SCHEMA = 1


def lines(exploration):
    """[(text, style)]: the verdict of one exploration, one record per line."""
    e, p = exploration, exploration.plan
    f = e.figures()
    rate = f" ({f['schedules_per_second']:.1f} per second {e.where})" if f["schedules_per_second"] else \
        f" ({e.where})"
    head = (f"{p.name} under {p.model}: {e.schedules} schedules ({e.probes} bases, {e.systematic} with bounded "
            f"preemptions, {e.random} random){rate}")
    out = [(head, "")]
    if e.refusals:
        out.append((f"{p.name} under {p.model}: the patch could not be applied in {e.refused} schedule(s), "
                    f"first with {e.refusals[0].schedule.describe()}: {e.refusals[0].refused}", "yellow"))
        out.append((f"see it: {e.refusal_reproducer}", ""))
    if e.clean:
        out.append((f"{p.name} under {p.model}: no violation", "green"))
        return out
    first = e.first
    out.append((f"{p.name} under {p.model}: {first.summary()}", "bold red"))
    out.append((f"found with: {first.schedule.describe()}", ""))
    out.append((f"minimal ({e.shrink_runs} shrinking runs): {e.minimal.schedule.describe()}", ""))
    if len(e.failures) > 1:
        out.append((f"{len(e.failures)} failing schedules in all", "bold red"))
    if e.trace:
        out.append((f"trace: {e.trace} (lab trace view {e.trace})", ""))
    out.append((f"reproduce: {e.reproducer}", "bold"))
    return out


class ExplorationView:
    """The lines of one exploration, as a rich renderable."""

    def __init__(self, exploration):
        self.exploration = exploration

    def __rich_console__(self, console, options):
        for text, style in lines(self.exploration):
            yield Text(text, style=style)


def to_json(explorations):
    results = [e.to_dict() for e in explorations]
    totals = {k: sum(r["figures"][k] for r in results)
              for k in ("schedules", "probes", "systematic", "random", "failing", "shrink_runs", "instructions")}
    totals["seconds"] = round(sum(e.seconds for e in explorations), 3)
    return {"schema": SCHEMA, "clean": all(e.clean for e in explorations), "results": results, "figures": totals}


def junit_xml(explorations):
    """One testsuite, one testcase per patch and model; a failure carries the reproducer."""
    failures = sum(not e.clean for e in explorations)
    seconds = sum(e.seconds for e in explorations)
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           f'<testsuites tests="{len(explorations)}" failures="{failures}" errors="0" time="{seconds:.3f}">',
           f'  <testsuite name="lab explore" tests="{len(explorations)}" failures="{failures}" errors="0" '
           f'skipped="0" time="{seconds:.3f}">']
    for e in explorations:
        p = e.plan
        name = quoteattr(f"{p.name} under {p.model}")
        out.append(f'    <testcase classname="lab.explore.{escape(p.model)}" name={name} time="{e.seconds:.3f}">')
        body = [f"{e.schedules} schedules explored {e.where}"]
        if e.refusals:
            body.append(f"the patch could not be applied in {e.refused} schedule(s): {e.refusals[0].refused}; "
                        f"see it: {e.refusal_reproducer}")
        if not e.clean:
            body += [e.first.summary(), f"minimal schedule: {e.minimal.schedule.describe()}"]
            if e.trace:
                body.append(f"trace: {e.trace}")
            body.append(f"reproduce: {e.reproducer}")
            message = quoteattr(f"{e.first.summary()}; reproduce: {e.reproducer}")
            out.append(f'      <failure type="consistency" message={message}>{escape(chr(10).join(body))}</failure>')
        out.append(f"      <system-out>{escape(chr(10).join(body[:2 if e.refusals else 1]))}</system-out>")
        out.append("    </testcase>")
    out += ["  </testsuite>", "</testsuites>", ""]
    return "\n".join(out)


def write_junit(explorations, path):
    """Write the JUnit file (a temporary file renamed: never half a file)."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(junit_xml(explorations))
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path
