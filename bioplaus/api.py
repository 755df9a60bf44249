"""The documented Python entry points (``import bioplaus``; see docs/api.md).

- `run`: one experiment from a TOML file, a dict or a config object, with ``--set``-style
  overrides and optionally your own data; returns a `RunResult` with the run file's path.
- `build_net`, `build_rule`, `build_plugin`, `setup`: the pieces by name (or class), for a
  hand-written loop; record it with a `RunContext`.
- `open_run`: read a run file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bioplaus.config import (
    ExperimentConfig,
    NetworkConfig,
    RuleConfig,
    check_overrides,
    config_source,
    from_dict,
    load_config,
    path_arg,
)
from bioplaus.context import RunContext
from bioplaus.errors import ConfigError, OutputError
from bioplaus.experiments.base import RunResult, run_experiment
from bioplaus.metrics import Metric
from bioplaus.registry import PLUGINS, RULES

__all__ = ["Metric", "RunContext", "RunResult", "build_net", "build_plugin", "build_rule", "load_config", "open_run", "run", "setup"]


def run(
    config: str | Path | Mapping[str, Any] | ExperimentConfig,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    *,
    out: str | Path | None = None,
    progress: bool | None = None,
    report: bool | None = None,
    data: Any = None,
    overwrite: bool | None = None,
) -> RunResult:
    """Run one experiment and return its result (``result.path`` is the run file).

    ``config``: a TOML path, the name of a ready sim (``"quickstart"``, see ``bioplaus
    list``), a dict shaped like the TOML, or an `ExperimentConfig`.
    ``overrides``: ``["rule.lr=0.05", ...]`` or ``{"rule.lr": 0.05}``. ``data``: a
    ``neuro_data.Dataset`` (e.g. from ``neuro_data.from_arrays``) used instead of ``[data]``.
    ``overwrite`` (default ``record.overwrite``): replace an existing run file at ``out``;
    without it an existing file is refused, and the default ``runs/<name>.h5`` takes the next
    free ``runs/<name>-<k>.h5``. Bad input raises a `bioplaus.BioplausError` subclass naming
    the field (`bioplaus.OutputError` for the run file).
    """
    items = override_items(overrides)
    config = config_source(config)
    if out is not None:
        out = path_arg(out, "out", OutputError)
    for name, flag in (("progress", progress), ("report", report), ("overwrite", overwrite)):
        if flag is not None and not isinstance(flag, bool):
            raise ConfigError(f"{name}: expected True, False or None, got {type(flag).__name__} {flag!r:.60}")
    cfg = load_config(config, items)
    if report is not None:
        cfg.train.report = report
    return run_experiment(cfg, out=out, progress=progress, data=data, overwrite=overwrite)


def override_items(overrides: Any) -> list[str]:
    """``--set``-style items from a list of ``"key=value"`` strings or a ``{key: value}`` mapping."""
    check_overrides(overrides)
    if isinstance(overrides, Mapping):
        return [f"{k}={_toml_value(v)}" for k, v in overrides.items()]
    return list(overrides or [])


def _toml_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return json.dumps(v) if isinstance(v, list | dict) else repr(v)


def build_net(input_shape: tuple[int, ...] | int, n_classes: int, *, seed: int = 0, **network: Any) -> Any:
    """A layer stack from ``[network]`` fields: ``build_net(64, 10, backend="spiking", hidden=[128])``."""
    from bioplaus.nets import build_net as _build

    cfg = from_dict(NetworkConfig, network, "network")
    shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
    return _build(cfg, shape, n_classes, seed=seed)


def build_rule(name: str | type, **options: Any) -> Any:
    """A learning rule by name (or class), e.g. ``build_rule("ccl", lr=0.5, loss_scale=8)``.

    Keys of ``[rule]`` (optimizer, lr, momentum, weight_decay, schedule, clip) set the
    optimiser; the others are the rule's own options, checked against its ``Options``.
    """
    cls = RULES.get(name, "rule.name") if isinstance(name, str) else name
    fields = {f.name for f in dataclasses.fields(RuleConfig)} - {"name", "options"}
    common = {k: v for k, v in options.items() if k in fields}
    own = {k: v for k, v in options.items() if k not in fields}
    cfg = from_dict(RuleConfig, {"name": getattr(cls, "name", "") or str(name), **common, **own}, "rule")
    if cfg.lr <= 0:
        raise ConfigError(f"rule.lr: must be > 0, got {cfg.lr}")
    return cls(cfg)


def build_plugin(name: str | type, **options: Any) -> Any:
    """A plugin by name (or class), e.g. ``build_plugin("hlop", lr=[0.01])``."""
    cls = PLUGINS.get(name, "plugins.name") if isinstance(name, str) else name
    return cls(options)


def setup(
    rule: Any,
    net: Any,
    n_classes: int,
    *,
    plugins: Iterable[Any] = (),
    run: RunContext | None = None,
    seed: int = 0,
    steps_per_epoch: int = 1,
    total_steps: int = 0,
) -> Any:
    """Bind ``rule`` to ``net`` (and ``plugins`` to the rule); metrics go to ``run`` if given."""
    from bioplaus.training.hooks import PluginList
    from bioplaus.training.task import RuleContext

    ctx = RuleContext(
        n_classes, tuple(getattr(net, "input_shape", ())), steps_per_epoch, total_steps, seed,
        getattr(net, "cfg", None), run,
    )
    rule.plugins = PluginList(list(plugins))
    rule.setup(net, ctx)
    rule.plugins.setup(rule, ctx)
    return rule


def open_run(path: str | Path) -> Any:
    """Open a run file for reading (see `bioplaus.record.reader.RunFile`)."""
    from bioplaus.record import open_run as _open

    return _open(path)
