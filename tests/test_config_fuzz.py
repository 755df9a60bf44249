"""Property tests: any config file or ``--set`` string gives exit 0 or 2, never a traceback.

Configs are drawn as TOML-ish dicts over the real field names (of every table, of the
rules' and plugins' options and of the experiment kinds' tables) and bogus ones, with
values of the wrong type, extreme numbers (nan, ±inf, huge, negative, zero), nested tables,
deep nesting and oversized text; ``--set`` strings are random dotted paths over real and
bogus keys with random TOML values. Each goes through ``bioplaus.cli.main(["run", ...])``:
exit 0 with a run file whose status is "done", or exit 2 with one stderr line and no run
file left "running". Valid examples are clamped to a tiny budget (digits, 64 training
samples, one step) so that they finish in well under a second.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import tempfile
import typing
import warnings
from pathlib import Path
from typing import Any
from unittest import mock

import h5py
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bioplaus.cli import main
from bioplaus.config import ExperimentConfig
from bioplaus.neurons import lif
from bioplaus.registry import EXPERIMENTS, PLUGINS, RULES

# ----------------------------------------------------------------------------- field names


def _fields(cls: type, prefix: str, out: dict[str, list[str]]) -> None:
    """Table path -> its field names, recursing into nested dataclass tables."""
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        if f.name in ("options", "sections"):
            continue
        names.append(f.name)
        tp = hints[f.name]
        TYPES.setdefault((prefix, f.name), tp)
        if dataclasses.is_dataclass(tp):
            _fields(tp, f"{prefix}.{f.name}" if prefix else f.name, out)
    out.setdefault(prefix, []).extend(names)


TABLES: dict[str, list[str]] = {}
TYPES: dict[tuple[str, str], Any] = {}
_fields(ExperimentConfig, "", TABLES)
TABLES["record.probes.0"] = ["layers", "variables", "every", "samples"]
for _, _kind in EXPERIMENTS.items():
    for _section, _cls in _kind.sections().items():
        TABLES[""].append(_section)  # a kind's tables sit at the top level
        if dataclasses.is_dataclass(_cls):  # [[plugins]]: an array of tables, below
            _fields(_cls, _section, TABLES)
for _, _rule in RULES.items():
    _fields(_rule.Options, "rule", TABLES)
TABLES["plugins.0"] = ["name"]
for _, _plugin in PLUGINS.items():
    _fields(_plugin.Options, "plugins.0", TABLES)
for _path in TABLES:
    TABLES[_path] = sorted(set(TABLES[_path]) - {"download", "data_dir", "path", "out"})

BOGUS_KEYS = ["x", "", "0", "-1", "1e3", "nan", "a b", "ü", "lr ", "hidden.0", "__class__"]
BOGUS_TABLES = ["nope", "network.nope", "rule.optimizer", "train.epochs", "network.hidden"]

WORDS = sorted(
    {"rate", "spiking", "mlp", "cnn", "digits", "backprop", "ccl", "ccl_ae", "fa", "dfa", "hlop", "ewc",
     "projection", "sgd", "adam", "adamw", "cosine", "none", "unit", "standard", "test", "val", "all",
     "layer0", "layer1", "spikes", "mem", "current", "input", "out", "atan", "triangle", "poisson",
     "latency", "direct", "mem_mean", "spike_count", "subtract", "zero", "permuted", "split", "task",
     "domain", "sequential", "joint", "supervised", "continual", "kaiming", "orthogonal", "auto",
     "uint8", "orthonormal", "residual", "grad", "dims", "threshold", "refuse", "project_step"}
    | set(RULES.names()) | set(PLUGINS.names())
)

# ----------------------------------------------------------------------------- values


@dataclasses.dataclass(frozen=True)
class Raw:
    """Text written as is (deep nesting, oversized values): too big to build as objects."""

    text: str


EXTREME_INTS = [0, -1, 2**31, 2**32, 2**32 - 1, 2**63 - 1, -(2**63), 10**12, 10**30]
EXTREME_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 1e-308, -0.0, 0.0, -1.5, 1e12]

scalars = st.one_of(
    st.integers(-3, 12),
    st.sampled_from(EXTREME_INTS),
    st.floats(-2.0, 2.0, allow_nan=False),
    st.sampled_from(EXTREME_FLOATS),
    st.booleans(),
    st.sampled_from(WORDS),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
)
deep = st.one_of(
    st.integers(33, 3000).map(lambda n: Raw("[" * n + "1" + "]" * n)),
    st.integers(33, 3000).map(lambda n: Raw("{a = " * n + "1" + "}" * n)),
    st.just(Raw('"' + "x" * (1 << 20) + '"')),
)
def kind(v: Any) -> str:
    """The input class of a drawn value (reported by ``--hypothesis-show-statistics``)."""
    if isinstance(v, Raw):
        return "deep nesting or oversized text"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "huge int" if abs(v) >= 2**31 else "negative int" if v < 0 else "small int"
    if isinstance(v, float):
        return "nan/inf" if not math.isfinite(v) else "huge float" if abs(v) >= 1e12 else "float"
    if isinstance(v, str):
        return "choice word" if v in WORDS else "text"
    return "list" if isinstance(v, list) else "nested table"


values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(BOGUS_KEYS + WORDS), inner, max_size=3),
    max_leaves=8,
)
plausible = st.sampled_from([0, 1, 2, 3, 0.5, 0.01, 2.0, True, False, [4], [2, 3], "all", "rate", "spiking", "cnn"])


def _mostly(common: st.SearchStrategy, rare: st.SearchStrategy, one_in: int) -> st.SearchStrategy:
    return st.integers(1, one_in).flatmap(lambda i: rare if i == 1 else common)


def typed(tp: Any) -> st.SearchStrategy:
    """Small values of a field's own type: valid or a near miss (0, a wrong choice word)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(0, 4)
    if tp is float:
        return st.sampled_from([0.0, 0.05, 0.5, 1.0, 2.0])
    if tp is str:
        return st.sampled_from(WORDS)
    if origin is list:
        return st.lists(typed(args[0] if args else int), max_size=3)
    if args:  # X | None
        return st.one_of(*[typed(a) for a in args if a is not type(None)])
    return plausible


