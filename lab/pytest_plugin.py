"""pytest_plugin - the `lab_explore` fixture: explore a live patch's schedules from a test, assert the verdict.

Installed with the lab (entry point pytest11 `lab`), so in any project:

    def test_my_patch_is_consistent(lab_explore):
        result = lab_explore("my_patch.o", schedules=500)
        assert result.clean, result.reproducer

result is a lab.explore.Exploration: clean, reproducer (the `lab run` line
that shows the failure), minimal (its Outcome), violations, trace (the
failing run recorded into the test's tmp_path, or --lab-trace-dir) and
figures().  Schedules run in the test's process unless --lab-workers N
(a local Dask cluster) or --lab-scheduler ADDR is given.
"""
from __future__ import annotations

import pathlib

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("lab", "kGraft lab schedule exploration (the lab_explore fixture)")
    group.addoption("--lab-workers", type=int, default=None, metavar="N",
                    help="explore on a local Dask cluster of N worker processes (default: in the test's process)")
    group.addoption("--lab-scheduler", default=None, metavar="ADDR",
                    help="explore on the Dask cluster whose scheduler is at tcp://HOST:PORT")
    group.addoption("--lab-trace-dir", default=None, metavar="DIR",
                    help="record each failing schedule's trace into DIR (default: the test's tmp_path)")


@pytest.fixture(scope="session")
def lab_explore_runner(request):
    """Where lab_explore runs schedules, shared by the session's tests."""
    from lab.explore import make_runner
    config = request.config
    workers, scheduler = config.getoption("--lab-workers"), config.getoption("--lab-scheduler")
    runner = make_runner(0 if workers is None and scheduler is None else workers, scheduler)
    yield runner
    runner.close()


def _resolve(patch, request):
    """A patch path as given, else relative to the requesting test's file."""
    path = pathlib.Path(patch)
    if path.is_absolute() or path.exists():
        return path.resolve()
    beside = pathlib.Path(request.path).parent / path
    return beside.resolve() if beside.exists() else path.resolve()


@pytest.fixture
def lab_explore(request, tmp_path, lab_explore_runner):
    """explore(patch, model="kgraft", schedules=200, **plan options) -> Exploration.

    Plan options: workload, params (a dict), seeds, quanta, patch_ats,
    signal_afters, preemptions, instants, sample_seed, limit, tail, all."""
    from lab.explore import Plan, explore

    def run(patch, *, model="kgraft", schedules=200, params=None, **options):
        path = _resolve(patch, request)
        plan = Plan(str(path), model=model, schedules=schedules, params=tuple(sorted((params or {}).items())),
                    shown=str(patch), **options)
        trace_dir = request.config.getoption("--lab-trace-dir") or tmp_path
        return explore(plan, lab_explore_runner, trace_dir=trace_dir)
    return run
