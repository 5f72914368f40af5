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
from .system import boot

# what each model is, in the words of the kGraft article and upstream
MODEL_NOTES = {
    "immediate": "redirect at once, no consistency (Linux 4.0's first core)",
    "kgraft": "leave kernel / switch thread: per-task universes, safe points, fake signal",
    "stop-machine": "stop everything, check every stack, retry, give up (Ksplice, early kpatch)",
    "klp": "upstream hybrid: stack check per task, kernel exit, fake signal",
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


def chart_svg(rows, title="consistency models"):
    """Bars per model: instructions to completion, stopped instructions, violations."""
    metrics = [("instructions_to_complete", "instructions to complete", "#4c78a8"),
               ("stopped_instructions", "instructions stopped", "#e45756"),
               ("violations", "violations", "#b279a2")]
    width, row_h, left = 760, 86, 130
    height = 70 + row_h * len(rows) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<text x="10" y="22" font-size="16" font-weight="bold">{escape(title)}</text>']
    for i, (_key, label, colour) in enumerate(metrics):
        x = left + i * 200
        out.append(f'<rect x="{x}" y="34" width="12" height="12" fill="{colour}"/>'
                   f'<text x="{x + 16}" y="45">{escape(label)}</text>')
    scale = {key: max([r[key] or 0 for r in rows] + [1]) for key, _l, _c in metrics}
    for j, r in enumerate(rows):
        y0 = 62 + j * row_h
        out.append(f'<text x="10" y="{y0 + 30}" font-weight="bold">{escape(r["model"])}</text>')
        if not r["completed"]:
            out.append(f'<text x="10" y="{y0 + 46}" fill="#c00">did not complete</text>')
        for i, (key, _label, colour) in enumerate(metrics):
            value = r[key]
            w = 0 if value is None else int(480 * value / scale[key])
            y = y0 + i * 22
            out.append(f'<rect class="bar" data-model="{escape(r["model"])}" data-metric="{key}" x="{left}" '
                       f'y="{y}" width="{max(w, 1)}" height="18" fill="{colour}"/>')
            text = "n/a" if value is None else f"{value:,}"
            out.append(f'<text x="{left + max(w, 1) + 6}" y="{y + 14}">{text}</text>')
    out.append("</svg>")
    return "\n".join(out)


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
