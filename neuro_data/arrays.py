"""Checks that turn user arrays into a data set's arrays: input scale, labels, shapes, split.

Inputs become float32 shaped ``[N, D]`` (flat) or ``[N, C, H, W]`` (images; ``[N, H, W]``
gains C = 1); labels become int64 in 0..C-1. Every failure is a `DataFormatError` (a
``ValueError``) whose one line names the array, e.g. ``y_train: labels must be integers
0..9, found 10``, prefixed with the file when the arrays come from one.

Scales (``scale=``), applied exactly once, x' = x / s:

- ``"uint8"``: s = 255; the values must be integers in 0..255 (any dtype);
- ``"unit"``: s = 1; the values must already lie in [0, 1];
- ``"none"``: s = 1, no check (standardise later with ``Normalizer(..., "standard")``);
- a positive number s;
- ``"auto"``: ``"uint8"`` for a uint8 array, ``"none"`` for float and bool arrays (floats
  are never divided by 255 unasked; a warning says so when they leave [0, 1]); other
  integer dtypes are refused as ambiguous.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "SCALES",
    "DataFormatError",
    "build_arrays",
    "check_scale",
    "scale_inputs",
    "stratified_split",
]

SCALES = ("auto", "uint8", "unit", "none")
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0
MAX_CLASSES = 1_000_000  # labels name classes 0..C-1; more classes than this is a mistake
_MAX_LABEL = 2**31  # float labels beyond this cannot be meant as class ids

Where = Callable[[str], str]


class DataFormatError(ValueError):
    """User data that cannot be used as given; the one-line message names the array (and file)."""


def _plain(k: str) -> str:
    return k


def _num(v: Any) -> str:
    """A value for a message: integers without a decimal point, floats short."""
    f = float(v)
    return str(int(f)) if f.is_integer() and abs(f) < 1e15 else f"{f:g}"


def check_scale(scale: str | float) -> str | float:
    """The scale as a name from `SCALES` or a positive float; `DataFormatError` otherwise."""
    if isinstance(scale, str):
        if scale in SCALES:
            return scale
    elif isinstance(scale, int | float | np.integer | np.floating) and not isinstance(
        scale, bool | np.bool_
    ):
        if math.isfinite(scale) and scale > 0:
            return float(scale)
    raise DataFormatError(
        f"scale: unknown value {scale!r}; valid: {', '.join(SCALES)}, or a positive number "
        "to divide by"
    )


def scale_inputs(x: np.ndarray, scale: str | float, where: str = "x") -> np.ndarray:
    """``x`` as a new float32 array x / s for the stated scale (see the module docstring).

    ``x`` must already be finite (see `build_arrays`); ``where`` names it in errors.
    """
    scale = check_scale(scale)
    kind = x.dtype.kind
    if scale == "auto":
        if x.dtype == np.uint8:
            scale = "uint8"
        elif kind in "fb":
            scale = "none"
            lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
            if lo < 0.0 or hi > 1.0:
                warnings.warn(
                    f"{where}: scale 'auto' keeps float values as they are, and they span "
                    f"[{_num(lo)}, {_num(hi)}]; state scale 'none' to keep them (then normalize "
                    "'standard'), or 'uint8' or a number to divide by",
                    UserWarning,
                    stacklevel=4,  # the caller of from_arrays / load_npz
                )
        else:
            raise DataFormatError(
                f"{where}: dtype {x.dtype} is ambiguous with scale 'auto'; state the scale: "
                "'uint8' (values 0..255, divided by 255), 'unit' (already in [0, 1]), 'none', "
                "or a number to divide by"
            )
    if scale == "uint8":
        if x.dtype != np.uint8 and x.size:
            lo, hi = x.min(), x.max()
            if lo < 0 or hi > 255:
                raise DataFormatError(
                    f"{where}: scale 'uint8' needs integer values 0..255, found "
                    f"{_num(lo if lo < 0 else hi)}"
                )
            if kind == "f":
                frac = x != np.round(x)
                if frac.any():
                    raise DataFormatError(
                        f"{where}: scale 'uint8' needs integer values 0..255, found "
                        f"{_num(x[frac].flat[0])} (floats already in [0, 1]: scale 'unit')"
                    )
        out = x.astype(np.float32)
        out *= np.float32(1.0 / 255.0)  # the formula the IDX and CIFAR readers always used
        return out
    if scale == "unit" and x.size:
        lo, hi = x.min(), x.max()
        if lo < 0 or hi > 1:
            hint = "; uint8 pixels: scale 'uint8'" if x.dtype == np.uint8 else ""
            raise DataFormatError(
                f"{where}: scale 'unit' needs values in [0, 1], found "
                f"{_num(lo if lo < 0 else hi)}{hint}"
            )
    out = x.astype(np.float32)  # always a copy: the caller's array is never frozen or aliased
    if isinstance(scale, float):
        out /= np.float32(scale)
    return out


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the test samples: per class, a seeded permutation, the first round(f·n_c).

    Classes are visited in increasing order with one ``numpy.random.default_rng(seed)``;
    the split is the same on every machine. (The ``digits`` split is this with f = 0.2, seed 0.)
    """
    rng = np.random.default_rng(seed)
    test_idx = [np.zeros(0, dtype=np.int64)]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        test_idx.append(idx[: int(round(test_fraction * len(idx)))])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[np.concatenate(test_idx)] = True
    return is_test


