"""Image classification data sets found on disk (or downloaded on request) as numpy arrays.

Images come back as float32 in [0, 1] shaped ``[N, C, H, W]``; labels as int64.

Where a data set is looked for, in order (the first directory holding every file wins):

1. the ``path`` argument (``path`` in ``[data]``); when given it is the only place looked;
2. ``$BIOPLAUS_DATA/<name>`` (and its other directory names), then ``$BIOPLAUS_DATA``;
3. ``SYSTEM_DATA_ROOT/<debian name>``, e.g. ``/usr/share/datasets/fashion-mnist`` from the
   Debian package ``dataset-fashion-mnist``;
4. ``<data_dir>/<name>``, where ``data_dir`` defaults to ``$BIOPLAUS_DATA`` or else
   ``~/.cache/bioplaus/data``;
5. with ``download=True``, a download from the official mirrors into ``<data_dir>/<name>``.
"""

from __future__ import annotations

import functools
import http.client
import logging
import os
import pickle
import shutil
import tarfile
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from neuro_data.idx import read_idx

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "Dataset",
    "MIRRORS",
    "SYSTEM_DATA_ROOT",
    "clear_cache",
    "default_data_dir",
    "load_dataset",
]

log = logging.getLogger(__name__)

#: Root of system-wide data packages; a module variable so tests can point it elsewhere.
SYSTEM_DATA_ROOT = Path("/usr/share/datasets")
ENV_VAR = "BIOPLAUS_DATA"
DOWNLOAD_TIMEOUT_S = 60.0

#: Download mirrors per data set, tried in order; each entry is a base URL (IDX sets, file
#: names appended) or the archive URL itself (cifar10).
MIRRORS: dict[str, tuple[str, ...]] = {
    "fashion_mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
}

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
DIGIT_CLASSES = [str(i) for i in range(10)]
CIFAR_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


class DataNotFoundError(FileNotFoundError):
    """A data set is in none of the places looked; the message lists them and how to get it."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image data set split into train and test; arrays are read-only."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    shape: tuple[int, ...]

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"shape={self.shape}, classes={len(self.classes)})"
        )


def _freeze(
    name: str,
    xtr: np.ndarray,
    ytr: np.ndarray,
    xte: np.ndarray,
    yte: np.ndarray,
    classes: list[str],
) -> Dataset:
    arrays = []
    for a in (xtr, ytr, xte, yte):
        a.flags.writeable = False  # shared by the in-process cache: nobody may edit it
        arrays.append(a)
    return Dataset(name, *arrays, classes=list(classes), shape=tuple(xtr.shape[1:]))


def _images_u8(a: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]: x / 255."""
    out = a.astype(np.float32)
    out *= np.float32(1.0 / 255.0)
    return out


# ---------------------------------------------------------------- per-format readers


def _idx_file(d: Path, stem: str) -> Path | None:
    for cand in (d / stem, d / f"{stem}.gz"):
        if cand.is_file():
            return cand
    return None


def _check_idx_dir(d: Path) -> str | None:
    if not d.is_dir():
        return "is not a directory" if d.exists() else "does not exist"
    missing = [f"{s}[.gz]" for s in IDX_FILES.values() if _idx_file(d, s) is None]
    return f"lacks {', '.join(missing)}" if missing else None