# mostly values that are plausible for some field (so some configs stay valid and run),
# then wrong types and extreme numbers, now and then deep nesting or oversized text
any_value = _mostly(_mostly(values, plausible, 3), deep, 12)


def toml(v: Any) -> str:
    """A TOML value (inline tables, mixed arrays, nan/inf) for ``v``."""
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(toml(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml(x)}" for k, x in v.items()) + "}"


# ----------------------------------------------------------------------------- configs

BASE: dict[str, Any] = {
    "name": "fuzz",
    "data": {"dataset": "digits", "batch_size": 32, "limit_train": 64, "limit_test": 32},
    "network": {"backend": "rate", "hidden": [8], "spiking": {"T": 2}},
    "rule": {"name": "backprop", "lr": 0.05},
    "train": {"epochs": 1, "max_steps": 1, "report": False, "progress": False},
}
VARIANTS = {
    "supervised": {},
    "spiking": {"network": {"backend": "spiking", "hidden": [8], "spiking": {"T": 2}}},
    "cnn": {"network": {"arch": "cnn", "channels": [2], "kernel": 2, "hidden": [4]}},
    "continual": {"continual": {"stream": "permuted", "n_tasks": 2}},
    "hlop": {"continual": {"stream": "split", "n_tasks": 2}, "plugins": [{"name": "hlop"}]},
    "ewc": {"continual": {"n_tasks": 2}, "plugins": [{"name": "ewc", "samples": 8}]},
    "probes": {"record": {"probes": [{"layers": ["all"], "every": 1, "samples": 2}]}},
    "ccl": {"rule": {"name": "ccl", "lr": 0.05}},
}


def _at(d: Any, path: str, create: bool = True) -> Any:
    """The table at a dotted path of ``d`` (created when missing), or None if blocked."""
    cur = d
    for p in [p for p in path.split(".") if p]:
        if isinstance(cur, list):
            if not p.isdigit() or int(p) >= len(cur):
                return None
            cur = cur[int(p)]
        elif isinstance(cur, dict):
            cur = cur.setdefault(p, {}) if create else cur.get(p)
        else:
            return None
    return cur if isinstance(cur, dict) else None


REAL = [(t, k) for t, keys in TABLES.items() for k in keys]
place = _mostly(
    st.sampled_from(REAL),
    st.tuples(
        st.sampled_from(sorted(TABLES) + BOGUS_TABLES),
        st.sampled_from(sorted({k for _, k in REAL}) + BOGUS_KEYS),  # misplaced or bogus
    ),
    3,
)
mutation = place.flatmap(
    lambda tk: st.tuples(
        st.just(tk),
        _mostly(any_value, typed(TYPES[tk]), 2) if tk in TYPES else any_value,
        _mostly(st.just("set"), st.sampled_from(["delete", "replace_table"]), 4),
    )
)


@st.composite
def configs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    variant = draw(st.sampled_from(sorted(VARIANTS)))
    d = json.loads(json.dumps(BASE))
    for key, table in VARIANTS[variant].items():
        d[key] = {**d.get(key, {}), **table} if isinstance(table, dict) else table
    for (table, key), value, how in draw(st.lists(mutation, min_size=1, max_size=3)):
        event(f"value: {kind(value)}")
        event(f"key: {'real' if table in TABLES and key in TABLES[table] else 'bogus or misplaced'} ({how})")
        if how == "replace_table" and "." not in table and table:
            d[table] = value
            continue
        t = _at(d, table)
        if t is None:
            continue
        if how == "delete":
            t.pop(key, None)
        else:
            t[key] = value
    return variant, d


