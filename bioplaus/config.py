"""Typed experiment configuration: TOML in, dataclasses out, one clear error per bad field.

One TOML file describes one experiment. Sections: ``[data]``, ``[network]`` (with
``[network.spiking]``), ``[rule]`` (common optimiser fields plus rule-specific options),
``[train]``, ``[record]`` (with ``[[record.probes]]``), ``[[plugins]]``, and the table of the
experiment kind (``kind = "..."`` at the top level; ``[continual]`` for task streams). The
kind is inferred when the file does not name it: the kind whose table is present, else
``supervised``. Every field has a default; unknown keys are errors.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioplaus.errors import ConfigError


@dataclass
class DataConfig:
    """Where the data comes from and how it is batched."""

    dataset: str = "digits"
    path: str | None = None
    data_dir: str | None = None
    download: bool = False
    val_fraction: float = 0.1
    normalize: str = "unit"  # none | unit | standard
    batch_size: int = 64
    eval_batch_size: int = 1000
    limit_train: int = 0  # 0 = all samples; >0 keeps the first n (after the seeded split)
    limit_test: int = 0
    evaluate_on: str = "test"  # test | val : the split reported as the headline accuracy
    scale: str | float = "auto"  # auto | uint8 | unit | none | a number to divide by
    test_fraction: float | None = None  # test split of data without one; None = 0.2
    split_seed: int | None = None  # seed of that split; None = 0 (passed as seed=)


@dataclass
class SpikingConfig:
    """LIF dynamics and input encoding. β = exp(-dt/τ); time is explicit (seconds)."""

    T: int = 20
    dt: float = 1e-3
    tau: float = 5e-3
    threshold: float = 1.0
    reset: str = "subtract"  # subtract | zero
    surrogate: str = "atan"  # atan | fast_sigmoid | sigmoid | triangle
    slope: float | None = None
    encoder: str = "direct"  # direct | poisson | latency
    max_rate: float | None = None  # Hz, poisson encoder; default 1/dt
    readout: str = "mem_mean"  # mem_mean | spike_count
    output_spikes: bool = True  # the output layer fires (False: leaky integrator, no reset)


@dataclass
class NetworkConfig:
    """A layer stack; ``backend`` switches the same description between rate and spiking."""

    backend: str = "rate"  # rate | spiking
    arch: str = "mlp"  # mlp | cnn
    hidden: list[int] = field(default_factory=lambda: [256])
    activation: str = "elu"
    bias: bool = False
    channels: list[int] = field(default_factory=list)  # cnn: conv widths, one block each
    kernel: int = 3
    pool: int = 2  # cnn: max-pool size after each conv block (1 = none)
    init: str = "default"  # default | kaiming | xavier | orthogonal
    init_gain: float = 1.0
    spiking: SpikingConfig = field(default_factory=SpikingConfig)


@dataclass
class RuleConfig:
    """The learning rule and its optimiser; keys not listed here are the rule's own options."""

    name: str = "backprop"
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "none"  # none | cosine
    clip: float = 0.0  # max gradient norm; 0 = off
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """How long to train and how often to evaluate and log."""

    epochs: int = 1
    max_steps: int = 0  # 0 = no limit
    eval_every: int = 1  # epochs
    log_every: int = 10  # steps between training-metric records
    threads: int = 0  # torch threads; 0 = torch's default
    progress: bool = True
    report: bool = True  # write figures next to the run file at the end
    divergence_factor: float = 1e4  # fail when the rule's first "min" metric exceeds this x its lowest value; 0 = off


@dataclass
class ProbeConfig:
    """Record layer variables of the first ``samples`` samples of a training batch."""

    layers: list[Any] = field(default_factory=lambda: ["all"])
    variables: list[str] = field(default_factory=lambda: ["spikes", "mem"])
    every: int = 100  # steps
    samples: int = 4


@dataclass
class RecordConfig:
    """What goes into the run file besides metrics."""

    out: str = ""  # default runs/<name>.h5
    probes: list[ProbeConfig] = field(default_factory=list)
    weights_every: int = 1  # epochs between weight snapshots; 0 = off
    save_model: bool = True
    flush_every_s: float = 30.0
    overwrite: bool = False  # replace an existing run file at out (bioplaus run --overwrite)


