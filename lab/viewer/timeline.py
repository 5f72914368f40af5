"""timeline - one lane per task over the run, coloured by universe, with safe points, fake signals and patch states marked; SVG by hand, or text in a terminal."""
from __future__ import annotations

import math
import os
import pathlib
import tempfile
from xml.sax.saxutils import escape, quoteattr

from rich.segment import Segment
from rich.style import Style

from ..render import nice_ticks, short_count, svg_open
from .index import IRQ, TraceIndex

UNIVERSE_FILL = {"old": "#e8a33d", "new": "#7b3fa0"}
NONE_FILL = "#ececec"
DEAD_FILL = "#bdbdbd"
CPU_OPACITY = {"running": 1.0, "runnable": 0.45, "sleeping": 0.16}
CPU_LABEL = {"running": "on the CPU", "runnable": "preempted (runnable)", "sleeping": "off the CPU by its own choice (asleep)"}
# safe points, by the kind the firmware reports (kGraft's places where a task may switch universe)
MIGRATION_SHAPES = {
    "syscall-exit": "circle", "freezer": "square", "kgr-task-safe": "diamond", "kthread-worker": "triangle",
    "irq-exit": "triangle-down", "fake-signal": "star", "stack-check": "hexagon", "force": "cross",
}
MIGRATION_WORDS = {
    "syscall-exit": "at system call exit", "freezer": "in the freezer", "kgr-task-safe": "at kgr_task_safe()",
    "kthread-worker": "in its worker loop", "irq-exit": "at interrupt exit", "fake-signal": "after a fake signal",
    "stack-check": "by a stack check (klp)", "force": "by force",
}
MIGRATION_COLOUR = "#1a9850"
SIGNAL_COLOUR = {"fake-signal": "#d7301f", "signal": "#d7301f", "wake-up": "#2b83ba"}
PATCH_COLOUR = {"transition": "#333333", "reverting": "#333333", "complete": "#111111", "reverted": "#111111",
                "refused": "#d7301f", "failed": "#d7301f"}
_TERMINAL_CPU_CHAR = {"running": "█", "runnable": "▒", "sleeping": "░", "dead": " ", "none": " "}


