"""Typed experiment configuration: TOML in, dataclasses out, one clear error per bad field.

One TOML file describes one experiment: ``name``, ``seed``, ``description``, ``kind`` and
the tables every kind has, ``[train]`` and ``[record]`` (with ``[[record.probes]]``), here in
`ExperimentConfig`; every other table belongs to the experiment kind (`Experiment.sections`):
the gradient kinds' ``[data]``, ``[network]`` (with ``[network.spiking]``), ``[rule]``
(common optimiser fields plus rule-specific options) and ``[[plugins]]``, whose dataclasses
live here as well (nets and rules read them), ``[continual]``, ``[hopfield]``,
``[simulate]``. The kind is inferred when the file does not name it: the kind whose own
table is present, else ``supervised``. Every field has a default; unknown keys, and tables
of another kind, are errors.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioplaus.errors import ConfigError, did_you_mean
from bioplaus.metrics import Metric

# ----------------------------------------------------------------------------- numbers

INT64_MAX = 2**63 - 1  # TOML integers are 64-bit; torch and numpy take no wider ones
SEED_MAX = 2**32 - 1  # numpy's and torch's seeding accept 0 .. 2**32 - 1
MAX_T = 1_000_000  # time steps of a simulation (as bioplaus.export.nir)
MAX_LAYERS = 1_000  # entries of network.hidden / network.channels
MAX_THREADS = 256
MAX_TASKS = 1_000  # tasks of a stream; every task is evaluated after every task (T² evaluations)
# Raw text limits, checked before tomllib sees the text: tomllib recurses per nesting level
# and spends quadratic time and memory on long dotted keys.
MAX_TOML_BYTES = 1 << 20
MAX_DEPTH = 32  # nesting of tables and arrays in a config
MAX_DOTS_PER_LINE = 256


@dataclass(frozen=True)
class Range:
    """Bounds of a number field (of each number of a list field); None = unbounded.

    ``finite`` refuses nan and ±inf; ``max_items`` bounds the length of a list field.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True
    max_items: int | None = None
    what: str = "values"  # what the numbers of a list are, for messages ("widths")

    def describe(self) -> str:
        """``positive`` (> 0, or >= 1), ``>= 0``, ``in [0, 1)``, ``<= 256``."""
        lo = (">=", self.ge) if self.ge is not None else (">", self.gt) if self.gt is not None else None
        hi = ("<=", self.le) if self.le is not None else ("<", self.lt) if self.lt is not None else None
        if lo and hi:
            return f"in {'[' if lo[0] == '>=' else '('}{_num(lo[1])}, {_num(hi[1])}{']' if hi[0] == '<=' else ')'}"
        if lo in ((">", 0), (">=", 1)) and not hi:
            return "positive"
        op, v = lo or hi or ("", 0)
        return f"{op} {_num(v)}" if op else "a finite number"


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e16 else repr(v)


def bounded(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **bounds: Any) -> Any:
    """A dataclass field whose value (each number of a list) must lie in ``Range(**bounds)``.

    ``from_dict`` checks it with `check_range`: ``lr: float = bounded(0.1, gt=0)``.
    """
    meta = {"range": Range(**bounds)}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def check_range(
    value: Any,
    where: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    finite: bool = True,
) -> None:
    """ConfigError naming ``where`` unless number ``value`` is finite and within the bounds."""
    r = Range(ge, gt, le, lt, finite)
    if isinstance(value, float) and finite and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value}")
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {_short(value)}")
    if (ge is not None and value < ge) or (gt is not None and value <= gt) or (
        le is not None and value > le) or (lt is not None and value >= lt):
        raise ConfigError(f"{where}: must be {r.describe()}, got {_short(value)}")


def _check_field(value: Any, r: Range, where: str) -> None:
    """Apply ``r`` to a number or to each number of a list (strings and None pass)."""
    if isinstance(value, list):
        if r.max_items is not None and len(value) > r.max_items:
            raise ConfigError(f"{where}: at most {r.max_items} entries, got {len(value)}")
        for i, v in enumerate(value):
            try:
                _check_field(v, r, where)
            except ConfigError:
                raise ConfigError(
                    f"{where}: {r.what} must be {r.describe()}, got {_short(v)} at index {i}"
                ) from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        check_range(value, where, ge=r.ge, gt=r.gt, le=r.le, lt=r.lt, finite=r.finite)


