"""The Python API's error boundary (issue 26, class 11): whatever a caller hands to
`bioplaus.run` / `open_run` ends with the project's error naming the argument; ``data=``
takes what docs/data.md says; a hand-built data set is checked before the run file exists."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

import bioplaus
import neuro_data
from bioplaus.errors import BioplausError, ConfigError, DataError, OutputError, RunFileError
from bioplaus.record import open_run

RNG = np.random.default_rng(0)
X = RNG.random((60, 64)).astype(np.float32)
Y = np.arange(60) % 4


def cfg() -> dict:
    return tiny_config(train__epochs=1, data={"dataset": "digits", "batch_size": 32})


@pytest.mark.parametrize("config", [None, 42, 1.5, [1, 2], b"quickstart.toml", object()])
def test_run_names_a_bad_config(config: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: expected a TOML path, a sim name, a dict or an ExperimentConfig, got "):
        bioplaus.run(config, out=tmp_path / "x.h5")


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"out": "a\0b.h5"}, OutputError, r"^out: the path 'a\\x00b.h5' contains a NUL byte$"),
    ({"out": 5}, OutputError, r"^out: expected a path \(str or pathlib.Path\), got int 5$"),
    ({"out": b"x.h5"}, OutputError, r"^out: expected a path"),
    ({"overrides": "rule.lr=0.1"}, ConfigError, r"^overrides: expected a list of 'key=value' strings or a dict, got str$"),
    ({"overrides": [("rule.lr", 0.1)]}, ConfigError, r"^overrides: expected 'key=value' strings, got tuple"),
    ({"overrides": {1: 2}}, ConfigError, r"^overrides: keys must be dotted strings"),
    ({"progress": "yes"}, ConfigError, r"^progress: expected True, False or None, got str 'yes'$"),
    ({"overwrite": 1}, ConfigError, r"^overwrite: expected True, False or None"),
    ({"data": X}, ConfigError, r"^data: expected a neuro_data.Dataset, an \(x, y\) or .* got ndarray$"),
    ({"data": "my.npz"}, ConfigError, r"^data: expected .* got str$"),
    ({"data": {"x": X}}, ConfigError, r"^data: expected .* got dict$"),
    ({"data": (X,)}, ConfigError, r"^data: expected .* got tuple$"),
    ({"data": (X, Y[:10])}, DataError, r"^data: y_train: 10 labels for 60 samples in x_train$"),
    ({"data": (X, np.array([0, 2**62] * 30))}, DataError,
     r"^data: y_train: the largest label 4611686018427387904 would make 4\.61e\+18 classes"),
])
def test_run_names_a_bad_argument_and_writes_nothing(kwargs: dict, error: type, message: str, tmp_path: Path) -> None:
    kwargs.setdefault("out", tmp_path / "x.h5")
    with pytest.raises(error, match=message):
        bioplaus.run(cfg(), progress=kwargs.pop("progress", False), **kwargs)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("data", [
    (X, Y),
    (X[:48], Y[:48], X[48:], Y[48:]),
    [X, Y],
    {"x_train": X, "y_train": Y, "classes": ["a", "b", "c", "d"]},
])
def test_documented_data_forms_run_like_from_arrays(data: object, tmp_path: Path) -> None:
    """A tuple, list or npz-keyed dict gives the run that from_arrays of the same arrays gives."""
    args = data if not isinstance(data, dict) else (data["x_train"], data["y_train"])
    ref = neuro_data.from_arrays(*args, classes=data.get("classes") if isinstance(data, dict) else None)
    a = bioplaus.run(cfg(), data=data, out=tmp_path / "a.h5", progress=False)
    b = bioplaus.run(cfg(), data=ref, out=tmp_path / "b.h5", progress=False)
    assert a.metrics == b.metrics and a.metrics["test_acc"] > 0


def test_a_hand_built_dataset_is_checked_before_the_file(tmp_path: Path) -> None:
    """Was: IndexError from the loss after the run file existed (status running)."""
    ds = neuro_data.from_arrays(X, Y)
    for bad, message in [
        (neuro_data.Dataset("h", ds.x_train, ds.y_train + 7, ds.x_test, ds.y_test, ds.classes, ds.shape),
         r"^data: y_train: labels must be integers 0\.\.3, found 10$"),
        (neuro_data.Dataset("h", ds.x_train, ds.y_train, ds.x_test, ds.y_test - 1, ds.classes, ds.shape),
         r"^data: y_test: labels must be integers 0\.\.3, found -1$"),
        (neuro_data.Dataset("h", ds.x_train, ds.y_train[:5], ds.x_test, ds.y_test, ds.classes, ds.shape),
         r"^data: y_train: 5 labels for \d+ samples in x_train$"),
        (neuro_data.Dataset("h", ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.classes, (8, 8)),
         r"^data: x_train: samples of shape \(64,\), but the dataset's shape is \(8, 8\)$"),
        (neuro_data.Dataset("h", ds.x_train, ds.y_train, ds.x_test, ds.y_test, [], ds.shape),
         r"^data: classes: expected a non-empty list"),
        (neuro_data.Dataset("h", list(ds.x_train), ds.y_train, ds.x_test, ds.y_test, ds.classes, ds.shape),
         r"^data: x_train: expected a numeric array \[N, \.\.\.\], got list$"),
    ]:
        with pytest.raises(DataError, match=message):
            bioplaus.run(cfg(), data=bad, out=tmp_path / "x.h5", progress=False)
        assert not (tmp_path / "x.h5").exists()


def test_from_arrays_refuses_a_huge_label_at_once() -> None:
    """Was: 2^62 + 1 class names (7 GB, MemoryError)."""
    t0 = time.perf_counter()
    with pytest.raises(neuro_data.DataFormatError, match=r"at most 1000000 classes"):
        neuro_data.from_arrays(X, np.array([0, 2**62] * 30))
    with pytest.raises(neuro_data.DataFormatError, match=r"classes: 1000001 class names \(at most 1000000\)"):
        neuro_data.from_arrays(X, Y, classes=range(1_000_001))
    assert time.perf_counter() - t0 < 10  # generous: it is a comparison, not an allocation


@pytest.mark.parametrize(("path", "message"), [
    (None, r"^path: expected a path \(str or pathlib.Path\), got NoneType None$"),
    (42, r"^path: expected a path"),
    (["x.h5"], r"^path: expected a path"),
    ("a\0b.h5", r"^path: the path 'a\\x00b.h5' contains a NUL byte$"),
    ("", r"^path: expected a non-empty path"),
])
def test_open_run_names_a_bad_path(path: object, message: str) -> None:
    for fn in (bioplaus.open_run, open_run):
        with pytest.raises(RunFileError, match=message):
            fn(path)


def test_every_error_above_is_a_bioplaus_error() -> None:
    for cls in (ConfigError, DataError, OutputError, RunFileError):
        assert issubclass(cls, BioplausError)