@dataclass
class PluginConfig:
    """A plugin by registry name; other keys are its options."""

    name: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """One experiment."""

    name: str = "run"
    seed: int = 0
    description: str = ""
    kind: str = ""  # experiment kind; "" = inferred (see load_config)
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    rule: RuleConfig = field(default_factory=RuleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    plugins: list[PluginConfig] = field(default_factory=list)
    # The experiment kind's own tables, parsed by its ``Config`` dataclass (name -> object).
    sections: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Any:
        """The parsed table ``[name]`` owned by the experiment kind (None when absent)."""
        return self.sections.get(name)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (options folded back into their tables), JSON-safe."""
        sections = self.sections
        d = dataclasses.asdict(dataclasses.replace(self, sections={}))
        del d["sections"]
        d["rule"] = {**{k: v for k, v in d["rule"].items() if k != "options"}, **d["rule"]["options"]}
        d["plugins"] = [{"name": p["name"], **p["options"]} for p in d["plugins"]]
        for key, value in sections.items():
            d[key] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# Tables whose unknown keys are passed on as options to a class chosen by name.
_OPEN_TABLES = {RuleConfig, PluginConfig}

# ----------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__} {value!r}")
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (inner,) = args or (Any,)
        return [_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: cannot read a value of type {_type_name(tp)}")  # pragma: no cover


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a dict, naming the exact field on any error."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in ("options", "sections")]
    kwargs: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key in names:
            kwargs[key] = _convert(value, hints[key], path)
        elif cls in _OPEN_TABLES:
            options[key] = value
        else:
            raise ConfigError(f"{path}: unknown key; valid keys in [{where or 'top level'}]: {', '.join(names)}")
    if cls in _OPEN_TABLES:
        kwargs["options"] = options
    return cls(**kwargs)


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = d
    for i, p in enumerate(parts[:-1]):
        if p.isdigit():
            if not isinstance(cur, list) or int(p) >= len(cur):
                where = ".".join(parts[:i]) or "top level"
                raise ConfigError(f"--set {dotted}: {where} has no entry {p}")
            cur = cur[int(p)]
            continue
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict | list):
            raise ConfigError(f"--set {dotted}: {p} is not a table")
        cur = nxt
    last = parts[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value


def parse_override(item: str) -> tuple[str, Any]:
    """``key.sub=value`` with a TOML value (bare words are strings)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. rule.lr=0.05")
    key, raw = item.split("=", 1)
    key, raw = key.strip(), raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def load_config(
    source: str | Path | dict[str, Any] | ExperimentConfig, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Read a TOML file, a dict or a config object, apply ``key=value`` overrides, validate.

    The experiment kind (``kind``, else inferred) parses its own table; every other
    top-level key must be one of `ExperimentConfig`'s fields.
    """
    if isinstance(source, ExperimentConfig):
        source = source.to_dict()
    if isinstance(source, dict):
        raw = copy.deepcopy(source)
        default_name = "run"
    else:
        p = Path(source)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            raw = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: malformed TOML: {e}") from None
        default_name = p.stem
    for item in overrides or []:
        key, value = parse_override(item)
        _set_path(raw, key, value)
    raw.setdefault("name", default_name)
    kind_cls = _kind_of(raw)
    sections: dict[str, Any] = {}
    own = kind_cls.sections()
    for key, table in own.items():
        # A kind's table is always parsed (defaults when absent), so the kind can rely on it.
        sections[key] = _convert(raw.pop(key, None) or {}, table, key)
    cfg = from_dict(ExperimentConfig, raw)
    cfg.kind = kind_cls.name
    cfg.sections = sections
    validate(cfg)
    return cfg


def _kind_of(raw: dict[str, Any]) -> Any:
    """The experiment kind class: ``raw["kind"]``, else the kind whose table is present."""
    from bioplaus.registry import EXPERIMENTS

    kind = raw.get("kind") or ""
    if not isinstance(kind, str):
        raise ConfigError(f"kind: expected a string, got {kind!r}")
    owners = {
        key: name for name, cls in EXPERIMENTS.items() for key in cls.sections()
    }
    if not kind:
        present = sorted({owners[k] for k in raw if k in owners})
        if len(present) > 1:
            raise ConfigError(f"kind: tables of several kinds are present ({', '.join(present)}); name one with kind = ...")
        kind = present[0] if present else "supervised"
    kind_cls = EXPERIMENTS.get(kind, "kind")
    for key in raw:
        if key in owners and key not in kind_cls.sections():
            raise ConfigError(f"{key}: this table belongs to kind {owners[key]!r}, but kind = {kind!r}")
    return kind_cls


def check_choice(value: str, valid: typing.Iterable[str], where: str) -> None:
    """ConfigError naming ``where`` unless ``value`` is one of ``valid``."""
    valid = list(valid)
    if value not in valid:
        raise ConfigError(f"{where}: unknown value {value!r}; valid: {', '.join(valid)}")


def validate(cfg: ExperimentConfig) -> None:
    """Checks common to every kind (train, record), then the kind's own ``validate``."""
    from bioplaus.registry import EXPERIMENTS

    t = cfg.train
    if t.epochs < 0 or t.max_steps < 0:
        raise ConfigError("train.epochs: must be >= 0")
    for i, pr in enumerate(cfg.record.probes):
        for v in pr.variables:
            check_choice(v, ["spikes", "mem", "current", "input", "out"], f"record.probes[{i}].variables")
        if pr.every <= 0 or pr.samples <= 0:
            raise ConfigError(f"record.probes[{i}]: every and samples must be positive")
    EXPERIMENTS.get(cfg.kind or "supervised", "kind").validate(cfg)


def parse_options(cls: type, options: dict[str, Any], where: str) -> Any:
    """Validate a rule's or plugin's options table against its ``Options`` dataclass."""
    return from_dict(cls, options, where)
