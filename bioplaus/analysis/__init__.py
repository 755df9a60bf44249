"""Analyses of a finished run: NeuroBench metrics (`neurobench`).

``bioplaus.analysis.neurobench_metrics`` loads its module on first use, so
``import bioplaus.analysis`` needs neither neurobench nor snntorch.
"""

from __future__ import annotations

from typing import Any

_NAMES = {"neurobench_metrics": "bioplaus.analysis.neurobench",
          "neurobench_table": "bioplaus.analysis.neurobench"}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'bioplaus.analysis' has no attribute {name!r}")
