"""Data sources of the gradient kinds: the ``datasets`` registry group and batching.

Every ``neuro_data`` data set and file format (``npz``, ``idx``) is registered here;
third-party loaders join through the ``bioplaus.datasets`` entry-point group (a loader
``f(path=None, data_dir=None, download=False) -> neuro_data.Dataset``, which may also take
``scale``, ``test_fraction`` and ``seed``). Python callers hand a ``neuro_data.Dataset``
(e.g. ``neuro_data.from_arrays(...)``) to `bioplaus.run` as ``data=``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import neuro_data
from bioplaus.config import ExperimentConfig
from bioplaus.errors import ConfigError, DataError
from bioplaus.registry import DATASETS

for _name, _loader in {**neuro_data.DATASETS, **neuro_data.FORMATS}.items():
    DATASETS.register(_name, _loader)


def _pattern_loader(name: str, make: Any) -> Any:
    """A pattern generator as a ``datasets`` entry: ``loader(N=, K=, d=, M=, r=, seed=)``.

    Called the way the gradient kinds call a data set loader (no ``N``), it refuses with a
    ValueError, which `load_data` turns into one line.
    """

    def load(path: Any = None, data_dir: Any = None, download: bool = False, **kw: Any) -> Any:
        if "N" not in kw:
            raise ValueError(f"{name!r} generates patterns for kind = 'hopfield'; it is not a labelled data set")
        return make(**kw)

    load.__name__ = f"load_{name}"
    load.__doc__ = make.__doc__
    load.generates_patterns = True  # type: ignore[attr-defined]
    return load


for _name, _make in neuro_data.PATTERNS.items():
    DATASETS.register(_name, _pattern_loader(_name, _make))


@dataclass
class DataBundle:
    """Loaders and facts about the data of one supervised experiment."""

    train: Any
    val: Any | None
    test: Any
    input_shape: tuple[int, ...]
    n_classes: int
    classes: list[str]
    probe_x: torch.Tensor
    probe_y: torch.Tensor | None = None  # labels of probe_x (raster and membrane figures)


def load_data(cfg: ExperimentConfig, data: Any = None) -> Any:
    """The configured data set as a ``neuro_data.Dataset`` (or ``data`` when given: `as_dataset`)."""
    if data is not None:
        return as_dataset(data)
    d = cfg.data
    loader = DATASETS.get(d.dataset, "data.dataset")
    kwargs: dict[str, Any] = {"path": d.path, "data_dir": d.data_dir, "download": d.download}
    extra = {"scale": d.scale, "test_fraction": d.test_fraction, "seed": d.split_seed}
    defaults = {"scale": "auto", "test_fraction": None, "seed": None}
    accepts = _keywords(loader)
    for key, value in extra.items():
        if accepts is None or key in accepts:
            kwargs[key] = value
        elif value != defaults[key]:
            field = "split_seed" if key == "seed" else key
            raise ConfigError(f"data.{field}: the loader of data set {d.dataset!r} does not take it")
    try:
        return loader(**kwargs)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(f"data.dataset = {d.dataset!r}: {e}") from None


def as_dataset(data: Any) -> neuro_data.Dataset:
    """``data=`` of `bioplaus.run` as a checked ``neuro_data.Dataset``: a Dataset (checked by
    `neuro_data.check_dataset`, it may be built by hand), an ``(x, y)`` or ``(x_train,
    y_train, x_test, y_test)`` tuple of arrays or a dict with the keys of an ``.npz`` file
    (both through ``neuro_data.from_arrays``); anything else a ConfigError naming ``data``."""
    try:
        if isinstance(data, neuro_data.Dataset):
            neuro_data.check_dataset(data)
            return data
        if isinstance(data, tuple | list) and len(data) in (2, 4):
            return neuro_data.from_arrays(*data)
        if isinstance(data, Mapping) and {"x_train", "y_train"} <= set(data) <= set(neuro_data.datasets.NPZ_KEYS):
            arrays = dict(data)
            classes = arrays.pop("classes", arrays.pop("class_names", None))
            return neuro_data.from_arrays(**arrays, classes=classes)
    except ValueError as e:  # DataFormatError: one line naming the array
        raise DataError(f"data: {e}") from None
    raise ConfigError(
        f"data: expected a neuro_data.Dataset, an (x, y) or (x_train, y_train, x_test, y_test) tuple of arrays "
        f"or a dict of them (x_train, y_train, ...; see docs/data.md), got {type(data).__name__}"
    )


def _keywords(fn: Any) -> set[str] | None:
    """Keyword names ``fn`` accepts (None: any, it takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def prepare_arrays(
    cfg: ExperimentConfig, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> tuple[Any, Any, Any, np.ndarray, np.ndarray]:
    """Seeded split, limits and normalisation; returns (train, val, test) loaders, probe x and y."""
    d = cfg.data
    if d.val_fraction > 0:
        x_tr, y_tr, x_val, y_val = neuro_data.split(x_train, y_train, d.val_fraction, cfg.seed)
    else:
        x_tr, y_tr, x_val, y_val = x_train, y_train, None, None
    if d.limit_train:
        x_tr, y_tr = x_tr[: d.limit_train], y_tr[: d.limit_train]
    if d.limit_test:
        x_test, y_test = x_test[: d.limit_test], y_test[: d.limit_test]
        if x_val is not None:
            x_val, y_val = x_val[: d.limit_test], y_val[: d.limit_test]
    norm = neuro_data.Normalizer.fit(x_tr, d.normalize)
    x_tr, x_test = norm(x_tr), norm(x_test)
    train = neuro_data.ArrayLoader(x_tr, y_tr, d.batch_size, shuffle=True, seed=cfg.seed)
    test = neuro_data.ArrayLoader(x_test, y_test, d.eval_batch_size, shuffle=False)
    val = None
    if x_val is not None and len(x_val):
        x_val = norm(x_val)
        val = neuro_data.ArrayLoader(x_val, y_val, d.eval_batch_size, shuffle=False)
    probe_src, probe_y = (x_val, y_val) if x_val is not None and len(x_val) else (x_test, y_test)
    return train, val, test, np.ascontiguousarray(probe_src[:64]), np.ascontiguousarray(probe_y[:64])


def prepare_data(cfg: ExperimentConfig, data: Any = None) -> DataBundle:
    """Load (or take) the data set and batch it as ``[data]`` says."""
    ds = load_data(cfg, data)
    train, val, test, probe, probe_y = prepare_arrays(cfg, ds.x_train, ds.y_train, ds.x_test, ds.y_test)
    return DataBundle(
        train, val, test, tuple(ds.shape), len(ds.classes), list(ds.classes), torch.as_tensor(probe),
        torch.as_tensor(probe_y),
    )
