"""compare - the consistency models side by side on one patch, workload and schedule."""
from __future__ import annotations

import os
import pathlib
import tempfile
from xml.sax.saxutils import escape

from rich.table import Table
from rich.text import Text

from .errors import KernelPanic, UsageError
from .livepatch import LivepatchError, PatchState
from .livepatch.core import MODELS
from .render import nice_ticks, short_count, svg_open
from .system import boot

# what each model is, in the words of the kGraft article and upstream
MODEL_NOTES = {
    "immediate": "redirect at once, no consistency (Linux 4.0's first core)",
    "kgraft": "leave kernel / switch thread: per-task universes, safe points, fake signal",
    "stop-machine": "stop everything, check every stack, retry, give up (Ksplice, early kpatch)",
    "klp": "upstream hybrid approximated by the lab: kGraft's safe points plus a stack check",
    "upstream": "upstream's model in the kernel: kernel exit, idle loop, stack check each second, signals at 15 s",
}
_SIGNALLING = {"kgraft", "klp"}


def run_model(path, model, *, workload="default", seed=0, patch_at=1_000_000, signal_after=1_500_000,
              limit=12_000_000, image=None, params=None):
    """One model's run: boot, apply at patch_at, run until done or limit. A row of figures.
    A kernel panic ends the run; the row says so (completed False, panic set)."""
    with boot(image, workload=workload, seed=seed, model=model, observe=True, params=params,
              signal_after=signal_after if model in _SIGNALLING else None) as system:
        if patch_at < system.clock:
            raise UsageError(f"--patch-at {patch_at:,} comes before the end of boot (at {system.clock:,} "
                             "instructions since power-on); give a later instant")
        patch = None
        loaded_at = None
        try:
            system.run(patch_at - system.clock)
            loaded_at = system.clock
            try:
                patch = system.apply_patch(path)
            except LivepatchError as exc:
                return _row(model, system, None, loaded_at, refused=str(exc))
            system.run_until_patched(limit)
            system.run(500_000)     # a little after completion: misbehaviour shows on the console
        except KernelPanic as exc:
            return _row(model, system, patch, loaded_at, panic=str(exc))
        return _row(model, system, patch, loaded_at)


def _row(model, system, patch, loaded_at, refused=None, panic=None):
    lp = system.livepatch
    violations = system.violations()
    done = panic is None and patch is not None and patch.state == PatchState.COMPLETE
    if panic:
        why = panic if panic.startswith("kernel panic") else f"kernel panic: {panic}"
    elif refused:
        why = refused
    elif patch is None:
        why = "not loaded"
    elif done:
        why = ""
    elif patch.state == PatchState.FAILED:
        why = patch.reason
    else:
        pending = ", ".join(f"{t.name} in {where}" for t, where in lp.pending())
        why = f"still waiting for {pending}" if pending else f"still {patch.state.value}"
    moved_by_signal = sorted({e.tid for e in system.events if e.kind == "migrated" and e.by == "fake-signal"})
    return {
        "model": model,
        "note": MODEL_NOTES[model],
        "completed": done,
        "why_not": why or None,
        "state": patch.state.value if patch else ("refused" if refused else "not loaded"),
        "instructions_to_complete": (patch.completed_at - loaded_at) if done else None,
        "stopped_instructions": lp.stopped_instructions,
        "stop_attempts": len(lp.stop_attempts),
        "moved_by_fake_signal": len(moved_by_signal),
        "violations": len(violations),
        "user_visible": [line for line in system.console if "mismatch" in line or "failed" in line][:3],
        "digest": system.digest,
        "panic": system.kernel.panicked,
    }


def compare(path, *, models=MODELS, **kwargs):
    return [run_model(path, m, **kwargs) for m in models]