def _sample_shape(shape: Sequence[int], per_sample: int, where: str) -> tuple[int, ...]:
    try:
        s = tuple(int(v) for v in shape)
        ok = 1 <= len(s) <= 3 and all(v > 0 and v == w for v, w in zip(s, shape, strict=True))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataFormatError(f"shape: expected (D,), (H, W) or (C, H, W), got {shape!r}")
    if math.prod(s) != per_sample:
        raise DataFormatError(
            f"{where}: samples of {per_sample} values cannot take shape {s} ({math.prod(s)} values)"
        )
    return s


def _as_inputs(x: Any, where: str, shape: Sequence[int] | None) -> np.ndarray:
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise DataFormatError(f"{where}: not a rectangular numeric array ({e})") from None
    if a.dtype.kind not in "biuf":
        raise DataFormatError(
            f"{where}: dtype {a.dtype} is not numeric; need uint8, integer, bool or float"
        )
    if a.ndim not in (2, 3, 4):
        hint = " (one value per sample: x.reshape(-1, 1))" if a.ndim == 1 else ""
        raise DataFormatError(
            f"{where}: expected shape [N, D], [N, H, W] or [N, C, H, W], got {list(a.shape)}{hint}"
        )
    if len(a) == 0:
        raise DataFormatError(f"{where}: no samples (shape {list(a.shape)})")
    if shape is not None:
        a = a.reshape(len(a), *_sample_shape(shape, math.prod(a.shape[1:]), where))
    elif a.ndim == 4 and a.shape[3] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
        raise DataFormatError(
            f"{where}: shape {list(a.shape)} looks channels-last [N, H, W, C]; store "
            "[N, C, H, W] (x.transpose(0, 3, 1, 2)) or pass shape= to keep it"
        )
    if a.ndim == 3:
        a = a[:, None]  # [N, H, W] -> one channel
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            first = int(np.flatnonzero(bad.reshape(len(a), -1).any(axis=1))[0])
            raise DataFormatError(
                f"{where}: {int(bad.sum())} NaN or infinite values (first in sample {first})"
            )
    return a


def _as_labels(y: Any, where: str, n: int, x_name: str) -> np.ndarray:
    try:
        a = np.asarray(y)
    except (ValueError, TypeError) as e:
        raise DataFormatError(f"{where}: not a 1-D array of labels ({e})") from None
    if a.dtype.kind not in "biuf":
        hint = (
            " (names: map them to 0..C-1, e.g. np.unique(y, return_inverse=True))"
            if a.dtype.kind in "USO"
            else ""
        )
        raise DataFormatError(f"{where}: labels must be integers, got dtype {a.dtype}{hint}")
    if a.ndim != 1:
        hint = ""
        if a.ndim == 2:
            hint = " (use y.ravel())" if a.shape[1] == 1 else " (one-hot? use y.argmax(1))"
        raise DataFormatError(f"{where}: labels must be 1-D [N], got shape {list(a.shape)}{hint}")
    if len(a) != n:
        raise DataFormatError(f"{where}: {len(a)} labels for {n} samples in {x_name}")
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a) | (a != np.round(a)) | (np.abs(a) > _MAX_LABEL)
        if bad.any():
            raise DataFormatError(f"{where}: labels must be integers, found {_num(a[bad][0])}")
    return a.astype(np.int64)


def _check_range(y: np.ndarray, n_classes: int, where: str) -> None:
    lo, hi = int(y.min()), int(y.max())
    if lo >= 0 and hi < n_classes:
        return
    msg = f"{where}: labels must be integers 0..{n_classes - 1}, found {lo if lo < 0 else hi}"
    if lo == 1 and hi == n_classes:
        msg += f"; labels run 1..{hi}: subtract 1"
    raise DataFormatError(msg)


def check_labels(y: Any, n: int, n_classes: int, where: str, x_name: str) -> np.ndarray:
    """``y`` as int64 labels of ``n`` samples in 0..``n_classes`` - 1, or `DataFormatError`."""
    a = _as_labels(y, where, n, x_name)
    if len(a):
        _check_range(a, n_classes, where)
    return a


