"""Declared metrics: what a metric is called, which way is better, its unit and role.

A leaf (standard library only): the run context declares them, kinds, rules and plugins
state theirs, the reader turns a run file's declarations back into them, and the figures
and summaries read them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

DIRECTIONS = ("max", "min", "none")


@dataclass(frozen=True)
class Metric:
    """A declared metric: what it is called, which way is better, its unit and role.

    ``name`` may hold shell-style wildcards for a family (``task*/test_acc``,
    ``layer*/alignment``). ``headline`` marks the one number a run is judged by;
    ``progress`` puts a per-step metric in the progress bar; ``summary`` puts a final value
    in the one-line summary and the epoch lines. ``panel`` groups metrics into one plot.
    """

    name: str
    direction: str = "none"  # max | min | none
    unit: str = ""
    headline: bool = False
    progress: bool = False
    summary: bool = False
    panel: str = ""
    description: str = ""

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.name)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", False)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Metric:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def find_metric(declared: Iterable[Metric], name: str) -> Metric | None:
    """The first declaration matching ``name`` (exact names before families)."""
    declared = list(declared)
    for m in declared:
        if m.name == name:
            return m
    return next((m for m in declared if m.matches(name)), None)


def headline(declared: Iterable[Metric]) -> Metric | None:
    """The declaration marked ``headline`` (the first one), if any."""
    return next((m for m in declared if m.headline), None)