class ComparisonTable:
    def __init__(self, rows, title):
        self.rows = rows
        self.title = title

    def __rich__(self):
        t = Table(title=f"consistency models on {self.title}", title_justify="left")
        for col in ("model", "completed", "instructions to complete", "stopped", "fake-signal moves",
                    "violations", "why not"):
            t.add_column(col, justify="right" if col in ("stopped", "fake-signal moves", "violations",
                                                        "instructions to complete") else "left")
        for r in self.rows:
            t.add_row(
                r["model"],
                Text("yes", style="green") if r["completed"] else Text("no", style="red"),
                f"{r['instructions_to_complete']:,}" if r["instructions_to_complete"] is not None else "-",
                f"{r['stopped_instructions']:,}",
                str(r["moved_by_fake_signal"]),
                Text(str(r["violations"]), style="bold red" if r["violations"] else "green"),
                r["why_not"] or "",
            )
        return t


# the chart's metrics: key, what is measured, its unit, colour
CHART_METRICS = (
    ("instructions_to_complete", "time to complete: from the patch's load to the end of its transition",
     "instructions retired", "#4c78a8"),
    ("stopped_instructions", "time the machine stood stopped (stop_machine)", "instructions", "#e45756"),
    ("violations", "consistency violations seen", "count", "#b279a2"),
)


def chart_svg(rows, title="consistency models"):
    """One panel per metric, each with its own axis, ticks and unit (a count of
    violations is not drawn on the scale of millions of instructions); a model
    without a value (it never completed) says so in its row."""
    width, left, right = 760, 130, 90
    plot_w = width - left - right
    bar_h, row_h = 16, 22
    out = [f'<text x="10" y="22" font-size="16" font-weight="bold">{escape(title)}</text>']
    y = 44
    for key, what, unit, colour in CHART_METRICS:
        values = [r[key] for r in rows]
        top = max([v for v in values if v is not None] + [0])
        ticks = nice_ticks(0, max(top, 1), target=5)
        if ticks[-1] < top:
            ticks.append(ticks[-1] + (ticks[1] - ticks[0] if len(ticks) > 1 else max(top, 1)))
        scale_max = ticks[-1] or 1
        out.append(f'<g class="panel" data-metric="{key}" data-unit="{escape(unit)}">')
        out.append(f'<text x="10" y="{y}" font-weight="bold">{escape(what)}</text>'
                   f'<text x="{width - 10}" y="{y}" text-anchor="end" fill="#555">unit: {escape(unit)}</text>')
        y0 = y + 10
        plot_h = row_h * len(rows)
        for t in ticks:
            tx = left + plot_w * t / scale_max
            out.append(f'<line class="tick" data-value="{t}" x1="{tx:.1f}" y1="{y0}" x2="{tx:.1f}" y2="{y0 + plot_h}" '
                       f'stroke="#ddd"/><text x="{tx:.1f}" y="{y0 + plot_h + 14}" text-anchor="middle" '
                       f'font-size="11" fill="#444">{short_count(t)}</text>')
        out.append(f'<line x1="{left}" y1="{y0 + plot_h}" x2="{left + plot_w}" y2="{y0 + plot_h}" stroke="#555"/>')
        for j, r in enumerate(rows):
            by = y0 + j * row_h + (row_h - bar_h) / 2
            value = r[key]
            out.append(f'<text x="10" y="{by + 12:.1f}">{escape(r["model"])}</text>')
            w = 0 if value is None else plot_w * value / scale_max
            out.append(f'<rect class="bar" data-model="{escape(r["model"])}" data-metric="{key}" '
                       f'data-value="{"" if value is None else value}" x="{left}" y="{by:.1f}" '
                       f'width="{max(w, 1 if value else 0):.1f}" height="{bar_h}" fill="{colour}"/>')
            text = "n/a: did not complete" if value is None else f"{value:,}"
            fill = ' fill="#c00"' if value is None else ""
            out.append(f'<text x="{left + max(w, 0) + 6:.1f}" y="{by + 12:.1f}"{fill}>{text}</text>')
        out.append("</g>")
        y = y0 + plot_h + 40
    height = y - 10
    return svg_open(width, height, "lab-compare", ' font-family="sans-serif" font-size="12"') + \
        f'<rect width="100%" height="100%" fill="white"/>' + "\n".join(out) + "\n</svg>"


def write_chart(rows, path, title="consistency models"):
    """Write the chart to path (a temporary file renamed, so no half file is left)."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(chart_svg(rows, f"consistency models on {title}"))
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path
