"""Benchmark tables through `bioplaus.sweep`: several methods (sim files + overrides) as one sweep.

A benchmark that compares methods describes each as ``(sim file, overrides)``; `methods_sweep`
turns them into **one** sweep: the first method's sim is the base config, every config key
on which the methods differ (after their overrides) becomes a zipped axis, and
``description`` (a free-text config field) carries the method's label, so `compare` groups by
it. Seeds are the sweep's seeds axis; ``--workers`` / ``--ray`` choose the executor; the run
files and the index stay in ``--out-dir`` and a benchmark started again resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bioplaus.config import load_config
from bioplaus.errors import ConfigError
from bioplaus.sweep import compare, sweep
from bioplaus.sweep.compare import Comparison
from bioplaus.sweep.runner import SweepResult

LABEL = "description"  # the config field that names the method in the sweep and in compare
SKIP = ("name", "seed", LABEL)


def add_sweep_args(ap: argparse.ArgumentParser, out_dir: str, workers: int = 1) -> None:
    """``--workers``, ``--ray`` and ``--out-dir`` (the sweep directory, resumable)."""
    ap.add_argument("--workers", type=int, default=workers,
                    help=f"runs at a time in a process pool (default {workers}: one after another in this process)")
    ap.add_argument("--ray", default=None, metavar="ADDRESS", help="run every run as a Ray task (HOST:PORT or local)")
    ap.add_argument("--out-dir", default=out_dir, help="sweep directory: run files + index (started again: resumes)")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _get(d: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    for part in dotted.split("."):
        if part not in d:  # a table a config leaves out (an empty [network.neuron])
            return default
        d = d[part]
    return d


def _drop_none(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _drop_none(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_drop_none(x) for x in v]
    return v


def method_axes(methods: Mapping[str, tuple[str | Path, Sequence[str]]],
                common: Sequence[str] = ()) -> tuple[Path, dict[str, list[Any]]]:
    """(base sim, zipped axes) that run every method: ``{label: (sim, overrides)}``.

    Each method's config is its sim with ``common`` then its own overrides; the base is the
    first sim with ``common`` only (what the sweep applies before the axes).

    The axes are the keys whose values differ between the methods' configs (each loaded
    with its own overrides), or the whole table when some methods lack a key of it (a
    rule's own options), plus ``description`` = the label.
    """
    labels = list(methods)
    base = Path(next(iter(methods.values()))[0])
    base_flat = flatten(load_config(base, list(common)).to_dict())
    dicts = [load_config(Path(sim), [*common, *over]).to_dict() for sim, over in methods.values()]
    flats = [flatten(d) for d in dicts]
    keys: list[str] = []
    for f in [base_flat, *flats]:
        keys.extend(k for k in f if k not in keys)
    # every key on which a method differs from another or from the base (a method's own
    # override that all methods share must still be set)
    differ = [k for k in keys if k not in SKIP
              and len({json.dumps(f.get(k, "<absent>"), sort_keys=True) for f in [base_flat, *flats]}) > 1]
    # A key some configs lack (a rule's own option) or leave unset (None: TOML has no null)
    # cannot be set key by key: the whole table it belongs to (e.g. [rule],
    # [network.spiking]) becomes the axis instead, unset keys left out (a table value
    # replaces the table, so they take their defaults).
    whole: set[str] = set()
    for k in differ:
        if "." in k and any(f.get(k) is None for f in flats):
            whole.add(k.rsplit(".", 1)[0])
    whole = {t for t in whole if not any(t.startswith(o + ".") for o in whole)}
    axes: dict[str, list[Any]] = {LABEL: labels}
    for table in sorted(whole):
        axes[table] = [_drop_none(_get(d, table, {})) for d in dicts]
    for k in differ:
        if any(k.startswith(t + ".") for t in whole):
            continue
        values = [f.get(k) for f in flats]
        if any(v is None for v in values):
            raise ConfigError(f"{k}: set in some methods, unset in others ({labels})")
        axes[k] = [_drop_none(v) for v in values]  # e.g. a [[plugins]] list: unset options left out
    return base, axes


def sweep_dir(methods: Mapping[str, tuple[str | Path, Sequence[str]]], out: str | Path,
              common: Sequence[str] = (), grid: Mapping[str, Sequence[Any]] | None = None) -> Path:
    """``out/set_<8 hex digits of the overrides>``: the directory `methods_sweep` runs them in."""
    per_method = {label: list(o) for label, (_, o) in methods.items()}
    key = json.dumps([list(common), per_method, {k: list(v) for k, v in (grid or {}).items()}], sort_keys=True,
                     default=str)
    return Path(out) / ("set_" + hashlib.sha256(key.encode()).hexdigest()[:8])


def methods_sweep(
    methods: Mapping[str, tuple[str | Path, Sequence[str]]],
    seeds: Sequence[int],
    out: str | Path,
    common: Sequence[str] = (),
    workers: int = 1,
    ray: str | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
) -> SweepResult:
    """Run seeds x ``grid`` x methods as one sweep (common overrides first); returns its result.

    The sweep directory is ``out/set_<8 hex digits of the overrides>`` (common and per
    method): a sweep started again with the same overrides resumes, one with other
    overrides (say another ``train.epochs``, which is not in the run file names) gets its
    own directory.
    """
    over = list(common)
    out = sweep_dir(methods, out, over, grid)
    base, axes = method_axes(methods, over)
    axes_grid = {"seed": list(seeds), **(grid or {})}  # seeds outermost, then grid, then methods
    res = sweep(base, grid=axes_grid, zip=axes, out=out, workers=workers, overrides=over, ray=ray)
    print(res.summary(), flush=True)
    for row in res.failed:
        print(f"  failed: {row['file']}: {row.get('error')}", flush=True)
    return res


def method_table(result: SweepResult, metric: str) -> dict[str, dict[str, Any]]:
    """``compare`` of ``metric`` over the sweep's directory, grouped by method label:
    ``{label: row}`` (``n``, ``mean``, ``std``, ``seeds``), in the methods' order; also writes
    ``compare_<metric>.csv`` / ``.md`` there."""
    c: Comparison = compare([result.out], by=[LABEL], metric=metric)
    rows = {r[LABEL]: r for r in c.rows}
    order = list(dict.fromkeys(row[LABEL] for row in result.rows))
    return {label: rows[label] for label in order if label in rows}


def runs_by_label(result: SweepResult) -> dict[str, list[dict[str, Any]]]:
    """The sweep's index rows (status, wall_s, final_*) per method label, in seed order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in result.rows:
        out.setdefault(row[LABEL], []).append(row)
    return out
