"""The stepper as a person sees it, compared with accepted screenshots (pytest-textual-snapshot) at 80x24, 120x40
and 160x50; the same SVGs are kept under tests/data/viewer/ for the README.

The screenshots show addresses and steps of one kernel image: on another one (firmware/ rebuilt) they are skipped
with the command that takes them again, `pytest tests/test_viewer_snapshots.py --snapshot-update`, run twice (syrupy writes the snapshots
when the session ends; the README's copies are taken from them)."""
from __future__ import annotations

import json
import pathlib
import shutil

import pytest

from lab.trace import Trace
from lab.viewer import Inspector
from lab.viewer.stepper import Stepper
from trace_helpers import recorded

HERE = pathlib.Path(__file__).resolve().parent
SNAPSHOTS = HERE / "__snapshots__" / "test_viewer_snapshots"
DOCS = HERE / "data" / "viewer"
MANIFEST = DOCS / "screenshots.json"
# snapshot test -> the file the README shows
SCREENSHOTS = {
    "test_at_80x24_c_capable_stops_at_the_pads_call": "stepper-80x24.svg",
    "test_at_120x40_cap_user_crosses_its_safe_point": "stepper-120x40.svg",
    "test_at_160x50_the_fake_signal_moves_pipe_reader_under_a_watch": "stepper-160x50.svg",
    "test_at_80x24_question_mark_shows_the_keys": "stepper-help-80x24.svg",
}


@pytest.fixture(scope="module")
def inspector():
    path, _ = recorded()
    return Inspector(Trace.load(path))


@pytest.fixture(scope="module")
def same_image(inspector, request):
    """Skip unless the screenshots were taken on this kernel image (or are being taken again)."""
    image = inspector.trace.image.source_hash
    updating = request.config.getoption("--snapshot-update", default=False)
    if updating:
        MANIFEST.write_text(json.dumps({"image_hash": image, "screenshots": SCREENSHOTS}, indent=1) + "\n")
    elif json.loads(MANIFEST.read_text())["image_hash"] != image:
        pytest.skip("the stepper's screenshots were taken on another kernel image; take them again with "
                    "`pytest tests/test_viewer_snapshots.py --snapshot-update`")
    return updating


def first(trace, kind, **fields):
    return next(e for e in trace.events if e.kind == kind and all(getattr(e, k) == v for k, v in fields.items()))


async def settle(pilot):
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_at_80x24_c_capable_stops_at_the_pads_call(snap_compare, inspector, same_image):
    started = first(inspector.trace, "patch", state="transition").at

    async def run_before(pilot):
        await pilot.press("c", *"capable", "enter")
        await settle(pilot)
    assert snap_compare(Stepper(inspector, step=started), terminal_size=(80, 24), run_before=run_before)


def test_at_120x40_cap_user_crosses_its_safe_point(snap_compare, inspector, same_image):
    moved = first(inspector.trace, "migrated", tid=1).at
    assert snap_compare(Stepper(inspector, step=moved), terminal_size=(120, 40))


def test_at_160x50_the_fake_signal_moves_pipe_reader_under_a_watch(snap_compare, inspector, same_image):
    async def run_before(pilot):
        await pilot.press("w", *"pipe-reader.kgr_universe", "enter")
        await pilot.press("b", *"universe pipe-reader", "enter")
        await pilot.press("greater_than_sign")
        await settle(pilot)
        await pilot.press("W")
        await settle(pilot)
        await pilot.press("right")
        await settle(pilot)
    assert snap_compare(Stepper(inspector, step=inspector.trace.start), terminal_size=(160, 50), run_before=run_before)


def test_at_80x24_question_mark_shows_the_keys(snap_compare, inspector, same_image):
    assert snap_compare(Stepper(inspector, step=inspector.trace.start), press=["question_mark"], terminal_size=(80, 24))


def test_the_readmes_screenshots_are_the_accepted_snapshots(same_image):
    for test, name in SCREENSHOTS.items():
        snapshot = SNAPSHOTS / f"{test}.svg"
        if same_image:                 # --snapshot-update: the README's copies follow
            shutil.copyfile(snapshot, DOCS / name)
        assert (DOCS / name).read_bytes() == snapshot.read_bytes(), name
