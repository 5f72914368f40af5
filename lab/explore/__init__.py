"""explore - searching schedules for a consistency violation: enumeration, random samples, shrinking, local or Dask execution."""
from .explorer import Exploration, explore
from .plan import Plan
from .runner import DaskRunner, LocalRunner, make_runner
from .schedule import Instant, Outcome, Schedule, reproducer, run_schedule
from .shrink import shrink

__all__ = ["Plan", "Schedule", "Instant", "Outcome", "Exploration", "explore", "run_schedule", "reproducer",
           "shrink", "LocalRunner", "DaskRunner", "make_runner"]
