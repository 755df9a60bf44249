"""Figures and a text summary from a run file (``bioplaus report`` / ``bioplaus inspect``).

`bioplaus.report.kit`: the figure kit (figure creation and saving, styles, the generic
figures) and `make_report`; `bioplaus.report.text`: `summary_text` for ``inspect``. Names
are imported on first use, so that the text summary and the kinds that only name figures
do not load matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "figures_for": "bioplaus.report.kit",
    "make_report": "bioplaus.report.kit",
    "new_figure": "bioplaus.report.kit",
    "save_figure": "bioplaus.report.kit",
    "fmt": "bioplaus.report.text",
    "summary_text": "bioplaus.report.text",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bioplaus.report' has no attribute {name!r}")


__all__ = list(_LAZY)
