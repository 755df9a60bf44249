"""What a sweep runs: grid and zipped axes x seeds, expanded into named, validated runs.

A sweep is the cartesian product ``grid_1 x ... x grid_n x zip x seeds``; the zipped axes
move together (their value lists have one length) and count as one axis. Seeds are
``0..N-1`` unless ``seed`` is itself an axis. Every run gets a deterministic,
filesystem-safe file name ``<name>__<key>=<value>...__seed=<s>.h5`` (a hash of the
parameters instead when that is too long).
"""

from __future__ import annotations

import builtins
import hashlib
import itertools
import json
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioplaus.config import (
    ExperimentConfig,
    check_overrides,
    config_source,
    load_config,
    parse_override,
)
from bioplaus.errors import ConfigError
from bioplaus.resources import cpu_count, size_text

MAX_RUNS = 100_000  # runs per sweep (each validated run keeps its config in memory)
RUN_BYTES = 6500  # measured: one RunSpec of quickstart, its config dict included
MAX_STEM = 120  # longer names are hashed (file systems allow 255 bytes)
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


@dataclass
class RunSpec:
    """One run of a sweep: its axis values, seed, file name and validated config (a dict)."""

    params: dict[str, Any]
    seed: int
    file: str
    config: dict[str, Any] = field(repr=False)

    @property
    def stem(self) -> str:
        return self.file.removesuffix(".h5")


def split_values(text: str) -> list[str]:
    """``"0.1,[16,16],'a,b'"`` -> ``["0.1", "[16,16]", "'a,b'"]``: commas outside brackets and quotes."""
    out, cur, depth, quote = [], [], 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def parse_axis(item: str, flag: str = "--grid") -> tuple[str, list[Any]]:
    """``key=v1,v2,...`` -> ``(key, [v1, v2, ...])``, each value parsed as TOML (as ``--set``)."""
    if "=" not in item:
        raise ConfigError(f"{flag} {item!r}: expected key=v1,v2,..., e.g. rule.lr=0.01,0.1")
    key, raw = item.split("=", 1)
    key = key.strip()
    pieces = split_values(raw)
    if not key or any(p == "" for p in pieces):
        raise ConfigError(f"{flag} {item!r}: empty key or value")
    return key, [parse_override(f"{key}={p}")[1] for p in pieces]


def parse_axes(items: Iterable[str], flag: str) -> dict[str, list[Any]]:
    axes: dict[str, list[Any]] = {}
    for item in items:
        key, values = parse_axis(item, flag)
        if key in axes:
            raise ConfigError(f"{flag} {key}: given twice")
        axes[key] = values
    return axes


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_value(v: Any) -> str:
    """A Python value as TOML text for a ``key=value`` override (tables as inline tables)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        items = [f"{k if _BARE_KEY.match(str(k)) else json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()]
        return "{" + ", ".join(items) + "}"
    if v is None:
        raise ConfigError("a sweep value cannot be None (TOML has no null)")
    return repr(v)


def value_text(v: Any) -> str:
    """A value as it appears in a file name and in the index."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    if isinstance(v, list | dict):
        return json.dumps(v, separators=(",", ":"))
    return repr(v)


def run_file_name(name: str, params: Mapping[str, Any], seed: int) -> str:
    """``<name>__k=v__...__seed=s.h5``, filesystem-safe; hashed parameters if too long."""
    parts = [f"{k}={value_text(v)}" for k, v in params.items()]
    stem = "__".join([name, *parts, f"seed={seed}"])
    stem = _UNSAFE.sub("_", stem).strip("._") or "run"
    if len(stem) > MAX_STEM:
        digest = hashlib.sha256(json.dumps([name, list(map(list, params.items()))], default=str).encode()).hexdigest()
        short = _UNSAFE.sub("_", name)[: MAX_STEM - 40].strip("._") or "run"
        stem = f"{short}__{digest[:12]}__seed={seed}"
    return stem + ".h5"


def expand(
    grid: Mapping[str, Sequence[Any]] | None = None,
    zip: Mapping[str, Sequence[Any]] | None = None,  # noqa: A002 - the documented keyword
    seeds: int | None = None,
) -> list[tuple[dict[str, Any], int]]:
    """The sweep's points in order: ``[(axis values, seed), ...]`` (grid x zip x seeds).

    Their number is bounded (MAX_RUNS) before any is made: see `check_count`.
    """
    grid = _axes(grid, "--grid")
    zipped = _axes(zip, "--zip")
    for key in zipped:
        if key in grid:
            raise ConfigError(f"--zip {key}: also a --grid axis")
    for key, values in [*grid.items(), *zipped.items()]:
        if not values:
            raise ConfigError(f"{key}: an axis needs at least one value")
    for key, values in grid.items():
        texts = [value_text(v) for v in values]
        if len(set(texts)) != len(texts):
            raise ConfigError(f"{key}: a value is listed twice ({', '.join(texts)})")
    if zipped:  # a zipped axis may repeat a value; the rows of values may not repeat
        rows = [json.dumps([value_text(v) for v in vals]) for vals in builtins.zip(*zipped.values())]
        if len(set(rows)) != len(rows):
            raise ConfigError("--zip: the same combination of values is listed twice")
    lengths = {k: len(v) for k, v in zipped.items()}
    if len(set(lengths.values())) > 1:
        raise ConfigError("--zip: zipped axes need the same number of values; got "
                          + ", ".join(f"{k}: {n}" for k, n in lengths.items()))
    seed_axis = "seed" in grid or "seed" in zipped
    if seed_axis and seeds is not None:
        raise ConfigError("--seeds: seed is already an axis; give one or the other")
    for key, values in [*grid.items(), *zipped.items()]:
        if key == "seed" and not all(isinstance(s, int) and not isinstance(s, bool) for s in values):
            raise ConfigError(f"seed: expected integers, got {values}")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, numbers.Integral)):
        raise ConfigError(f"--seeds: expected a positive integer, got {type(seeds).__name__} {value_text(seeds)[:60]}")
    n_seeds = 1 if seeds is None else int(seeds)
    if n_seeds < 1:
        raise ConfigError(f"--seeds: expected a positive integer, got {seeds}")
    check_count(grid, zipped, n_seeds)
    zip_rows = [dict(builtins.zip(zipped, vals)) for vals in builtins.zip(*zipped.values())] if zipped else [{}]
    points: list[tuple[dict[str, Any], int]] = []
    for combo in itertools.product(*grid.values()):
        for zrow in zip_rows:
            params = {**dict(builtins.zip(grid, combo)), **zrow}
            if seed_axis:
                seed = params.pop("seed")
                points.append((params, seed))
            else:
                points.extend((dict(params), s) for s in range(n_seeds))
    return points


