"""bioplaus: biologically plausible and spiking learning rules, every run recorded to HDF5.

The public API (docs/api.md): `run`, `load_config`, `build_net`, `build_rule`,
`build_plugin`, `setup`, `open_run`, `RunContext` and `Metric` for hand-written loops,
`RunResult`, the registries' decorators, and the errors. Names are imported on first use,
so ``import bioplaus`` stays cheap (torch loads when a name that needs it is touched).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

# torch's OpenMP runtime (libgomp) reads this once, when torch is first imported. Its default
# lets idle team threads spin, and on cores other processes also want, a team waits at every
# parallel region for a member the scheduler has put aside: the quickstart at 2 threads took
# 44-180 s instead of 3-13 s (benchmarks/results/threads_quickstart.md). Passive waiting (a futex
# sleep) brought it to 8.5 s. A value the user set wins; imported after torch, bioplaus cannot
# change it (the default of one thread, `train.threads = 1`, needs no team at all).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from bioplaus.errors import BioplausError, ConfigError, DataError, OutputError, RunError  # noqa: E402

_LAZY = {
    "run": "bioplaus.api",
    "load_config": "bioplaus.api",
    "build_net": "bioplaus.api",
    "build_rule": "bioplaus.api",
    "build_plugin": "bioplaus.api",
    "setup": "bioplaus.api",
    "open_run": "bioplaus.api",
    "Metric": "bioplaus.metrics",
    "RunContext": "bioplaus.context",
    "RunResult": "bioplaus.experiments.base",
    "Experiment": "bioplaus.experiments.base",
    "LearningRule": "bioplaus.rules.base",
    "Plugin": "bioplaus.training.hooks",
    "register_dataset": "bioplaus.registry",
    "register_experiment": "bioplaus.registry",
    "register_figure": "bioplaus.registry",
    "register_plugin": "bioplaus.registry",
    "register_rule": "bioplaus.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bioplaus' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = ["BioplausError", "ConfigError", "DataError", "OutputError", "RunError", "__version__", *_LAZY]
