"""Re-execute the walkthroughs in place, outputs included: `make notebooks`.

    python notebooks/run_all.py                 every notebook
    python notebooks/run_all.py 02_*.ipynb      some of them

Each notebook runs from a fresh kernel in the notebooks/ folder: ipykernel's
own python3 kernel on the interpreter running this script, whatever other
kernel specs are installed, so the notebooks see this environment's lab.  The lab is deterministic, so running a
notebook twice gives the same outputs; tests/test_notebooks.py re-executes
each one and compares its outputs with the committed ones, with the helpers
below.
"""
from __future__ import annotations

import copy
import os
import pathlib
import sys
import time

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

HERE = pathlib.Path(__file__).resolve().parent
KERNEL = "python3"
CELL_TIMEOUT = 300
COMPARED = ("text/plain", "text/html", "text/markdown", "image/svg+xml", "image/png", "application/json")
# variables that would change how rich draws or how Python hashes: the kernel runs without them
_UNSET = ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "JUPYTER_COLUMNS", "JUPYTER_LINES", "TERM",
          "COLORTERM", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def notebooks():
    """The walkthroughs, in reading order."""
    return sorted(HERE.glob("[0-9]*.ipynb"))


def kernel_env():
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env["PYTHONHASHSEED"] = "0"
    return env


def execute(path_or_nb, *, timeout=CELL_TIMEOUT):
    """Run a notebook from a clean kernel with notebooks/ as working directory.
    Returns the executed copy; raises nbclient's CellExecutionError on an error."""
    nb = nbformat.read(path_or_nb, as_version=4) if isinstance(path_or_nb, (str, pathlib.Path)) \
        else copy.deepcopy(path_or_nb)
    # no kernel directories: jupyter_client falls back on ipykernel's own spec (sys.executable)
    km = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    client = NotebookClient(nb, km=km, kernel_name=KERNEL, timeout=timeout, record_timing=False,
                            resources={"metadata": {"path": str(HERE)}})
    client.execute(env=kernel_env(), cleanup_kc=True)   # shut the kernel down at the end
    return nb


def outputs(nb):
    """What a reader sees, cell by cell: (cell index, [outputs]) for each code
    cell, an output being (type, name or mime type, text)."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        shown = []
        for o in cell.get("outputs", []):
            kind = o["output_type"]
            if kind == "stream":
                shown.append((kind, o["name"], _text(o["text"])))
            elif kind in ("display_data", "execute_result"):
                for mime in COMPARED:
                    if mime in o.get("data", {}):
                        shown.append((kind, mime, _text(o["data"][mime])))
            elif kind == "error":
                shown.append((kind, o["ename"], o["evalue"]))
        out.append((i, shown))
    return out


def _text(value):
    return "".join(value) if isinstance(value, list) else str(value)


def differences(committed, executed):
    """Human-readable differences between two notebooks' outputs (empty: none)."""
    a, b = outputs(committed), outputs(executed)
    if [i for i, _ in a] != [i for i, _ in b]:
        return ["the cells differ (the committed notebook is not the one that ran)"]
    diffs = []
    for (i, old), (_, new) in zip(a, b):
        if old == new:
            continue
        if len(old) != len(new):
            diffs.append(f"cell {i}: {len(old)} outputs committed, {len(new)} now")
            continue
        for (kind, name, text_old), (_k, name_new, text_new) in zip(old, new):
            if (name, text_old) != (name_new, text_new):
                diffs.append(f"cell {i}: {kind} {name} differs: {_first_change(text_old, text_new)}")
    return diffs


def _first_change(old, new):
    lines_old, lines_new = old.splitlines(), new.splitlines()
    for n, (x, y) in enumerate(zip(lines_old, lines_new)):
        if x != y:
            return f"line {n + 1}: {x[:100]!r} is now {y[:100]!r}"
    return f"{len(lines_old)} lines committed, {len(lines_new)} now"


def main(argv):
    paths = [pathlib.Path(a) for a in argv] or notebooks()
    paths = [p if p.is_absolute() or p.exists() else HERE / p for p in paths]
    for path in paths:
        start = time.perf_counter()
        nb = execute(path)
        nbformat.write(nb, path)
        print(f"{path.name}: executed in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