@dataclass
class DataConfig:
    """Where the data comes from and how it is batched."""

    dataset: str = "digits"
    path: str | None = None
    data_dir: str | None = None
    download: bool = False
    val_fraction: float = bounded(0.1, ge=0, lt=1)
    normalize: str = "unit"  # none | unit | standard
    batch_size: int = bounded(64, ge=1)
    eval_batch_size: int = bounded(1000, ge=1)
    limit_train: int = bounded(0, ge=0)  # 0 = all samples; >0 keeps the first n (after the seeded split)
    limit_test: int = bounded(0, ge=0)
    evaluate_on: str = "test"  # test | val : the split reported as the headline accuracy
    scale: str | float = bounded("auto", gt=0)  # auto | uint8 | unit | none | a number to divide by
    test_fraction: float | None = bounded(None, gt=0, lt=1)  # test split of data without one; None = 0.2
    split_seed: int | None = bounded(None, ge=0, le=SEED_MAX)  # seed of that split; None = 0 (passed as seed=)


@dataclass
class SpikingConfig:
    """LIF dynamics and input encoding. β = exp(-dt/τ); time is explicit (seconds)."""

    T: int = bounded(20, ge=1, le=MAX_T)
    dt: float = bounded(1e-3, gt=0)
    tau: float = bounded(5e-3, gt=0)
    threshold: float = bounded(1.0, gt=0)
    reset: str = "subtract"  # subtract | zero
    surrogate: str = "atan"  # atan | fast_sigmoid | sigmoid | triangle
    slope: float | None = bounded(None, gt=0)
    encoder: str = "direct"  # direct | poisson | latency
    max_rate: float | None = bounded(None, gt=0)  # Hz, poisson encoder; default 1/dt
    readout: str = "mem_mean"  # mem_mean | spike_count
    output_spikes: bool = True  # the output layer fires (False: leaky integrator, no reset)


@dataclass
class NetworkConfig:
    """A layer stack; ``backend`` switches the same description between rate and spiking."""

    backend: str = "rate"  # the neuron model: rate | spiking | a registered one
    arch: str = "mlp"  # mlp | cnn
    hidden: list[int] = bounded(default_factory=lambda: [256], ge=1, max_items=MAX_LAYERS, what="widths")
    activation: str = "elu"
    bias: bool = False
    channels: list[int] = bounded(default_factory=list, ge=1, max_items=MAX_LAYERS, what="widths")  # cnn: conv widths, one block each
    kernel: int = bounded(3, ge=1)  # cnn: square kernel, padding kernel // 2, stride 1
    pool: int = bounded(2, ge=1)  # cnn: max-pool size after each conv block (1 = none)
    init: str = "default"  # default | kaiming | xavier | orthogonal
    init_gain: float = bounded(1.0)
    spiking: SpikingConfig = field(default_factory=SpikingConfig)
    # [network.neuron]: the options of the neuron model (its ``Options`` dataclass parses them).
    neuron: dict[str, Any] = field(default_factory=dict)


@dataclass
class RuleConfig:
    """The learning rule and its optimiser; keys not listed here are the rule's own options."""

    name: str = "backprop"
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = bounded(0.1, gt=0)
    momentum: float = bounded(0.0, ge=0, lt=1)
    weight_decay: float = bounded(0.0, ge=0)
    schedule: str = "none"  # none | cosine
    clip: float = bounded(0.0, ge=0)  # max gradient norm; 0 = off
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """How long to train and how often to evaluate and log."""

    epochs: int = bounded(1, ge=0)
    max_steps: int = bounded(0, ge=0)  # 0 = no limit
    eval_every: int = bounded(1, ge=1)  # epochs
    log_every: int = bounded(10, ge=1)  # steps between training-metric records
    # torch threads; 0 = torch's default (all cores, or OMP_NUM_THREADS). 1 by default: fastest
    # for small nets on a quiet or a busy machine, and the same numbers whatever the load
    # (docs/config.md, benchmarks/results/threads_quickstart.md)
    threads: int = bounded(1, ge=0, le=MAX_THREADS)
    device: str = "cpu"  # cpu | cuda | auto (cuda when a GPU is present, else cpu)
    progress: bool = True
    report: bool = True  # write figures next to the run file at the end
    divergence_factor: float = bounded(1e4, ge=0)  # fail when the rule's first "min" metric exceeds this x its lowest value; 0 = off