# Fields whose valid but large values would make a run long: clamped in the dict (only when
# the value is already valid, so bad values still reach the validator).
def _small(d: dict[str, Any], path: str, key: str, hi: int, zero: int | None = None) -> None:
    t = _at(d, path, create=False)
    if t is None or key not in t:
        return
    v = t[key]
    if isinstance(v, int) and not isinstance(v, bool):
        if v == 0 and zero is not None:
            t[key] = zero
        elif hi < v < 2**31:
            t[key] = hi


def clamp(d: dict[str, Any]) -> dict[str, Any]:
    _small(d, "train", "max_steps", 1, zero=1)
    _small(d, "train", "epochs", 1)
    _small(d, "train", "threads", 1)
    _small(d, "data", "limit_train", 64, zero=64)
    _small(d, "data", "limit_test", 32, zero=32)
    _small(d, "network.spiking", "T", 4)
    _small(d, "continual", "n_tasks", 3)
    _small(d, "continual", "epochs_per_task", 1)
    data = d.get("data")
    if isinstance(data, dict) and data.get("dataset") in ("mnist", "fashion_mnist", "cifar10"):
        data["dataset"] = "digits"
    return d


# ----------------------------------------------------------------------------- the check


def _check_run(text: str, sets: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "fuzz.toml"
        cfg.write_text(text, encoding="utf-8")
        out = Path(tmp) / "x.h5"
        argv = ["run", str(cfg), "--out", str(out), "--quiet", "--no-report"]
        argv += [f"--set={s}" for s in sets]  # "--set=-1=..." reaches the config, "--set -1=..." argparse
        err, std = io.StringIO(), io.StringIO()
        with (
            contextlib.redirect_stderr(err),
            contextlib.redirect_stdout(std),
            warnings.catch_warnings(record=True),
            # the fused LIF kernel is compiled per machine; its build time is not under test
            mock.patch.object(lif, "_use_kernel", lambda x: None),
            contextlib.chdir(tmp),
        ):
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # tiny tensors: a second thread only spin-waits
            try:
                code = main(argv)
            finally:
                torch.set_num_threads(threads)
        lines = err.getvalue().splitlines()
        assert code in (0, 2), (code, err.getvalue())
        if code == 2:
            assert len(lines) == 1 and lines[0].startswith("bioplaus: error: "), err.getvalue()
            event("outcome: exit 2, one line")
        else:
            event("outcome: exit 0, status done")
        if out.exists():
            with h5py.File(out, "r") as f:
                status = f.attrs.get("status")
            assert status != "running", status
            assert code != 0 or status == "done", status


def _dump(d: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml(v)}\n" for k, v in d.items())


# 100 cases each by default (well under a minute on a loaded machine); BIOPLAUS_FUZZ_EXAMPLES=2000 for a long hunt.
FAST = settings(
    deadline=None,
    max_examples=int(os.environ.get("BIOPLAUS_FUZZ_EXAMPLES", "100")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FAST
@given(configs())
def test_config_files(case: tuple[str, dict[str, Any]]) -> None:
    variant, d = case
    event(f"variant {variant}")
    _check_run(_dump(clamp(d)), [])


path_segments = st.one_of(
    st.sampled_from(sorted({k for keys in TABLES.values() for k in keys})),
    st.sampled_from(["data", "network", "rule", "train", "record", "plugins", "continual", "spiking",
                     "probes", "hidden", "0", "1", "5", "x", "-1", "", " "]),
)
set_values = _mostly(
    _mostly(values, plausible, 3).map(toml),
    st.one_of(
        deep.filter(lambda r: len(r.text) < 100_000).map(toml),
        st.text(max_size=12),
        st.sampled_from(["[", "{", "a=b", "1.2.3", "", "[1,", "x\ny"]),
    ),
    5,
)


set_items = _mostly(
    st.sampled_from(REAL).flatmap(
        lambda tk: st.tuples(
            st.just(f"{tk[0]}.{tk[1]}" if tk[0] else tk[1]),
            _mostly(set_values, typed(TYPES[tk]).map(toml), 2) if tk in TYPES else set_values,
        )
    ),
    st.tuples(st.lists(path_segments, min_size=1, max_size=5).map(".".join), set_values),
    3,
)


@FAST
@given(st.sampled_from(sorted(VARIANTS)), st.lists(set_items, min_size=1, max_size=2))
def test_set_strings(variant: str, sets: list[tuple[str, str]]) -> None:
    d = json.loads(json.dumps(BASE))
    for key, table in VARIANTS[variant].items():
        d[key] = {**d.get(key, {}), **table} if isinstance(table, dict) else table
    for path, _ in sets:
        real = any(path == (f"{t}.{k}" if t else k) for t, keys in TABLES.items() for k in keys)
        event(f"--set path: {'real field' if real else 'random'}")
    # the budget comes last, so a valid override cannot make a long run
    budget = ["train.max_steps=1", "train.epochs=1", "data.limit_train=64", "data.limit_test=32"]
    _check_run(_dump(d), [f"{k}={v}" for k, v in sets] + budget)
