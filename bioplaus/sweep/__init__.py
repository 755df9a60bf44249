"""Sweeps (grid / zip x seeds, each run its own file, one index) and comparisons.

``from bioplaus.sweep import sweep, compare``; see docs/sweeps.md. Runs execute in this
process, in a process pool (`bioplaus.sweep.executors`) or as Ray tasks
(``sweep(..., ray="HOST:PORT")``, `bioplaus.sweep.ray_executor`).
"""

from __future__ import annotations

from bioplaus.sweep.compare import Comparison, compare
from bioplaus.sweep.runner import SweepResult, sweep
from bioplaus.sweep.spec import RunSpec, build_runs, expand, run_file_name

__all__ = ["Comparison", "RunSpec", "SweepResult", "build_runs", "compare", "expand", "run_file_name", "sweep"]