@dataclass
class ProbeConfig:
    """Record layer variables of the first ``samples`` samples of a training batch."""

    layers: list[Any] = field(default_factory=lambda: ["all"])
    variables: list[str] = field(default_factory=lambda: ["spikes", "mem"])
    every: int = bounded(100, ge=1)  # steps
    samples: int = bounded(4, ge=1)


@dataclass
class RecordConfig:
    """What goes into the run file besides metrics."""

    out: str = ""  # default runs/<name>.h5
    probes: list[ProbeConfig] = field(default_factory=list)
    weights_every: int = bounded(1, ge=0)  # epochs between weight snapshots; 0 = off
    save_model: bool = True
    flush_every_s: float = bounded(30.0, gt=0)
    overwrite: bool = False  # replace an existing run file at out (bioplaus run --overwrite)


@dataclass
class PluginConfig:
    """A plugin by registry name; other keys are its options."""

    name: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """One experiment: what every kind has, and the tables its kind owns.

    The generic part is the run's identity (name, seed, description, kind) and the two
    tables the run driver reads for every kind (``[train]``: threads, device, progress,
    report; ``[record]``: the run file). Everything else is a table of the kind
    (`Experiment.sections`, e.g. ``[data]``, ``[network]``, ``[rule]``, ``[[plugins]]`` of
    the gradient kinds, ``[hopfield]``), parsed into ``sections``; a section also reads as
    an attribute (``cfg.rule`` is ``cfg.section("rule")``).
    """

    name: str = "run"
    seed: int = bounded(0, ge=0, le=SEED_MAX)
    description: str = ""
    kind: str = ""  # experiment kind; "" = inferred (see load_config)
    train: TrainConfig = field(default_factory=TrainConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    # The experiment kind's own tables, parsed by its section types (name -> object).
    sections: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Any:
        """The parsed table ``[name]`` owned by the experiment kind (None when absent)."""
        return self.sections.get(name)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a table of the kind, read as an attribute.
        sections = self.__dict__.get("sections")
        if not name.startswith("_") and sections is not None and name in sections:
            return sections[name]
        raise AttributeError(f"a config of kind {self.__dict__.get('kind') or '?'!r} has no table or field {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            sections[name] = value
        else:
            super().__setattr__(name, value)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (options folded back into their tables), JSON-safe.

        Top-level keys: name, seed, description, kind, then the tables in the kind's
        ``table_order`` (the run file's ``config`` attribute keeps its layout), then the rest.
        """
        from bioplaus.registry import EXPERIMENTS

        head = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "sections"}
        tables = {k: head.pop(k) for k in ("train", "record")}
        tables.update((k, _plain(v)) for k, v in self.sections.items())
        net = tables.get("network")
        if isinstance(net, dict) and not net.get("neuron", True):
            del net["neuron"]  # a model without options records the table as before
        order = EXPERIMENTS.get(self.kind).table_order if self.kind in EXPERIMENTS else ()
        for key in order:
            if key in tables:
                head[key] = tables.pop(key)
        return {**head, **tables}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _plain(value: Any) -> Any:
    """``dataclasses.asdict`` of a table (a list of tables), options folded into the table."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if not dataclasses.is_dataclass(value):
        return copy.deepcopy(value)
    d = dataclasses.asdict(value)
    if type(value) in _OPEN_TABLES:
        d = {**{k: v for k, v in d.items() if k != "options"}, **d["options"]}
    return d


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
        # A value of the right type but out of range says so, not "expected a string".
        errors.sort(key=lambda m: ": expected " in m)
        raise ConfigError(errors[0] if errors else f"{where}: bad value {_short(value)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__} {_short(value)}")
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {_short(value)}")
        (inner,) = args or (Any,)
        return [_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {_short(value)}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_short(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_short(value)}")
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ConfigError(f"{where}: integer out of the 64-bit range, got {_short(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {_short(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{where}: must be a finite number, got {_short(value)}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_short(value)}")
        return value
    raise ConfigError(f"{where}: cannot read a value of type {_type_name(tp)}")  # pragma: no cover


def table_keys(cls: type) -> list[str]:
    """The keys of the table read into dataclass ``cls`` (its fields, bar the folded ones)."""
    return [f.name for f in dataclasses.fields(cls) if f.name not in ("options", "sections")]


def unknown_key(path: str, key: str, where: str, valid: typing.Sequence[str]) -> ConfigError:
    """The one-line error for an unknown key: every valid key of its table, and the closest."""
    return ConfigError(f"{path}: unknown key; valid keys in [{where or 'top level'}]: "
                       f"{', '.join(valid) or '(none)'}{did_you_mean(key, valid)}")


def from_dict(cls: type, data: dict[str, Any], where: str = "", common: type | None = None) -> Any:
    """Build dataclass ``cls`` from a dict, naming the exact field on any error.

    ``common``: the table ``data`` was taken from (`RuleConfig`, `PluginConfig`), whose keys
    an unknown-key error lists before ``cls``'s own (a rule's options live beside lr).
    """
    hints = typing.get_type_hints(cls)
    names = table_keys(cls)
    kwargs: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key in names:
            kwargs[key] = _convert(value, hints[key], path)
        elif cls in _OPEN_TABLES:
            options[key] = value
        else:
            raise unknown_key(path, key, where, [*(table_keys(common) if common else []), *names])
    if cls in _OPEN_TABLES:
        kwargs["options"] = options
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):
        r = f.metadata.get("range")
        if r is not None:
            _check_field(getattr(obj, f.name), r, f"{where}.{f.name}" if where else f.name)
    return obj


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (a message stays one readable line)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {len(str(abs(value)))} digits" if value.bit_length() < 10_000 else "a huge integer"
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``value`` at the dotted path ``a.b.0.c`` of ``d`` (tables made as needed; list
    entries by index); one ConfigError line for any path that cannot be followed."""
    item = f"--set {_short(dotted)}"
    parts = [p.strip() for p in dotted.split(".")]
    if any(not p for p in parts):
        raise ConfigError(f"{item}: empty key segment; expected key.sub=value, e.g. rule.lr=0.05")
    if len(parts) > MAX_DEPTH:
        raise ConfigError(f"{item}: more than {MAX_DEPTH} key segments")
    cur: Any = d
    for i, p in enumerate(parts):
        here = ".".join(parts[:i]) or "the top level"
        last = i == len(parts) - 1
        if isinstance(cur, list):
            if not (p.isascii() and p.isdigit()):
                raise ConfigError(f"{item}: {here} is a list; {_short(p)} is not an index (0..{len(cur) - 1})")
            k = int(p)
            if k >= len(cur):
                raise ConfigError(f"{item}: {here} has {len(cur)} entr{'y' if len(cur) == 1 else 'ies'}, no entry {k}")
            if last:
                cur[k] = value
                return
            cur = cur[k]
        elif isinstance(cur, dict):
            if last:
                cur[p] = value
                return
            nxt = cur.get(p)
            if nxt is None:
                if parts[i + 1].isascii() and parts[i + 1].isdigit():  # an entry of a missing list
                    raise ConfigError(f"{item}: {'.'.join(parts[: i + 1])} has no entry {parts[i + 1]}")
                nxt = cur[p] = {}
            cur = nxt
        else:
            raise ConfigError(f"{item}: {here} = {_short(cur)} is not a table or a list")


def parse_override(item: str) -> tuple[str, Any]:
    """``key.sub=value`` with a TOML value (bare words are strings)."""
    if "=" not in item:
        raise ConfigError(f"--set {_short(item)}: expected key=value, e.g. rule.lr=0.05")
    key, raw = item.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key:
        raise ConfigError(f"--set {_short(item)}: no key before '='; expected key=value, e.g. rule.lr=0.05")
    if "\n" in raw or "\r" in raw:
        raise ConfigError(f"--set {_short(key)}: the value spans several lines")
    try:
        value = _parse_toml(f"v = {raw}", f"--set {_short(key)}")["v"]
    except _TOMLSyntaxError:
        value = raw
    return key, value


class _TOMLSyntaxError(ConfigError):
    """Malformed TOML (``--set`` then reads the value as a bare string)."""


def _parse_toml(text: str, where: str) -> dict[str, Any]:
    """``tomllib.loads`` of untrusted text: size and nesting checked first, one line on failure."""
    if len(text) > MAX_TOML_BYTES:
        raise ConfigError(f"{where}: {len(text)} characters; a config holds at most {MAX_TOML_BYTES}")
    _check_toml_text(text, where)
    try:
        data = tomllib.loads(text)
    except (RecursionError, MemoryError):
        raise ConfigError(f"{where}: nested too deeply or too large for a config") from None
    except ValueError as e:  # TOMLDecodeError, or an integer literal past Python's digit limit
        raise _TOMLSyntaxError(f"{where}: malformed TOML: {e}") from None
    _check_depth(data, where)
    return data


# Strings and comments, blanked before brackets and dots are counted.
_TOML_STRINGS = re.compile(
    r'"""(?:[^"\\]|\\.|"(?!""))*"""'
    r"|'''(?:[^']|'(?!''))*'''"
    r'|"(?:[^"\\\n]|\\.)*"'
    r"|'[^'\n]*'"
    r"|#[^\n]*"
)


# A float literal (1.5, -0.25e-3) standing alone, not a part of a dotted key such as 1.2.3.
_TOML_FLOATS = re.compile(r"(?<![\w.])[+-]?\d[\d_]*\.\d[\d_]*(?:[eE][+-]?\d[\d_]*)?(?![\w.])")


def _check_toml_text(text: str, where: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and lines with more than MAX_DOTS_PER_LINE dots
    outside strings (a dotted key of n parts costs tomllib O(n²) time and memory)."""
    bare = _TOML_STRINGS.sub('""', text)
    depth = 0
    for m in re.finditer(r"[\[\]{}]", bare):
        depth += 1 if m.group() in "[{" else -1
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: arrays or tables nested more than {MAX_DEPTH} deep")
    bare = _TOML_FLOATS.sub("0", bare)  # a float's point is not a key separator
    for n, line in enumerate(bare.split("\n"), start=1):
        if line.count(".") > MAX_DOTS_PER_LINE:
            raise ConfigError(f"{where}: line {n} has more than {MAX_DOTS_PER_LINE} dotted key parts")


def _check_depth(data: Any, where: str) -> None:
    """Refuse values (dicts from Python included) nested more than MAX_DEPTH deep."""
    stack = [(data, 1)]
    while stack:
        obj, depth = stack.pop()
        if isinstance(obj, dict | list | tuple):
            if depth > MAX_DEPTH:
                raise ConfigError(f"{where}: tables or arrays nested more than {MAX_DEPTH} deep")
            stack.extend((v, depth + 1) for v in (obj.values() if isinstance(obj, dict) else obj))


def _read_config_file(p: Path) -> dict[str, Any]:
    """The TOML of config file ``p``: at most MAX_TOML_BYTES of UTF-8, one line on failure."""
    name = str(p) if len(str(p)) <= 200 else str(p)[:197] + "..."
    try:
        if not p.is_file():
            raise ConfigError(f"{name}: config file not found")
        with p.open("rb") as f:
            data = f.read(MAX_TOML_BYTES + 1)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{name}: cannot read the config file ({type(e).__name__})") from None
    if len(data) > MAX_TOML_BYTES:
        raise ConfigError(f"{name}: larger than {MAX_TOML_BYTES} bytes; not a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name}: not UTF-8 text (byte {e.start})") from None
    return _parse_toml(text, name)


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
        _check_depth(source, "config")
        raw = copy.deepcopy(source)
        default_name = "run"
    else:
        p = Path(source)
        raw = _read_config_file(p)
        default_name = p.stem
    for item in overrides or []:
        if not isinstance(item, str):
            raise ConfigError(f"--set {_short(item)}: expected a 'key=value' string")
        key, value = parse_override(item)
        _set_path(raw, key, value)
    raw.setdefault("name", default_name)
    kind_cls = _kind_of(raw)
    sections: dict[str, Any] = {}
    for key, table in kind_cls.sections().items():
        # A kind's table is always parsed (defaults when absent), so the kind can rely on it.
        value = raw.pop(key, None)
        if value is None:
            value = [] if typing.get_origin(table) is list else {}
        sections[key] = _convert(value, table, key)
    cfg = from_dict(ExperimentConfig, raw)
    cfg.kind = kind_cls.name
    cfg.sections = sections
    validate(cfg)
    return cfg


def kind_metrics(config: typing.Mapping[str, Any]) -> list[Metric]:
    """The metrics the kind of a stored config declares; [] if the config no longer loads.

    What a run file written before the declarations were stored with it falls back on
    (``RunFile.outcome(kind_metrics)``).
    """
    from bioplaus.registry import EXPERIMENTS

    try:
        cfg = load_config(dict(config))
        return EXPERIMENTS.get(cfg.kind).declared_metrics(cfg)
    except Exception:  # noqa: BLE001 - any config of any age: no declarations then
        return []


def _kind_of(raw: dict[str, Any]) -> Any:
    """The experiment kind class: ``raw["kind"]``, else the kind owning a table of its own
    that is present (``supervised`` when none is); every other top-level key must be a
    generic field or a table of that kind."""
    from bioplaus.registry import EXPERIMENTS

    kind = raw.get("kind") or ""
    if not isinstance(kind, str):
        raise ConfigError(f"kind: expected a string, got {_short(kind)}")
    owners: dict[str, list[str]] = {}
    for name, cls in EXPERIMENTS.items():
        for key in cls.sections():
            owners.setdefault(key, []).append(name)
    if not kind:
        # Only a table of one kind alone names the kind ([data] is every gradient kind's).
        present = sorted({owners[k][0] for k in raw if len(owners.get(k, ())) == 1})
        if len(present) > 1:
            raise ConfigError(f"kind: tables of several kinds are present ({', '.join(present)}); name one with kind = ...")
        kind = present[0] if present else "supervised"
    kind_cls = EXPERIMENTS.get(kind, "kind")
    own = kind_cls.sections()
    generic = [f.name for f in dataclasses.fields(ExperimentConfig) if f.name != "sections"]
    for key in raw:
        if key in own or key in generic:
            continue
        if key in owners:
            kinds = ", ".join(repr(k) for k in owners[key])
            raise ConfigError(
                f"{key}: this table belongs to kind{'s' if len(owners[key]) > 1 else ''} {kinds}, but kind = {kind!r}"
            )
        raise ConfigError(f"{key}: unknown key; valid keys in [top level] of kind {kind!r}: "
                          f"{', '.join([*generic, *own])}{did_you_mean(key, [*generic, *own])}")
    return kind_cls


def path_arg(value: Any, where: str, error: type[Exception] = ConfigError) -> Path:
    """``value`` (a str or path-like naming a file) as a Path, or ``error`` naming ``where``:
    the one check of every path a caller of the Python API hands in."""
    import os

    if isinstance(value, bytes) or not isinstance(value, str | os.PathLike):
        raise error(f"{where}: expected a path (str or pathlib.Path), got {type(value).__name__} {_short(value)}")
    try:
        text = os.fspath(value)
    except TypeError as e:  # a PathLike whose __fspath__ returns something else
        raise error(f"{where}: not a path ({e})") from None
    if not isinstance(text, str) or not text:
        raise error(f"{where}: expected a non-empty path, got {_short(value)}")
    if "\0" in text:
        raise error(f"{where}: the path {_short(text)} contains a NUL byte")
    return Path(text)


def config_source(config: Any) -> str | dict[str, Any] | ExperimentConfig:
    """``config`` as `load_config` takes it (the Python API's ``config`` argument): a TOML
    path or sim name resolved to a path, a mapping as a dict, a config object as is; anything
    else a ConfigError naming ``config``."""
    import os

    if isinstance(config, ExperimentConfig):
        return config
    if isinstance(config, typing.Mapping):
        return dict(config)
    if isinstance(config, str | os.PathLike) and not isinstance(config, bytes):
        from bioplaus.sims import resolve_config

        return resolve_config(str(path_arg(config, "config")))  # a ready sim by name, e.g. "quickstart"
    raise ConfigError(f"config: expected a TOML path, a sim name, a dict or an ExperimentConfig, "
                      f"got {type(config).__name__}")


def check_overrides(overrides: Any, where: str = "overrides") -> None:
    """ConfigError naming ``where`` unless ``overrides`` is None, a list of ``"key=value"``
    strings or a mapping with string keys (the Python API's ``--set``)."""
    if overrides is None:
        return
    if isinstance(overrides, typing.Mapping):
        bad = [k for k in overrides if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"{where}: keys must be dotted strings such as 'rule.lr', got {_short(bad[0])}")
        return
    if isinstance(overrides, str | bytes) or not isinstance(overrides, typing.Iterable):
        raise ConfigError(f"{where}: expected a list of 'key=value' strings or a dict, got {type(overrides).__name__}")
    bad = [i for i in overrides if not isinstance(i, str)]
    if bad:
        raise ConfigError(f"{where}: expected 'key=value' strings, got {type(bad[0]).__name__} {_short(bad[0])}")


def check_choice(value: str, valid: typing.Iterable[str], where: str) -> None:
    """ConfigError naming ``where`` unless ``value`` is one of ``valid``."""
    valid = list(valid)
    if value not in valid:
        raise ConfigError(f"{where}: unknown value {_short(value)}; valid: {', '.join(valid)}{did_you_mean(value, valid)}")


def validate(cfg: ExperimentConfig) -> None:
    """Checks common to every kind (name, record), then the kind's own ``validate``.

    Numbers were range-checked field by field when the config was read (see `bounded`).
    """
    from bioplaus.registry import EXPERIMENTS

    if not cfg.name or len(cfg.name) > 200 or cfg.name in (".", "..") or any(
        c in cfg.name for c in "/\\\x00"
    ) or not cfg.name.isprintable():
        raise ConfigError(f"name: must be a plain file name (no path separators), got {_short(cfg.name)}")
    for i, pr in enumerate(cfg.record.probes):
        for v in pr.variables:
            check_choice(v, ["spikes", "mem", "current", "input", "out"], f"record.probes[{i}].variables")
        for s in pr.layers:
            if isinstance(s, bool) or not (
                isinstance(s, int) and abs(s) <= INT64_MAX
                or s == "all"
                or isinstance(s, str) and re.fullmatch(r"layer[0-9]{1,9}", s)
            ):
                raise ConfigError(
                    f"record.probes[{i}].layers: {_short(s)} is not a layer (use 'all', an index or 'layer<k>')"
                )
    from bioplaus.device import run_device

    run_device(cfg)  # one line for a bad value, or for "cuda" without a GPU
    EXPERIMENTS.get(cfg.kind or "supervised", "kind").validate(cfg)


def parse_options(cls: type, options: dict[str, Any], where: str, common: type | None = None) -> Any:
    """Validate a rule's or plugin's options table against its ``Options`` dataclass.

    ``common``: the table the options sit in (`RuleConfig`, `PluginConfig`), listed too when
    a key is unknown.
    """
    return from_dict(cls, options, where, common)
