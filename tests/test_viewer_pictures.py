"""The SVG pictures (the timeline, the compare chart) scale to the width of a notebook or a page, and the compare
chart draws each metric in its own panel, on its own axis with ticks and its unit."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from lab.compare import CHART_METRICS, chart_svg
from lab.trace import Trace
from lab.viewer import Timeline
from trace_helpers import recorded

SVG = "{http://www.w3.org/2000/svg}"
ROWS = [
    {"model": "kgraft", "instructions_to_complete": 1_579_712, "stopped_instructions": 0, "violations": 0,
     "completed": True},
    {"model": "stop-machine", "instructions_to_complete": None, "stopped_instructions": 13_995, "violations": 0,
     "completed": False},
    {"model": "immediate", "instructions_to_complete": 812, "stopped_instructions": 0, "violations": 3,
     "completed": True},
]


def _scales_to_its_container(root):
    _x, _y, width, height = (float(v) for v in root.get("viewBox").split())
    assert root.get("width") == "100%" and root.get("height") is None
    assert f"max-width:{width:g}px" in root.get("style") and width > 0 and height > 0


def test_the_timeline_scales_to_its_container():
    root = ET.fromstring(Timeline(Trace.load(recorded()[0])).svg())
    _scales_to_its_container(root)


def test_the_compare_chart_scales_to_its_container():
    _scales_to_its_container(ET.fromstring(chart_svg(ROWS)))


def test_each_metric_has_its_own_panel_axis_and_unit():
    # issue 13, defect 11: each metric was scaled to its own maximum with no axis, so 13,995 stopped
    # instructions drew as long as 1,579,712 instructions to complete
    root = ET.fromstring(chart_svg(ROWS))
    panels = [g for g in root.iter(SVG + "g") if g.get("class") == "panel"]
    assert [(p.get("data-metric"), p.get("data-unit")) for p in panels] == [(k, u) for k, _w, u, _c in CHART_METRICS]
    for panel in panels:
        ticks = [float(t.get("data-value")) for t in panel.iter(SVG + "line") if t.get("class") == "tick"]
        assert ticks[0] == 0 and len(ticks) >= 2 and ticks == sorted(ticks)
        left = float(next(t for t in panel.iter(SVG + "line") if t.get("class") == "tick").get("x1"))
        right = max(float(t.get("x1")) for t in panel.iter(SVG + "line") if t.get("class") == "tick")
        texts = [t.text for t in panel.iter(SVG + "text")]
        assert f"unit: {panel.get('data-unit')}" in texts
        for bar in (b for b in panel.iter(SVG + "rect") if b.get("class") == "bar"):
            value = bar.get("data-value")
            if value == "":
                continue
            # the bar ends where its value sits on the panel's axis
            end = float(bar.get("x")) + float(bar.get("width"))
            expected = left + (right - left) * float(value) / ticks[-1]
            assert end == pytest.approx(expected, abs=1.0) if float(value) else float(bar.get("width")) == 0
    stopped = {b.get("data-model"): float(b.get("width")) for b in root.iter(SVG + "rect")
               if b.get("data-metric") == "stopped_instructions"}
    done = {b.get("data-model"): float(b.get("width")) for b in root.iter(SVG + "rect")
            if b.get("data-metric") == "instructions_to_complete"}
    # 812 instructions on the axis of 1.6 million: a sliver, not a bar as long as kgraft's
    assert stopped["stop-machine"] > 400 and done["kgraft"] > 400 and done["immediate"] <= 1


def test_a_model_that_did_not_complete_says_so_instead_of_a_bar():
    root = ET.fromstring(chart_svg(ROWS))
    texts = [t.text for t in root.iter(SVG + "text")]
    assert "n/a: did not complete" in texts and "1,579,712" in texts and "13,995" in texts
