"""The walkthroughs in notebooks/ run from a clean kernel without an error,
and their committed outputs are the ones they produce now.

The lab is deterministic, so a notebook's outputs change only when the lab
(or a notebook) does: then `make notebooks` refreshes them.
"""
from __future__ import annotations

import importlib.util
import pathlib
import shutil

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

ROOT = pathlib.Path(__file__).resolve().parent.parent
RUNNER = ROOT / "notebooks" / "run_all.py"

_spec = importlib.util.spec_from_file_location("notebooks_run_all", RUNNER)
run_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_all)

NOTEBOOKS = run_all.notebooks()
HAVE_GCC = bool(shutil.which("gcc") and shutil.which("make"))
REFRESH = "run `make notebooks` to re-execute them and commit the result"


def test_there_are_walkthroughs():
    assert len(NOTEBOOKS) >= 5, f"expected the walkthroughs in {RUNNER.parent}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_its_outputs_are_current(path):
    committed = nbformat.read(path, as_version=4)
    try:
        executed = run_all.execute(committed)
    except CellExecutionError as exc:
        pytest.fail(f"{path.name} fails when executed:\n{exc}")
    if committed.metadata.get("lab", {}).get("needs_gcc") and not HAVE_GCC:
        pytest.skip(f"{path.name} ran without gcc, on its fallback path: its outputs differ from the committed ones")
    diffs = run_all.differences(committed, executed)
    assert not diffs, (f"the committed outputs of notebooks/{path.name} are stale ({len(diffs)} differences); "
                       f"{REFRESH}:\n  " + "\n  ".join(diffs[:10]))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_with_its_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), f"notebooks/{path.name} has cells never run; {REFRESH}"
    assert any(c.get("outputs") for c in code), f"notebooks/{path.name} has no outputs; {REFRESH}"
    errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, f"notebooks/{path.name} was committed with an error output; {REFRESH}"
