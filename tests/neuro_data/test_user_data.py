"""Tests of the user's own data: neuro_data.from_arrays, load_npz, the npz and idx formats."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import neuro_data
from neuro_data import (
    FORMATS,
    DataFormatError,
    DataNotFoundError,
    from_arrays,
    load_dataset,
    load_idx_dir,
    load_npz,
)
from neuro_data.idx import write_idx

pytestmark = pytest.mark.usefixtures("isolated_data")


def _u8(n: int = 60, *shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *(shape or (4, 3))), dtype=np.uint8)


def _labels(n: int = 60, c: int = 3) -> np.ndarray:
    return np.arange(n) % c


def _by_255(x: np.ndarray) -> np.ndarray:
    """The one uint8 formula of neuro_data: float32(x) * float32(1/255)."""
    return x.astype(np.float32) * np.float32(1.0 / 255.0)


def _write_idx_set(
    d: Path, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray
) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    write_idx(d / "train-images-idx3-ubyte.gz", xtr)
    write_idx(d / "train-labels-idx1-ubyte.gz", ytr)
    write_idx(d / "t10k-images-idx3-ubyte", xte)
    write_idx(d / "t10k-labels-idx1-ubyte", yte)
    return d


# ---------------------------------------------------------------- round trips


def test_arrays_flat_uint8_with_test_split() -> None:
    x, y = _u8(30, 12), _labels(30)
    xt, yt = _u8(9, 12, seed=1), _labels(9)
    ds = from_arrays(x, y, xt, yt, classes=["a", "b", "c"])
    assert ds.name == "arrays" and ds.shape == (12,) and ds.classes == ["a", "b", "c"]
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train, _by_255(x))
    np.testing.assert_array_equal(ds.x_test, _by_255(xt))
    np.testing.assert_array_equal(ds.y_test, yt)
    assert not ds.x_train.flags.writeable
    assert x.flags.writeable and xt.flags.writeable  # the caller's arrays are left alone


def test_arrays_image_shaped_float_kept_as_is() -> None:
    x = np.random.default_rng(0).random((20, 5, 4))  # float64 [N, H, W] in [0, 1]
    ds = from_arrays(x, _labels(20, 2), x[:6], _labels(6, 2))
    assert ds.shape == (1, 5, 4) and ds.x_train.shape == (20, 1, 5, 4)
    np.testing.assert_array_equal(ds.x_train[:, 0], x.astype(np.float32))  # not divided by 255
    assert ds.classes == ["0", "1"]
    # [N, C, H, W] is kept; unit states [0, 1]; a number divides
    x4 = (x[:, None] * 4095).round().repeat(3, axis=1)
    ds4 = from_arrays(x4, _labels(20, 2), scale=4095.0, test_fraction=0.25)
    assert ds4.shape == (3, 5, 4)
    assert 0.0 <= ds4.x_train.min() and ds4.x_train.max() <= 1.0
    assert from_arrays(x, _labels(20, 2), scale="unit").x_train.max() <= 1.0
    none = from_arrays(x4, _labels(20, 2), scale="none")
    assert none.x_train.max() > 1.0  # left alone, for a later Normalizer


def test_arrays_shape_reshapes_flat_samples() -> None:
    x = _u8(10, 2 * 3 * 4)
    ds = from_arrays(x, _labels(10, 2), x, _labels(10, 2), shape=(2, 3, 4))
    assert ds.shape == (2, 3, 4)
    np.testing.assert_array_equal(ds.x_train, _by_255(x).reshape(10, 2, 3, 4))
    assert from_arrays(x, _labels(10, 2), x, _labels(10, 2), shape=(4, 6)).shape == (1, 4, 6)


def test_uint8_scale_accepts_integer_floats_and_matches_uint8() -> None:
    x = _u8(12, 6)
    a = from_arrays(x.astype(np.float64), _labels(12, 2), scale="uint8", test_fraction=0.5)
    b = from_arrays(x, _labels(12, 2), test_fraction=0.5)
    np.testing.assert_array_equal(a.x_train, b.x_train)


def test_auto_warns_for_floats_outside_unit() -> None:
    with pytest.warns(UserWarning, match="x_train: scale 'auto' keeps float values"):
        ds = from_arrays(_u8(10, 3).astype(np.float32), _labels(10, 2))
    assert ds.x_train.max() > 1.0  # never divided by 255 silently


def test_npz_round_trip_flat_and_images(tmp_path: Path) -> None:
    x, y = np.random.default_rng(0).random((40, 7)).astype(np.float32), _labels(40, 4)
    f = tmp_path / "flat.npz"
    np.savez(f, x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    ds = load_npz(f)
    assert ds.name == "npz" and ds.shape == (7,) and ds.classes == ["0", "1", "2", "3"]
    np.testing.assert_array_equal(ds.x_train, x)
    np.testing.assert_array_equal(ds.y_test, y[:8])

    xi = _u8(50, 1, 6, 5)
    g = tmp_path / "img.npz"
    np.savez_compressed(g, x_train=xi, y_train=_labels(50, 5), class_names=np.array(list("vwxyz")))
    dg = load_npz(g)
    assert dg.shape == (1, 6, 5) and dg.classes == list("vwxyz")
    assert len(dg.y_test) == 10 and len(dg.y_train) == 40  # 20 % of each class
    got = np.sort(np.concatenate([dg.x_train, dg.x_test]).reshape(50, -1), axis=0)
    np.testing.assert_array_equal(got, np.sort(_by_255(xi).reshape(50, -1), axis=0))


def test_npz_as_dataset_name(tmp_path: Path) -> None:
    f = tmp_path / "my.npz"
    x = _u8(30, 2, 2)
    np.savez(f, x_train=x, y_train=_labels(30), classes=np.array(["r", "g", "b"]))
    ds = load_dataset("npz", path=f, scale="auto", test_fraction=0.2, seed=0)
    assert ds.classes == ["r", "g", "b"] and ds.shape == (1, 2, 2)
    again = load_dataset("npz", path=str(f), scale="auto", test_fraction=0.2, seed=0)
    assert again is ds  # cached: same options, same file
    np.testing.assert_array_equal(load_dataset("npz", path=f).x_test, ds.x_test)  # defaults
    other = FORMATS["npz"](path=f, seed=1)
    assert not np.array_equal(other.y_test, ds.y_test) or not np.array_equal(
        other.x_test, ds.x_test
    )
    # an edited file is read again
    np.savez(f, x_train=x, y_train=_labels(30))
    os.utime(f, ns=(1, 1))
    assert load_dataset("npz", path=f).classes == ["0", "1", "2"]
    with pytest.raises(DataFormatError, match="path: dataset 'npz' reads an .npz file"):
        load_dataset("npz")
    with pytest.raises(DataNotFoundError, match="nowhere.npz does not exist"):
        load_dataset("npz", path=tmp_path / "nowhere.npz")


def test_float_idx_not_rescaled(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    xtr, xte = rng.random((20, 4, 4), dtype=np.float32), rng.random((5, 4, 4), dtype=np.float32)
    d = _write_idx_set(
        tmp_path / "f", xtr, _labels(20, 10).astype(np.uint8), xte, _labels(5, 10).astype(np.uint8)
    )
    for ds in (load_dataset("idx", path=d), load_dataset("mnist", path=d), load_idx_dir(d)):
        np.testing.assert_array_equal(ds.x_train[:, 0], xtr)  # was divided by 255 a second time
        np.testing.assert_array_equal(ds.x_test[:, 0], xte)
    assert load_dataset("idx", path=d).classes == [str(i) for i in range(10)]
    # uint8 IDX under "idx" reads exactly as under "mnist"
    u = _write_idx_set(
        tmp_path / "u",
        _u8(20, 4, 4),
        _labels(20, 10).astype(np.uint8),
        _u8(5, 4, 4),
        _labels(5, 10).astype(np.uint8),
    )
    a, b = load_dataset("idx", path=u), load_dataset("mnist", path=u)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)


# ---------------------------------------------------------------- the split


def test_split_seeded_and_stratified() -> None:
    y = np.repeat(np.arange(4), [10, 20, 5, 15])
    x = np.arange(len(y), dtype=np.float32)[:, None] / len(y)
    a = from_arrays(x, y, test_fraction=0.2, seed=7)
    b = from_arrays(x, y, test_fraction=0.2, seed=7)
    c = from_arrays(x, y, test_fraction=0.2, seed=8)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_test, c.x_test)
    np.testing.assert_array_equal(np.bincount(a.y_test), [2, 4, 1, 3])  # round(0.2 n_c)
    both = np.sort(np.concatenate([a.x_train, a.x_test])[:, 0])
    np.testing.assert_array_equal(both, x[:, 0])  # a partition, nothing lost or repeated
    assert np.all(np.diff(a.x_train[:, 0]) > 0)  # both parts keep the original order


def test_digits_split_unchanged_by_explicit_defaults() -> None:
    ds = load_dataset("digits")
    again = load_dataset("digits", scale="auto", test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(ds.x_test, again.x_test)
    np.testing.assert_array_equal(ds.y_train, again.y_train)


# ---------------------------------------------------------------- bad input


def _err(fn: Callable[..., object], *args: object, **kwargs: object) -> str:
    with pytest.raises(ValueError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert isinstance(info.value, DataFormatError)
    assert "\n" not in msg
    return msg


X, Y = _u8(30, 4, 3), _labels(30, 10)


@pytest.mark.parametrize(
    ("kwargs", "expect"),
    [
        ({"y_train": Y + 1}, "y_train: labels must start at 0, but labels run 1..10; subtract 1"),
        (
            {"y_train": Y, "x_test": X, "y_test": Y + 1, "classes": list("abcdefghij")},
            "y_test: labels must be integers 0..9, found 10; labels run 1..10: subtract 1",
        ),
        ({"y_train": Y + 0.5}, "y_train: labels must be integers, found 0.5"),
        ({"y_train": Y - 1}, "y_train: labels must be integers from 0, found -1"),
        ({"y_train": Y[:-1]}, "y_train: 29 labels for 30 samples in x_train"),
        ({"y_train": Y[:, None]}, r"y_train: labels must be 1-D \[N\], got shape \[30, 1\]"),
        ({"x_train": X.reshape(-1)}, r"x_train: expected shape \[N, D\], \[N, H, W\]"),
        ({"x_train": X[..., None, None]}, r"x_train: expected shape .* got \[30, 4, 3, 1, 1\]"),
        ({"x_train": np.where(X == X[3, 1, 2], np.nan, X / 255.0)}, "x_train: .* NaN or infinite"),
        ({"x_train": X / 255.0, "scale": "uint8"}, "x_train: scale 'uint8' needs integer values"),
        ({"x_train": X * 2.0, "scale": "uint8"}, "x_train: scale 'uint8' needs .* found 5.."),
        (
            {"x_train": X * 1.0, "scale": "unit"},
            "x_train: scale 'unit' needs values in .0, 1., found 2",
        ),
        ({"x_train": X.astype(np.int64)}, "x_train: dtype int64 is ambiguous with scale 'auto'"),
        ({"x_train": np.zeros((30, 8, 8, 3))}, "x_train: shape .* looks channels-last"),
        ({"x_test": X}, "x_test: given without y_test"),
        ({"x_test": X, "y_test": Y, "test_fraction": 0.3}, "test_fraction: the data has its own"),
        ({"test_fraction": 0.0}, r"test_fraction: must be in \(0, 1\)"),
        ({"scale": "pixels"}, "scale: unknown value 'pixels'"),
        ({"y_train": np.array(["cat"] * 30)}, "y_train: labels must be integers, got dtype <U3"),
    ],
)
def test_from_arrays_refuses(kwargs: dict, expect: str) -> None:
    args = {"x_train": X, "y_train": Y, **kwargs}
    msg = _err(from_arrays, args.pop("x_train"), args.pop("y_train"), **args)
    assert re.search(expect, msg), msg


def test_npz_refuses(tmp_path: Path) -> None:
    obj = tmp_path / "obj.npz"
    np.savez(obj, x_train=np.array([{"a": 1}] * 3, dtype=object), y_train=np.arange(3))
    assert _err(load_npz, obj).startswith(f"{obj}: x_train: object array refused")

    miss = tmp_path / "miss.npz"
    np.savez(miss, x_train=X)
    assert _err(load_npz, miss) == f"{miss}: missing key 'y_train' (the file has x_train)"

    bad = tmp_path / "labels.npz"
    np.savez(bad, x_train=X, y_train=Y + 1)
    msg = _err(load_dataset, "npz", path=bad)
    assert msg.startswith(f"{bad}: y_train: labels must start at 0") and "subtract 1" in msg

    odd = tmp_path / "odd.npz"
    np.savez(odd, x_train=X, y_train=Y, x_val=X)
    assert "unknown key 'x_val'" in _err(load_npz, odd)

    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    assert _err(load_npz, junk).startswith(f"{junk}: not a readable .npz file")

    npy = tmp_path / "x.npy"
    np.save(npy, X)
    assert "not an .npz archive" in _err(load_npz, npy)


def test_idx_labels_1_to_10_name_the_file(tmp_path: Path) -> None:
    d = _write_idx_set(tmp_path / "d", X, (Y + 1).astype(np.uint8), X, Y.astype(np.uint8))
    for name in ("mnist", "idx"):
        msg = _err(load_dataset, name, path=d)
        assert "train-labels-idx1-ubyte.gz: y_train: labels" in msg and "subtract 1" in msg


def test_options_that_do_not_apply_are_refused(tmp_path: Path) -> None:
    d = _write_idx_set(tmp_path / "d", X, Y.astype(np.uint8), X, Y.astype(np.uint8))
    assert "has its own test split" in _err(load_dataset, "mnist", path=d, test_fraction=0.3)
    assert "has its own test split" in _err(load_dataset, "idx", path=d, seed=1)
    assert "nothing to download" in _err(load_dataset, "idx", path=d, download=True)
    assert "scale 'unit'" in _err(load_dataset, "mnist", path=d, scale="unit")


def test_public_names() -> None:
    for n in ("from_arrays", "load_npz", "load_idx_dir", "DataFormatError", "FORMATS", "SCALES"):
        assert n in neuro_data.__all__
    assert set(FORMATS) == {"npz", "idx"}
    assert issubclass(DataFormatError, ValueError)
