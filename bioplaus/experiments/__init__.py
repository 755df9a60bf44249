"""Experiment kinds: what a run is (its table, data, loop, metrics and figures).

``supervised`` and ``continual`` share the `GradientExperiment` template; a new kind is one
module with a class registered by `bioplaus.registry.register_experiment` (or the
``bioplaus.experiments`` entry-point group).
"""

from bioplaus.experiments.base import Experiment, RunResult, default_out, run_experiment

__all__ = ["Experiment", "RunResult", "default_out", "run_experiment"]