def _class_names(classes: Sequence[Any], where: str) -> list[str]:
    if isinstance(classes, str | bytes):
        raise DataFormatError(f"{where}: expected a list of class names, got {classes!r}")
    if hasattr(classes, "__len__") and len(classes) > MAX_CLASSES:
        raise DataFormatError(f"{where}: {len(classes)} class names (at most {MAX_CLASSES})")
    names = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in classes]
    if not names:
        raise DataFormatError(f"{where}: empty list of class names")
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise DataFormatError(f"{where}: duplicate class names {dup}")
    return names


def build_arrays(
    x_train: Any,
    y_train: Any,
    x_test: Any = None,
    y_test: Any = None,
    *,
    classes: Sequence[Any] | None = None,
    scale: str | float = "auto",
    test_fraction: float | None = None,
    seed: int | None = None,
    shape: Sequence[int] | None = None,
    where: Where = _plain,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Checked ``(x_train, y_train, x_test, y_test, classes)`` as fresh float32/int64 arrays.

    C = len(classes) if given, else max(y_train) + 1 (then y_train must contain 0). Without
    ``x_test``, a stratified split (`stratified_split`) moves ``test_fraction`` (default 0.2)
    of the training samples, chosen with ``seed`` (default 0), to the test set; with
    ``x_test``, ``test_fraction`` and ``seed`` must be left None. ``where(name)`` names an
    array or option in error messages.
    """
    scale = check_scale(scale)
    if (x_test is None) != (y_test is None):
        given, missing = ("x_test", "y_test") if y_test is None else ("y_test", "x_test")
        raise DataFormatError(f"{where(given)}: given without {missing}")
    has_test = x_test is not None
    if has_test and (test_fraction is not None or seed is not None):
        opt = "test_fraction" if test_fraction is not None else "seed"
        raise DataFormatError(
            f"{where(opt)}: the data has its own test split (x_test), so test_fraction and "
            "the split seed do not apply"
        )
    frac = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
    if not has_test and not (
        isinstance(frac, int | float) and not isinstance(frac, bool) and 0.0 < frac < 1.0
    ):
        raise DataFormatError(f"{where('test_fraction')}: must be in (0, 1), got {frac!r}")

    xtr = _as_inputs(x_train, where("x_train"), shape)
    ytr = _as_labels(y_train, where("y_train"), len(xtr), "x_train")
    if has_test:
        xte = _as_inputs(x_test, where("x_test"), shape)
        if xte.shape[1:] != xtr.shape[1:]:
            raise DataFormatError(
                f"{where('x_test')}: samples of shape {xte.shape[1:]}, but x_train's are "
                f"{xtr.shape[1:]}"
            )
        if scale == "auto" and (xte.dtype == np.uint8) != (xtr.dtype == np.uint8):
            raise DataFormatError(
                f"{where('x_test')}: dtype {xte.dtype} but x_train is {xtr.dtype}; with scale "
                "'auto' the two would be scaled differently: state the scale"
            )
        yte = _as_labels(y_test, where("y_test"), len(xte), "x_test")

    if classes is not None:
        names = _class_names(classes, where("classes"))
    else:
        lo, hi = int(ytr.min()), int(ytr.max())
        if lo < 0:
            raise DataFormatError(f"{where('y_train')}: labels must be integers from 0, found {lo}")
        if lo > 0:
            raise DataFormatError(
                f"{where('y_train')}: labels must start at 0, but labels run {lo}..{hi}; "
                f"subtract {lo} (or give the class names to keep unused classes below {lo})"
            )
        if hi >= MAX_CLASSES:
            raise DataFormatError(
                f"{where('y_train')}: the largest label {hi} would make {hi + 1:.3g} classes, about "
                f"{(hi + 1) * 60:.3g} bytes of class names (at most {MAX_CLASSES} classes); labels "
                "are class indices 0..C-1"
            )
        names = [str(i) for i in range(hi + 1)]
    _check_range(ytr, len(names), where("y_train"))
    if has_test:
        _check_range(yte, len(names), where("y_test"))

    x_all = scale_inputs(xtr, scale, where("x_train"))
    if has_test:
        return x_all, ytr, scale_inputs(xte, scale, where("x_test")), yte, names
    split_seed = DEFAULT_SPLIT_SEED if seed is None else int(seed)
    is_test = stratified_split(ytr, float(frac), split_seed)
    n_test = int(is_test.sum())
    if n_test == 0 or n_test == len(ytr):
        raise DataFormatError(
            f"{where('test_fraction')}: {frac} of {len(ytr)} samples leaves "
            f"{'no test' if n_test == 0 else 'no training'} samples; give x_test and y_test "
            "or change test_fraction"
        )
    return x_all[~is_test], ytr[~is_test], x_all[is_test], ytr[is_test], names