def _read_idx_dir(name: str, d: Path, classes: list[str]) -> Dataset:
    arrs: dict[str, np.ndarray] = {}
    for key, stem in IDX_FILES.items():
        f = _idx_file(d, stem)
        assert f is not None
        arrs[key] = read_idx(f)
    for split in ("train", "test"):
        x, y = arrs[f"x_{split}"], arrs[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"{d}: {split} images {x.shape} and labels {y.shape} do not match "
                "(expected [N, H, W] and [N])"
            )
    return _freeze(
        name,
        _images_u8(arrs["x_train"])[:, None],
        arrs["y_train"].astype(np.int64),
        _images_u8(arrs["x_test"])[:, None],
        arrs["y_test"].astype(np.int64),
        classes,
    )


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that builds only numpy arrays and plain containers, never arbitrary objects."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR batch refers to {module}.{name}; refusing")
        with warnings.catch_warnings():
            # The official batches name numpy.core, deprecated in numpy 2 but still loadable.
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def _unpickle_batch(f: IO[bytes], where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = _CifarUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{where}: not a CIFAR-10 python batch ({e})") from e
    if len(data) != len(labels):
        raise ValueError(f"{where}: {len(data)} images but {len(labels)} labels")
    return data, labels


def _cifar_source(d: Path) -> Path | None:
    """The batches directory or archive that ``d`` refers to, if any."""
    if d.is_file() and d.name.endswith((".tar.gz", ".tgz")):
        return d
    if not d.is_dir():
        return None
    for cand in (d / CIFAR_DIR, d):
        if all((cand / b).is_file() for b in CIFAR_BATCHES):
            return cand
    if (d / CIFAR_ARCHIVE).is_file():
        return d / CIFAR_ARCHIVE
    return None


def _check_cifar(d: Path) -> str | None:
    if not d.exists():
        return "does not exist"
    if _cifar_source(d) is None:
        return f"holds neither {CIFAR_DIR}/ (data_batch_1..5, test_batch) nor {CIFAR_ARCHIVE}"
    return None


def _read_cifar(name: str, d: Path, classes: list[str]) -> Dataset:
    src = _cifar_source(d)
    assert src is not None
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if src.is_dir():
        for b in CIFAR_BATCHES:
            with open(src / b, "rb") as f:
                batches[b] = _unpickle_batch(f, str(src / b))
    else:
        try:
            with tarfile.open(src, "r:*") as tar:
                for m in tar:
                    base = m.name.rsplit("/", 1)[-1]
                    if m.isfile() and base in CIFAR_BATCHES:
                        fobj = tar.extractfile(m)
                        assert fobj is not None
                        batches[base] = _unpickle_batch(fobj, f"{src}:{m.name}")
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ValueError(f"{src}: unreadable archive ({e})") from e
        missing = [b for b in CIFAR_BATCHES if b not in batches]
        if missing:
            raise ValueError(f"{src}: archive lacks {', '.join(missing)}")
    xtr = np.concatenate([batches[b][0] for b in CIFAR_BATCHES[:-1]])
    ytr = np.concatenate([batches[b][1] for b in CIFAR_BATCHES[:-1]])
    xte, yte = batches["test_batch"]
    return _freeze(name, _images_u8(xtr), ytr, _images_u8(xte), yte, classes)


def _load_digits() -> Dataset:
    """scikit-learn's 8x8 digits (values 0..16 -> x / 16), split 80/20 per class, seed 0."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - sklearn is a dependency
        raise DataNotFoundError(
            "Dataset 'digits' comes with scikit-learn, which is not installed; "
            "install it with `pip install scikit-learn`."
        ) from e
    bunch = load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0))[:, None]
    y = np.asarray(bunch.target, dtype=np.int64)
    # Own stratified split with a fixed numpy seed so the split does not depend on the
    # scikit-learn version: per class, a seeded permutation, the first round(20%) to test.
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test_idx = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        test_idx.append(idx[: int(round(DIGITS_TEST_FRACTION * len(idx)))])
    is_test = np.zeros(len(y), dtype=bool)
    is_test[np.concatenate(test_idx)] = True
    return _freeze("digits", x[~is_test], y[~is_test], x[is_test], y[is_test], DIGIT_CLASSES)


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Spec:
    name: str
    dir_names: tuple[str, ...]  # names looked for under user roots; the first is canonical
    system_names: tuple[str, ...]  # names looked for under SYSTEM_DATA_ROOT
    check: Callable[[Path], str | None]  # None when the directory holds the data set
    read: Callable[[str, Path, list[str]], Dataset]
    classes: list[str]
    sizes: tuple[int, int]  # (train, test) of the real data, checked after a download
    files_hint: str
    get_hint: str


_SPECS: dict[str, _Spec] = {
    "fashion_mnist": _Spec(
        "fashion_mnist",
        ("fashion_mnist", "fashion-mnist"),
        ("fashion-mnist",),
        _check_idx_dir,
        _read_idx_dir,
        FASHION_CLASSES,
        (60000, 10000),
        "the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally .gz)",
        "install the Debian package (`apt-get install dataset-fashion-mnist`, which puts it "
        "in /usr/share/datasets/fashion-mnist), ",
    ),
    "mnist": _Spec(
        "mnist",
        ("mnist",),
        ("mnist",),
        _check_idx_dir,
        _read_idx_dir,
        DIGIT_CLASSES,
        (60000, 10000),
        "the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally .gz)",
        "",
    ),
    "cifar10": _Spec(
        "cifar10",
        ("cifar10", "cifar-10"),
        ("cifar10", "cifar-10"),
        _check_cifar,
        _read_cifar,
        CIFAR_CLASSES,
        (50000, 10000),
        f"the python batches ({CIFAR_DIR}/ with data_batch_1..5 and test_batch, or "
        f"{CIFAR_ARCHIVE})",
        "",
    ),
}


def _dataset_loader(name: str) -> Callable[..., Dataset]:
    def load(
        *,
        path: str | os.PathLike[str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        download: bool = False,
    ) -> Dataset:
        return load_dataset(name, path=path, data_dir=data_dir, download=download)

    load.__name__ = f"load_{name}"
    load.__doc__ = f"Load {name!r}; see `load_dataset`."
    return load


#: Data set name -> loader taking the keyword arguments of `load_dataset`.
DATASETS: dict[str, Callable[..., Dataset]] = {
    n: _dataset_loader(n) for n in ("fashion_mnist", "mnist", "digits", "cifar10")
}


def default_data_dir() -> Path:
    """The download/cache directory: ``$BIOPLAUS_DATA`` if set, else ``~/.cache/bioplaus/data``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bioplaus" / "data"


def _candidates(spec: _Spec, data_dir: Path) -> list[Path]:
    cands: list[Path] = []
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
        cands += [root / n for n in spec.dir_names] + [root]
    cands += [SYSTEM_DATA_ROOT / n for n in spec.system_names]
    cands += [data_dir / n for n in spec.dir_names]
    unique: list[Path] = []
    for c in cands:
        if c not in unique:  # data_dir defaults to $BIOPLAUS_DATA: look there once
            unique.append(c)
    return unique


@functools.lru_cache(maxsize=8)
def _read_cached(name: str, resolved: str) -> Dataset:
    spec = _SPECS[name]
    return spec.read(name, Path(resolved), spec.classes)


@functools.lru_cache(maxsize=1)
def _digits_cached() -> Dataset:
    return _load_digits()


def clear_cache() -> None:
    """Forget every data set loaded in this process."""
    _read_cached.cache_clear()
    _digits_cached.cache_clear()


def _how_to_get(spec: _Spec, data_dir: Path) -> str:
    return (
        f"To get it, {spec.get_hint}put those files in a directory <dir> and set "
        f'{ENV_VAR}=<dir> or `path = "<dir>"` in [data], or set `download = true` in [data] '
        f"(download=True) to fetch it into {data_dir / spec.dir_names[0]}."
    )


def load_dataset(
    name: str,
    *,
    path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> Dataset:
    """Load a data set by name from the first place that holds it (see the module docstring).

    Raises ``ValueError`` for an unknown name and `DataNotFoundError` when the data is
    nowhere, with one paragraph listing every place looked and how to get the data.
    Results are cached per (name, resolved directory) for the life of the process.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    if key == "digits":
        if path is not None:
            raise ValueError("dataset 'digits' ships with scikit-learn and takes no path")
        return _digits_cached()

    spec = _SPECS[key]
    ddir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if path is not None:
        # An explicit path is the only place looked: silently using other data instead of
        # the one the config names would make runs irreproducible.
        p = Path(path).expanduser()
        why = spec.check(p)
        if why is None:
            return _read_cached(key, str(p.resolve()))
        raise DataNotFoundError(
            f"Dataset {key!r} not found at the given path {p} ({why}); it must hold "
            f"{spec.files_hint}. {_how_to_get(spec, ddir)}"
        )

    looked: list[str] = [] if os.environ.get(ENV_VAR) else [f"${ENV_VAR} (not set)"]
    for cand in _candidates(spec, ddir):
        why = spec.check(cand)
        if why is None:
            return _read_cached(key, str(cand.resolve()))
        looked.append(f"{cand} ({why})")

    target = ddir / spec.dir_names[0]
    if download:
        return _download(spec, target, looked, ddir)
    raise DataNotFoundError(
        f"Dataset {key!r} not found; looked for {spec.files_hint} in: {'; '.join(looked)}. "
        f"{_how_to_get(spec, ddir)}"
    )


# ---------------------------------------------------------------- download


def _fetch(url: str, dest: Path) -> None:
    """Copy ``url`` to ``dest`` through a ``.part`` file so a broken transfer leaves nothing."""
    part = dest.with_name(dest.name + ".part")
    req = urllib.request.Request(url, headers={"User-Agent": "bioplaus (python urllib)"})
    try:
        with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT_S) as r, open(part, "wb") as f:
            shutil.copyfileobj(r, f, length=1 << 20)
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)


def _fetch_any(urls: list[str], dest: Path, tried: list[str]) -> bool:
    for url in urls:
        log.info("downloading %s -> %s", url, dest)
        try:
            _fetch(url, dest)
            return True
        except (OSError, http.client.HTTPException, ValueError) as e:
            # URLError, HTTPError and timeouts are OSErrors; ValueError is a malformed URL.
            tried.append(f"{url} ({type(e).__name__}: {e})")
    return False


def _download(spec: _Spec, target: Path, looked: list[str], ddir: Path) -> Dataset:
    mirrors = MIRRORS.get(spec.name, ())
    tried: list[str] = []
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataNotFoundError(
            f"Dataset {spec.name!r} not found in: {'; '.join(looked)}; cannot create the "
            f"download directory {target} ({e}). {_how_to_get(spec, ddir)}"
        ) from e
    if spec.name == "cifar10":
        files = [(list(mirrors), target / CIFAR_ARCHIVE)]
    else:
        files = [
            ([m + f"{stem}.gz" for m in mirrors], target / f"{stem}.gz")
            for stem in IDX_FILES.values()
        ]
    fetched: list[Path] = []
    for urls, dest in files:
        if dest.is_file():
            continue
        if not _fetch_any(urls, dest, tried):
            raise DataNotFoundError(
                f"Dataset {spec.name!r} not found in: {'; '.join(looked)}; the download "
                f"failed, tried: {'; '.join(tried)}. {_how_to_get(spec, ddir)}"
            )
        fetched.append(dest)
    # Verify by reading back; a corrupt or wrong file is removed so the next try refetches.
    try:
        ds = _read_cached(spec.name, str(target.resolve()))
        got = (len(ds.y_train), len(ds.y_test))
        if got != spec.sizes:
            raise ValueError(f"{target}: expected {spec.sizes} train/test samples, got {got}")
    except ValueError as e:
        _read_cached.cache_clear()
        for f in fetched:
            f.unlink(missing_ok=True)
        raise DataNotFoundError(
            f"Dataset {spec.name!r}: downloaded files in {target} are unusable ({e}); "
            f"sources: {', '.join(mirrors)}. {_how_to_get(spec, ddir)}"
        ) from e
    return ds
