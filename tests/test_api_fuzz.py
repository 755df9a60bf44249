"""Property test (issue 26): whatever `bioplaus.run` and `bioplaus.open_run` are handed ends
with the project's error (a `BioplausError`) or a finished run; never another exception,
never a hang (a deadline per example).

Input classes (``pytest --hypothesis-show-statistics`` lists them as events): ``config`` as
None, numbers, bytes, lists, hostile strings (NUL, empty, long, missing files), dicts of
bogus tables and a valid tiny config; ``overrides`` as strings, lists of non-strings,
dicts with non-string keys, valid items; ``out`` as numbers, bytes, NUL strings, paths;
``data`` as arrays, strings, dicts, short tuples, tuples of mismatched or hostile arrays
(huge or negative labels, NaN inputs, 0-d arrays), hand-built datasets; flags of the wrong
type; ``open_run`` of the same path-like garbage and of files that are not run files.
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

import bioplaus
import neuro_data
from bioplaus.errors import BioplausError

RNG = np.random.default_rng(0)
X = RNG.random((40, 64)).astype(np.float32)
Y = np.arange(40) % 4
DS = neuro_data.from_arrays(X, Y)
TINY = {"data": {"dataset": "digits", "batch_size": 64, "limit_train": 64, "limit_test": 32},
        "network": {"hidden": [4]}, "train": {"epochs": 1, "max_steps": 1, "report": False}}

PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink]  # no explain phase: minutes per failure

JUNK = st.one_of(
    st.none(), st.integers(-(2**70), 2**70), st.floats(), st.binary(max_size=8), st.booleans(),
    st.lists(st.integers(), max_size=3), st.just(object()),
    st.sampled_from(["", "\0", "a\0b", "x" * 5000, "no/such/file.toml", "/dev/null", "/proc/self", ".", "quickstart\n"]),
)
CONFIGS = st.one_of(
    JUNK, st.just(TINY),
    st.dictionaries(st.sampled_from(["data", "rule", "train", "bogus", "kind", "seed"]),
                    st.one_of(JUNK, st.dictionaries(st.text(max_size=5), JUNK, max_size=2)), max_size=3),
)
OVERRIDES = st.one_of(
    st.none(), JUNK, st.just(["train.epochs=1"]), st.lists(st.one_of(st.text(max_size=12), st.integers()), max_size=3),
    st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), JUNK, max_size=2),
)
LABELS = st.sampled_from(["ok", "huge", "negative", "float", "short", "nan_x", "zero_d", "strings"])
DATA = st.one_of(st.none(), JUNK, st.just(X), st.just({"x_train": X}), st.just((X,)), LABELS, st.just("hand_built"))


def _data(kind: Any) -> Any:
    """Hostile arrays by name (hypothesis draws the name; the arrays are built here)."""
    if not isinstance(kind, str):
        return kind
    if kind == "ok":
        return (X, Y)
    if kind == "huge":
        return (X, np.array([0, 2**62] * 20))
    if kind == "negative":
        return (X, Y - 1)
    if kind == "float":
        return (X, Y + 0.5)
    if kind == "short":
        return (X, Y[:3])
    if kind == "nan_x":
        return (np.full_like(X, np.nan), Y)
    if kind == "zero_d":
        return (np.float32(1), np.int64(0))
    if kind == "strings":
        return (X, Y.astype(str))
    if kind == "hand_built":
        return neuro_data.Dataset("h", DS.x_train, DS.y_train * 3, DS.x_test, DS.y_test, DS.classes, DS.shape)
    return kind


@settings(max_examples=int(os.environ.get("BIOPLAUS_FUZZ_EXAMPLES", "40")), deadline=timedelta(seconds=30),
          suppress_health_check=[HealthCheck.too_slow], phases=PHASES)
@given(config=CONFIGS, overrides=OVERRIDES, out=st.one_of(st.none(), JUNK, st.just("PATH")), data=DATA,
       flag=st.one_of(st.none(), st.booleans(), JUNK))
def test_run_inputs(config: Any, overrides: Any, out: Any, data: Any, flag: Any) -> None:
    if isinstance(config, dict) and config is not TINY:  # drawn tables over the tiny config: a valid run stays small
        config = {**TINY, **{k: {**TINY[k], **v} if isinstance(v, dict) and isinstance(TINY.get(k), dict) else v
                             for k, v in config.items()}}
    event(f"config: {type(config).__name__}")
    event(f"data: {data if isinstance(data, str) and data in ('ok', 'huge', 'negative', 'float', 'short', 'nan_x', 'zero_d', 'strings', 'hand_built') else type(data).__name__}")
    with tempfile.TemporaryDirectory() as d:
        if out == "PATH":
            out = Path(d) / "r.h5"
        elif out is None:
            out = Path(d) / "default.h5"  # never the working directory's runs/
        try:
            res = bioplaus.run(config, overrides, out=out, progress=False, data=_data(data), overwrite=flag)
        except BioplausError:
            event("outcome: the project's error")
            return
        event("outcome: a finished run")
        assert res.status == "done"


@settings(max_examples=int(os.environ.get("BIOPLAUS_FUZZ_EXAMPLES", "60")), deadline=timedelta(seconds=30), phases=PHASES)
@given(path=st.one_of(JUNK, st.sampled_from(["TEXT", "DIR", "EMPTY"])))
def test_open_run_inputs(path: Any) -> None:
    with tempfile.TemporaryDirectory() as d:
        if path == "TEXT":
            path = Path(d) / "t.h5"
            path.write_text("not hdf5")
        elif path == "DIR":
            path = Path(d)
        elif path == "EMPTY":
            path = Path(d) / "e.h5"
            path.write_bytes(b"")
        event(f"path: {type(path).__name__}")
        try:
            bioplaus.open_run(path).close()
        except BioplausError:
            event("outcome: the project's error")
            return
        raise AssertionError(f"opened {path!r}")