def _axes(axes: Any, flag: str) -> dict[str, list[Any]]:
    """``{dotted key: [values]}`` of ``--grid`` / ``--zip`` (None: no axis), checked."""
    if axes is None:
        return {}
    if not isinstance(axes, Mapping):
        raise ConfigError(f"{flag}: expected a dict of dotted key -> list of values, got {type(axes).__name__}")
    out: dict[str, list[Any]] = {}
    for k, v in axes.items():
        if not isinstance(k, str):
            raise ConfigError(f"{flag}: keys must be dotted strings such as 'rule.lr', got {value_text(k)[:60]}")
        if isinstance(v, str | bytes | Mapping) or not isinstance(v, Sequence):
            raise ConfigError(f"{flag} {k}: expected a list of values, got {type(v).__name__}")
        if len(v) > MAX_RUNS:
            raise ConfigError(f"{flag} {k}: {len(v)} values (a sweep holds at most {MAX_RUNS} runs)")
        out[k] = list(v)
    return out


def check_count(grid: Mapping[str, list[Any]], zipped: Mapping[str, list[Any]], n_seeds: int) -> None:
    """Refuse a sweep of more than MAX_RUNS runs before any is planned (each validated run
    keeps its config, ~RUN_BYTES), naming ``--seeds`` when the seeds alone are too many."""
    settings = math.prod(len(v) for v in grid.values()) * (len(next(iter(zipped.values()))) if zipped else 1)
    total = settings * n_seeds
    if total > MAX_RUNS:
        count = str(total) if total < 10**15 else f"{total:.3g}"
        where = "--seeds" if n_seeds > 1 and settings <= MAX_RUNS else "--grid"
        raise ConfigError(f"{where}: {settings} settings x {n_seeds} seeds = {count} runs, more than "
                          f"{MAX_RUNS} per sweep; planning them would need about {size_text(total * RUN_BYTES)}")


def resolve_source(config: str | Path | Mapping[str, Any] | ExperimentConfig) -> str | dict[str, Any]:
    """A TOML path / packaged sim name as a path, a dict or config object as a dict."""
    source = config_source(config)
    return source.to_dict() if isinstance(source, ExperimentConfig) else source


def build_runs(
    config: str | Path | Mapping[str, Any] | ExperimentConfig,
    grid: Mapping[str, Sequence[Any]] | None = None,
    zip: Mapping[str, Sequence[Any]] | None = None,  # noqa: A002
    seeds: int | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    *,
    workers: int = 1,
    report: bool = False,
) -> list[RunSpec]:
    """Expand and validate every run (``load_config`` on each) before anything runs.

    Axis values are applied after ``overrides``. Each run gets ``train.progress=false``,
    ``train.report=<report>`` and, when the config asks for all cores (``train.threads = 0``),
    ``train.threads = max(1, cores // workers)``. A bad value raises a one-line
    `ConfigError` naming the run.
    """
    source = resolve_source(config)
    check_overrides(overrides)
    if isinstance(overrides, Mapping):
        base_items = [f"{k}={toml_value(v)}" for k, v in overrides.items()]
    else:
        base_items = list(overrides or [])
    threads = max(1, cpu_count() // max(1, workers))
    runs: list[RunSpec] = []
    seen: dict[str, dict[str, Any]] = {}
    for params, seed in expand(grid, zip, seeds):
        items = [*base_items, *(f"{k}={toml_value(v)}" for k, v in params.items()), f"seed={seed}",
                 "train.progress=false", f"train.report={toml_value(report)}"]
        label = ", ".join([*(f"{k}={value_text(v)}" for k, v in params.items()), f"seed={seed}"])
        try:
            cfg = load_config(source, items)
        except ConfigError as e:
            raise ConfigError(f"sweep run ({label}): {e}") from None
        if cfg.train.threads == 0:
            cfg.train.threads = threads
        file = run_file_name(cfg.name, params, seed)
        if file in seen:
            raise ConfigError(f"sweep run ({label}): same file name {file} as run {seen[file]}")
        seen[file] = {**params, "seed": seed}
        runs.append(RunSpec(dict(params), seed, file, cfg.to_dict()))
    return runs
