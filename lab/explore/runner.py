"""runner - where schedules run: in this process, or on a Dask cluster (local worker processes or one at an address).

A runner's run() takes a list of schedules and yields their Outcomes in the
list's order, whatever order they finish in; given stop(outcome), it stops
after the first outcome (in list order) for which stop holds and cancels
what is still queued.  Dask's distributed scheduler decides which worker
runs what; the lab only cuts the list into small tasks of schedules that
share a boot, so a worker restores one snapshot after another.
"""
from __future__ import annotations

import logging
import os
import re

from ..errors import LabError, UsageError
from . import worker

BATCH = 8                 # schedules per Dask task: small enough to stop early (a worker runs at most 8 past a
                          # violation), large enough to amortise a task (at 4, two workers ran 136-140
                          # schedules/s of explore-scaling's, at 8 150-151)
AHEAD = 3                 # tasks queued per worker
CONNECT_TIMEOUT = "10s"


class LocalRunner:
    """Runs every schedule in this process, one after the other."""

    workers = 1
    where = "in this process"

    def run(self, plan, schedules, *, probe=False, stop=None):
        for s in schedules:
            outcome = worker.run_one(plan, s, probe)
            yield outcome
            if stop is not None and stop(outcome):
                return

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


_ADDRESS = re.compile(r"(tcp|tls)://[^\s/:]+:[0-9]{1,5}")


def check_address(address):
    """Refuse a scheduler address that is not tcp://HOST:PORT (or tls://)."""
    if not _ADDRESS.fullmatch(address or ""):
        raise UsageError(f"--scheduler {address!r}: give the scheduler's address as tcp://HOST:PORT "
                         "(what `dask scheduler` prints)")
    port = int(address.rsplit(":", 1)[1])
    if not 0 < port < 65536:
        raise UsageError(f"--scheduler {address}: port {port} is out of range (1..65535)")


class DaskRunner:
    """Runs schedules on a Dask cluster, as tasks of a few schedules each."""

    def __init__(self, client, cluster=None, where=""):
        self.client = client
        self.cluster = cluster
        self.where = where

    @classmethod
    def local(cls, workers):
        """A LocalCluster of `workers` processes with one thread each (the
        emulator holds the GIL while it runs)."""
        from dask.distributed import Client, LocalCluster
        # the scheduler runs in this process: its progress lines are not the lab's output (errors still show)
        logging.getLogger("distributed").setLevel(logging.ERROR)
        try:
            # no dashboard; the scheduler's HTTP server (health checks) on a free port, not on 8787
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   scheduler_kwargs={"dashboard_address": ":0"}, silence_logs=logging.ERROR)
        except Exception as exc:
            raise LabError(f"cannot start a local Dask cluster of {workers} worker processes ({exc}); "
                           "explore in this process with --workers 0") from None
        try:
            client = Client(cluster)
        except BaseException:
            cluster.close()
            raise
        return cls(client, cluster, f"on a local Dask cluster of {workers} worker processes")

    @classmethod
    def connect(cls, address, timeout=CONNECT_TIMEOUT):
        """A client of the scheduler at address (its workers must import
        lab and reach the patch and image at the same paths)."""
        check_address(address)
        from dask.distributed import Client
        logging.getLogger("distributed").setLevel(logging.ERROR)
        try:
            client = Client(address, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"--scheduler {address}: cannot reach the scheduler ({exc}); start one with "
                             "`dask scheduler` and workers with `dask worker ADDRESS`") from None
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError):
            client.close()
            raise UsageError(f"--scheduler {address}: the scheduler has no worker; start one with "
                             f"`dask worker {address}`") from None
        return cls(client, None, f"on the Dask cluster of the scheduler at {address}")

    @property
    def workers(self):
        return max(len(self.client.scheduler_info().get("workers", {})), 1)

    def _tasks(self, plan, schedules, probe):
        """Consecutive schedules of one boot, BATCH at most, as (start index, schedules)."""
        out, i = [], 0
        while i < len(schedules):
            key = (schedules[i].seed, schedules[i].quantum)
            j = i + 1
            while j < len(schedules) and j - i < BATCH and (schedules[j].seed, schedules[j].quantum) == key:
                j += 1
            out.append((i, schedules[i:j]))
            i = j
        return out

    def run(self, plan, schedules, *, probe=False, stop=None):
        from dask.distributed import as_completed
        schedules = list(schedules)
        tasks = self._tasks(plan, schedules, probe)
        window = AHEAD * self.workers
        futures, results, done = {}, {}, as_completed()
        submitted = next_out = 0

        def submit():
            nonlocal submitted
            while submitted < len(tasks) and len(futures) < window:
                start, batch = tasks[submitted]
                f = self.client.submit(worker.run_batch, plan, batch, probe, pure=False)
                futures[f] = submitted
                done.add(f)
                submitted += 1
        try:
            submit()
            while next_out < len(tasks):
                if next_out not in results:
                    f = next(done)
                    results[futures.pop(f)] = f.result()     # a worker's exception is raised here
                    submit()
                    continue
                for outcome in results.pop(next_out):
                    yield outcome
                    if stop is not None and stop(outcome):
                        return
                next_out += 1
        finally:
            pending = list(futures)
            if pending:
                self.client.cancel(pending)

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def make_runner(workers=None, scheduler=None):
    """A runner: at the scheduler's address, in this process for 0 or 1
    workers, else a local cluster of that many (default: one per core)."""
    if scheduler is not None:
        return DaskRunner.connect(scheduler)
    if workers is None:
        workers = os.cpu_count() or 1
    if workers <= 1:
        return LocalRunner()
    return DaskRunner.local(workers)