class Timeline:
    """A trace's tasks over time.  svg() draws it (Jupyter shows the SVG);
    printed to a rich console it draws the lanes in text."""

    def __init__(self, trace, width=1200, index=None):
        if isinstance(trace, (str, pathlib.Path)):
            from ..trace import Trace
            trace = Trace.load(trace)
        self.trace = trace
        self.index = index if index is not None else TraceIndex(trace)
        self.width = width
        self.lanes = self.index.lanes()
        self.marks = self.index.marks()
        self.tids = [tid for tid in self.lanes if tid != IRQ]

    # ---- SVG ----
    def svg(self):
        ix, trace = self.index, self.trace
        lo, hi = ix.start, max(ix.end, ix.start + 1)
        left, right, top = 190, 30, 92
        lane_h, gap, irq_h = 22, 8, 12
        plot_w = self.width - left - right
        lanes_bottom = top + len(self.tids) * (lane_h + gap) + irq_h
        axis_y = lanes_bottom + 14

        def x(step):
            return left + (step - lo) / (hi - lo) * plot_w

        rows = {tid: top + i * (lane_h + gap) for i, tid in enumerate(self.tids)}
        rows[IRQ] = top + len(self.tids) * (lane_h + gap)
        out = []
        a = out.append
        h = trace.header
        patch_names = ", ".join(p["name"] for p in h.get("patches", ())) or "no patch"
        a(f'<text x="{left}" y="24" class="title">{escape(trace.path.name)}: workload {escape(str(h.get("workload")))}, '
          f'{ix.end - ix.start:,} instructions, {escape(patch_names)}</text>')
        a(f'<text x="{left}" y="42" class="subtitle">one lane per task; colour: universe (old / new w.r.t. the latest '
          f'transition); tone: on the CPU, preempted, asleep; marks: where a task switched universe and why</text>')

        # transitions in progress: a band behind the lanes
        open_at = None
        for m in self.marks:
            if m.kind != "patch":
                continue
            if m.label in ("transition", "reverting"):
                open_at = m.at if open_at is None else open_at
            elif open_at is not None:
                a(f'<rect class="transition-band" x="{x(open_at):.2f}" y="{top - 6}" '
                  f'width="{max(x(m.at) - x(open_at), 1):.2f}" height="{lanes_bottom - top + 12}" fill="#fff4c2"/>')
                open_at = None
        if open_at is not None:
            a(f'<rect class="transition-band" x="{x(open_at):.2f}" y="{top - 6}" width="{max(x(hi) - x(open_at), 1):.2f}" '
              f'height="{lanes_bottom - top + 12}" fill="#fff4c2"/>')

        for tid in self.tids + [IRQ]:
            y = rows[tid]
            height = irq_h if tid == IRQ else lane_h
            name = ix.task_name(tid)
            kind = "interrupt context" if tid == IRQ else ix.kinds.get(tid, "")
            cls = "lane irq" if tid == IRQ else "lane"
            a(f'<g class={quoteattr(cls)} data-tid="{tid}" data-name={quoteattr(name)}>')
            label = f"{tid} {name}" if tid != IRQ else "interrupts"
            a(f'<text x="{left - 62}" y="{y + height / 2 + 4:.1f}" text-anchor="end" class="lane-label">'
              f'{escape(label)}</text><text x="{left - 8}" y="{y + height / 2 + 4:.1f}" text-anchor="end" '
              f'class="kind">{escape("irq" if tid == IRQ else kind)}</text>')
            a(f'<rect x="{left}" y="{y}" width="{plot_w}" height="{height}" fill="{NONE_FILL}"/>')
            for start, end, universe, cpu, opacity, mixed in _drawn(self.lanes[tid], (hi - lo) / plot_w):
                if universe == "none" and cpu == "none":
                    continue
                x0, x1 = x(start), x(end)
                if cpu == "dead":
                    fill, opacity = DEAD_FILL, 0.5
                else:
                    fill = UNIVERSE_FILL.get(universe, NONE_FILL)
                    opacity = 1.0 if tid == IRQ else opacity
                how = "mostly " + CPU_LABEL.get(cpu, cpu) if mixed else CPU_LABEL.get(cpu, cpu)
                # a tooltip only where there is room to point at: a long run keeps its size
                title = (f'<title>{escape(name)}: {universe} universe, {escape(how)}, steps {start:,}..{end:,}</title>'
                         if x1 - x0 >= 3 else "")
                a(f'<rect class="span" data-universe="{universe}" data-cpu="{cpu}" x="{x0:.2f}" y="{y}" '
                  f'width="{max(x1 - x0, 0.3):.2f}" height="{height}" fill="{fill}" fill-opacity="{opacity:.2f}">'
                  f'{title}</rect>')
            a('</g>')

        # patch state changes: lines across every lane, labels above, staggered when close
        label_rows = []
        for m in (m for m in self.marks if m.kind == "patch"):
            px = x(m.at)
            colour = PATCH_COLOUR.get(m.label, "#333333")
            dash = ' stroke-dasharray="5,3"' if m.label in ("transition", "reverting") else ""
            row = next((i for i, last in enumerate(label_rows) if px - last > 150), len(label_rows))
            if row == len(label_rows):
                label_rows.append(px)
            label_rows[row] = px
            ly = 62 + 13 * (row % 2)
            word = {"transition": "patch start", "reverting": "revert start", "complete": "patch complete",
                    "reverted": "revert complete"}.get(m.label, m.label)
            a(f'<g class="mark patch" data-kind="patch" data-state="{escape(m.label)}" data-at="{m.at}">'
              f'<title>{escape(m.text)}</title>'
              f'<line x1="{px:.2f}" y1="{ly + 4}" x2="{px:.2f}" y2="{lanes_bottom + 4}" stroke="{colour}" '
              f'stroke-width="1.5"{dash}/>'
              f'<text x="{px + 3:.2f}" y="{ly}" class="patch-label" fill="{colour}">{escape(word)} '
              f'{short_count(m.at)}</text></g>')

        for m in self.marks:
            if m.kind == "patch" or m.tid not in rows:
                continue
            height = irq_h if m.tid == IRQ else lane_h
            # signals sit on the lane's upper edge, so the safe point they cause a moment later stays visible
            cy = rows[m.tid] + (1 if m.kind in SIGNAL_COLOUR else height / 2)
            a(self._mark(m, x(m.at), cy))

        # axis
        a(f'<g class="axis"><line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#555"/>')
        for t in nice_ticks(lo, hi):
            tx = x(t)
            a(f'<line x1="{tx:.2f}" y1="{axis_y}" x2="{tx:.2f}" y2="{axis_y + 5}" stroke="#555"/>'
              f'<text x="{tx:.2f}" y="{axis_y + 18}" text-anchor="middle" class="tick">{short_count(t)}</text>')
        a(f'<text x="{left + plot_w / 2:.0f}" y="{axis_y + 36}" text-anchor="middle" class="axis-label">'
          f'instructions retired</text></g>')

        legend_y = axis_y + 60
        legend, legend_h = self._legend(left, legend_y)
        out.extend(legend)
        height = legend_y + legend_h + 10
        style = ("text{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;font-size:12px;fill:#222}"
                 ".title{font-size:15px;font-weight:bold}.subtitle{font-size:11px;fill:#555}"
                 ".lane-label{font-size:12px}.kind{fill:#888;font-size:10px;font-style:italic}.tick{font-size:11px;fill:#444}"
                 ".axis-label{font-size:11px;fill:#444}.patch-label{font-size:11px;font-weight:bold}"
                 ".legend-title{font-weight:bold}")
        return (svg_open(self.width, height, "lab-timeline") +
                f'<style>{style}</style><rect width="100%" height="100%" fill="white"/>' + "".join(out) + "</svg>")

    def _mark(self, m, cx, cy):
        attrs = f'class="mark {m.kind}" data-kind="{m.kind}" data-tid="{m.tid}" data-at="{m.at}"'
        if m.kind == "migrated":
            attrs += f" data-by={quoteattr(m.label)}"
            shape = _shape(MIGRATION_SHAPES.get(m.label, "circle"), cx, cy, 6, MIGRATION_COLOUR)
        elif m.kind in SIGNAL_COLOUR:
            colour = SIGNAL_COLOUR[m.kind]
            if m.kind == "fake-signal":
                shape = _bolt(cx, cy, colour)
            else:
                shape = f'<circle cx="{cx:.2f}" cy="{cy:.2f}" r="4" fill="white" stroke="{colour}" stroke-width="1.5"/>'
        elif m.kind == "oops":
            shape = _shape("cross", cx, cy, 7, "#d7301f")
        else:   # exit
            shape = f'<rect x="{cx - 1.5:.2f}" y="{cy - 9:.2f}" width="3" height="18" fill="#222"/>'
        return f"<g {attrs}><title>{escape(m.text)}</title>{shape}</g>"

    def _legend(self, x0, y0):
        out = [f'<g class="legend"><text x="{x0 - 180}" y="{y0 + 12}" class="legend-title">legend</text>']
        a = out.append
        # universes and tones
        col = x0
        for u in ("old", "new"):
            for i, cpu in enumerate(("running", "runnable", "sleeping")):
                a(f'<rect x="{col + i * 18}" y="{y0}" width="16" height="16" fill="{UNIVERSE_FILL[u]}" '
                  f'fill-opacity="{CPU_OPACITY[cpu]}" stroke="#999" stroke-width="0.5"/>')
            a(f'<text x="{col + 60}" y="{y0 + 12}">{u} universe</text>')
            col += 190
        a(f'<text x="{col}" y="{y0 + 12}" fill="#555">tones, left to right: on the CPU, preempted, asleep</text>')
        y = y0 + 28
        col = x0
        # the safe points this run passed (all of them when it passed none, as a key to the shapes)
        present = {m.label for m in self.marks if m.kind == "migrated"}
        kinds = [k for k in MIGRATION_SHAPES if k in present] + sorted(present - set(MIGRATION_SHAPES))
        for by in kinds or MIGRATION_SHAPES:
            shape = MIGRATION_SHAPES.get(by, "circle")
            a(_shape(shape, col + 6, y + 6, 6, MIGRATION_COLOUR))
            a(f'<text x="{col + 16}" y="{y + 10}">moved {escape(MIGRATION_WORDS.get(by, by))}</text>')
            col += 190
            if col > x0 + 4 * 190:
                col, y = x0, y + 22
        y += 22
        col = x0
        a(_bolt(col + 6, y + 6, SIGNAL_COLOUR["fake-signal"]))
        a(f'<text x="{col + 16}" y="{y + 10}">fake signal</text>')
        col += 110
        a(f'<circle cx="{col + 6}" cy="{y + 6}" r="4" fill="white" stroke="{SIGNAL_COLOUR["wake-up"]}" '
          f'stroke-width="1.5"/><text x="{col + 16}" y="{y + 10}">wake-up (kthread)</text>')
        col += 150
        a(f'<circle cx="{col + 6}" cy="{y + 6}" r="4" fill="white" stroke="{SIGNAL_COLOUR["signal"]}" '
          f'stroke-width="1.5"/><text x="{col + 16}" y="{y + 10}">signal</text>')
        col += 90
        a(f'<line x1="{col}" y1="{y}" x2="{col}" y2="{y + 14}" stroke="#333" stroke-width="1.5" '
          f'stroke-dasharray="5,3"/><text x="{col + 8}" y="{y + 10}">transition starts</text>')
        col += 140
        a(f'<line x1="{col}" y1="{y}" x2="{col}" y2="{y + 14}" stroke="#111" stroke-width="1.5"/>'
          f'<text x="{col + 8}" y="{y + 10}">transition complete</text>')
        col += 160
        a(f'<rect x="{col}" y="{y}" width="16" height="14" fill="#fff4c2"/>'
          f'<text x="{col + 22}" y="{y + 10}">transition in progress</text>')
        a("</g>")
        return out, y + 20 - y0

    def _repr_svg_(self):
        return self.svg()

    def _repr_mimebundle_(self, include=None, exclude=None):
        # the SVG, not rich's HTML of the text lanes (a frontend prefers text/html to image/svg+xml)
        return {"image/svg+xml": self.svg(),
                "text/plain": f"<Timeline of {self.trace.path.name}: {len(self.tids)} tasks, "
                              f"{self.index.end - self.index.start:,} instructions>"}

    def save(self, path):
        """Write the SVG to path (a temporary file renamed, so no half file is left)."""
        path = pathlib.Path(path)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.svg())
            os.replace(tmp, path)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise
        return path

    # ---- text, for a terminal ----
    def __rich_console__(self, console, options):
        ix = self.index
        label_w = max(len(f"{tid} {ix.task_name(tid)}") for tid in self.tids + [IRQ]) + 1
        cols = max(10, min(options.max_width, console.width) - label_w - 1)
        lo, hi = ix.start, max(ix.end, ix.start + 1)
        per = (hi - lo) / cols
        marks_by_tid = {}
        for m in self.marks:
            if m.kind in ("migrated", "fake-signal") and m.tid is not None:
                marks_by_tid.setdefault(m.tid, {})[min(int((m.at - lo) / per), cols - 1)] = m
        for tid in self.tids + [IRQ]:
            name = f"{tid} {ix.task_name(tid)}" if tid != IRQ else "interrupts"
            yield Segment(name.rjust(label_w - 1) + " ", Style(dim=tid == IRQ))
            cells = _dominant(self.lanes[tid], lo, per, cols)
            marks = marks_by_tid.get(tid, {})
            for c, (u, cpu) in enumerate(cells):
                m = marks.get(c)
                if m is not None:
                    yield Segment("⚡" if m.kind == "fake-signal" else "◆",
                                  Style(color="red" if m.kind == "fake-signal" else "green", bold=True))
                    continue
                colour = {"old": "yellow", "new": "magenta"}.get(u)
                yield Segment(_TERMINAL_CPU_CHAR.get(cpu, " ") if tid != IRQ else "▬", Style(color=colour))
            yield Segment.line()
        axis = [" "] * cols
        labels = []
        for t in nice_ticks(lo, hi, target=max(2, cols // 14)):
            c = min(int((t - lo) / per), cols - 1)
            axis[c] = "┴"
            labels.append((c, short_count(t)))
        yield Segment(" " * label_w + "".join(axis), Style(dim=True))
        yield Segment.line()
        line = [" "] * (cols + 8)
        for c, text in labels:
            if all(ch == " " for ch in line[c:c + len(text) + 1]):
                line[c:c + len(text)] = text
        yield Segment(" " * label_w + "".join(line).rstrip(), Style(dim=True))
        yield Segment.line()
        yield Segment(" " * label_w + "█ on CPU  ▒ preempted  ░ asleep  ", Style(dim=True))
        yield Segment("old", Style(color="yellow"))
        yield Segment(" / ", Style(dim=True))
        yield Segment("new", Style(color="magenta"))
        yield Segment(" universe", Style(dim=True))
        yield Segment.line()
        yield Segment(" " * label_w + "◆ safe point  ⚡ fake signal  x: instructions retired", Style(dim=True))
        yield Segment.line()


def _drawn(spans, per_pixel):
    """What to draw of a lane: (start, end, universe, cpu, opacity, mixed) runs.  A
    span a pixel wide or more is drawn as it is; a row of narrower ones (a task
    switched in and out many times a pixel) becomes one run of the dominant
    universe and CPU state, its tone the time-weighted mean of theirs, so a long
    run does not draw thousands of invisible rectangles."""
    out = []
    group = []

    def flush():
        if not group:
            return
        if len(group) == 1:
            g = group[0]
            out.append([g.start, g.end, g.universe, g.cpu, CPU_OPACITY.get(g.cpu, 0.16), False])
        else:
            time_in = {}
            for g in group:
                time_in[(g.universe, g.cpu)] = time_in.get((g.universe, g.cpu), 0) + (g.end - g.start)
            total = sum(time_in.values()) or 1
            universe, cpu = max(time_in, key=time_in.get)
            tone = sum(CPU_OPACITY.get(c, 0.16) * t for (_u, c), t in time_in.items()) / total
            out.append([group[0].start, group[-1].end, universe, cpu, round(tone * 10) / 10, True])
        group.clear()

    for s in spans:
        if s.end - s.start >= per_pixel:
            flush()
            group.append(s)
            flush()
            continue
        group.append(s)
        if group[-1].end - group[0].start >= per_pixel:
            flush()
    flush()
    merged = []
    for run in out:   # neighbours that look the same are one rectangle
        if merged and merged[-1][2:5] == run[2:5] and merged[-1][1] == run[0]:
            merged[-1][1] = run[1]
            merged[-1][5] = merged[-1][5] or run[5]
        else:
            merged.append(run)
    return [tuple(r) for r in merged]


def _dominant(spans, lo, per, cols):
    """For each text column, the (universe, cpu) that covers most of it."""
    weight = [dict() for _ in range(cols)]
    for s in spans:
        a, b = (s.start - lo) / per, (s.end - lo) / per
        c = max(int(a), 0)
        while c < cols and c < b:
            part = min(b, c + 1) - max(a, c)
            if part > 0:
                key = (s.universe, s.cpu)
                # the CPU state a person looks for wins a tie with idleness
                w = weight[c]
                w[key] = w.get(key, 0) + part * (1.5 if s.cpu == "running" else 1)
            c += 1
    return [max(w, key=w.get) if w else ("none", "none") for w in weight]


def _shape(kind, cx, cy, r, colour):
    stroke = 'stroke="#0b3d20" stroke-width="0.8"'
    if kind == "circle":
        return f'<circle cx="{cx:.2f}" cy="{cy:.2f}" r="{r * 0.8:.1f}" fill="{colour}" {stroke}/>'
    if kind == "square":
        return f'<rect x="{cx - r * 0.75:.2f}" y="{cy - r * 0.75:.2f}" width="{r * 1.5:.1f}" height="{r * 1.5:.1f}" ' \
               f'fill="{colour}" {stroke}/>'
    if kind == "cross":
        return (f'<path d="M{cx - r:.2f},{cy - r:.2f} L{cx + r:.2f},{cy + r:.2f} M{cx + r:.2f},{cy - r:.2f} '
                f'L{cx - r:.2f},{cy + r:.2f}" stroke="{colour}" stroke-width="2.5" fill="none"/>')
    if kind == "star":
        pts = []
        for i in range(10):
            ang = math.pi / 2 + i * math.pi / 5
            rad = r * 1.1 if i % 2 == 0 else r * 0.45
            pts.append(f"{cx + rad * math.cos(ang):.2f},{cy - rad * math.sin(ang):.2f}")
        return f'<polygon points="{" ".join(pts)}" fill="{colour}" {stroke}/>'
    if kind == "hexagon":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (i * math.pi / 3 for i in range(6))]
        return f'<polygon points="{" ".join(f"{cx + dx:.2f},{cy + dy:.2f}" for dx, dy in pts)}" fill="{colour}" {stroke}/>'
    pts = {
        "diamond": [(0, -r), (r, 0), (0, r), (-r, 0)],
        "triangle": [(0, -r), (r, r * 0.8), (-r, r * 0.8)],
        "triangle-down": [(0, r), (r, -r * 0.8), (-r, -r * 0.8)],
    }[kind]
    return f'<polygon points="{" ".join(f"{cx + dx:.2f},{cy + dy:.2f}" for dx, dy in pts)}" fill="{colour}" {stroke}/>'


def _bolt(cx, cy, colour):
    d = (f"M{cx + 1:.2f},{cy - 9:.2f} L{cx - 4:.2f},{cy + 1:.2f} L{cx:.2f},{cy + 1:.2f} "
         f"L{cx - 2:.2f},{cy + 9:.2f} L{cx + 5:.2f},{cy - 2:.2f} L{cx + 1:.2f},{cy - 2:.2f} Z")
    return f'<path d="{d}" fill="{colour}" stroke="#5a0f08" stroke-width="0.6"/>'


__all__ = ["Timeline", "nice_ticks", "short_count"]
