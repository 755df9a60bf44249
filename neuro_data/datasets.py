"""Classification data sets as numpy arrays: named sets found on disk (or downloaded on
request), and the user's own data (`from_arrays`, `load_npz`, `load_idx_dir`).

Inputs come back as float32 shaped ``[N, C, H, W]`` (images; in [0, 1] for the named sets)
or ``[N, D]`` (flat features); labels as int64 in 0..C-1.

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
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from neuro_data.arrays import DataFormatError, build_arrays, check_labels, check_scale
from neuro_data.idx import read_idx

__all__ = [
    "DATASETS",
    "FORMATS",
    "DataFormatError",
    "DataNotFoundError",
    "Dataset",
    "MIRRORS",
    "NPZ_KEYS",
    "SYSTEM_DATA_ROOT",
    "clear_cache",
    "default_data_dir",
    "from_arrays",
    "load_dataset",
    "load_idx_dir",
    "load_npz",
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
DIGITS_SCALE = 16.0  # the 8x8 digits hold integers 0..16

#: Keys an .npz file may hold; x_test/y_test and the class names are optional.
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test", "classes", "class_names")

Scale = str | float


class DataNotFoundError(FileNotFoundError):
    """A data set is in none of the places looked; the message lists them and how to get it."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled data set split into train and test; arrays are read-only.

    ``x_*`` is float32 ``[N, C, H, W]`` (images) or ``[N, D]`` (flat features); ``shape``
    is one sample's shape, ``(C, H, W)`` or ``(D,)``: an MLP flattens either, a CNN needs
    ``(C, H, W)``. ``y_*`` is int64 in 0..``n_classes`` - 1.
    """

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


def check_dataset(ds: Dataset) -> None:
    """`DataFormatError` naming the array unless ``ds`` (e.g. built by hand, not by
    `from_arrays`) holds what a `Dataset` promises: ``x_*`` arrays ``[N, *shape]`` with
    finite-sized samples, ``y_*`` 1-D integer labels of the same N in 0..len(classes) - 1."""
    if not isinstance(ds.classes, list | tuple) or not ds.classes:
        raise DataFormatError(f"classes: expected a non-empty list of class names, got {type(ds.classes).__name__}")
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        if not isinstance(x, np.ndarray) or x.ndim < 2 or x.dtype.kind not in "biuf":
            raise DataFormatError(f"x_{split}: expected a numeric array [N, ...], got "
                                  f"{type(x).__name__}{'' if not isinstance(x, np.ndarray) else f' of shape {list(x.shape)}'}")
        if tuple(x.shape[1:]) != tuple(ds.shape):
            raise DataFormatError(f"x_{split}: samples of shape {tuple(x.shape[1:])}, but the dataset's shape is {ds.shape}")
        if not len(x):
            raise DataFormatError(f"x_{split}: no samples")
        check_labels(y, len(x), len(ds.classes), f"y_{split}", f"x_{split}")


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


def _read_idx_dir(name: str, d: Path, classes: list[str] | None, scale: Scale = "auto") -> Dataset:
    """The four IDX files in ``d``; the pixel scale follows ``scale`` (uint8 files: x / 255,
    float files as stored under ``"auto"``), labels are checked against ``classes``."""
    arrs: dict[str, np.ndarray] = {}
    files: dict[str, Path] = {}
    for key, stem in IDX_FILES.items():
        f = _idx_file(d, stem)
        assert f is not None
        files[key], arrs[key] = f, read_idx(f)
    return _freeze(
        name,
        *build_arrays(
            arrs["x_train"],
            arrs["y_train"],
            arrs["x_test"],
            arrs["y_test"],
            classes=classes,
            scale=scale,
            where=lambda k: f"{files[k]}: {k}" if k in files else f"{d}: {k}",
        ),
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
        raise DataFormatError(f"{where}: not a CIFAR-10 python batch ({e})") from e
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


def _read_cifar(name: str, d: Path, classes: list[str] | None, scale: Scale = "auto") -> Dataset:
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
            raise DataFormatError(f"{src}: unreadable archive ({e})") from e
        missing = [b for b in CIFAR_BATCHES if b not in batches]
        if missing:
            raise DataFormatError(f"{src}: archive lacks {', '.join(missing)}")
    xtr = np.concatenate([batches[b][0] for b in CIFAR_BATCHES[:-1]])
    ytr = np.concatenate([batches[b][1] for b in CIFAR_BATCHES[:-1]])
    xte, yte = batches["test_batch"]
    return _freeze(
        name,
        *build_arrays(
            xtr, ytr, xte, yte, classes=classes, scale=scale, where=lambda k: f"{src}: {k}"
        ),
    )


def _load_digits(
    scale: Scale = "auto", test_fraction: float | None = None, seed: int | None = None
) -> Dataset:
    """scikit-learn's 8x8 digits (values 0..16 -> x / 16), split 80/20 per class, seed 0.

    ``scale="auto"`` means x / 16; ``test_fraction`` and ``seed`` change the split.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - sklearn is a dependency
        raise DataNotFoundError(
            "Dataset 'digits' comes with scikit-learn, which is not installed; "
            "install it with `pip install scikit-learn`."
        ) from e
    bunch = load_digits()
    # Own stratified split with a fixed numpy seed so the split does not depend on the
    # scikit-learn version: per class, a seeded permutation, the first round(20%) to test.
    return _freeze(
        "digits",
        *build_arrays(
            np.asarray(bunch.images),
            np.asarray(bunch.target),
            classes=DIGIT_CLASSES,
            scale=DIGITS_SCALE if check_scale(scale) == "auto" else scale,
            test_fraction=DIGITS_TEST_FRACTION if test_fraction is None else test_fraction,
            seed=DIGITS_SPLIT_SEED if seed is None else seed,
            where=lambda k: f"digits: {k}",
        ),
    )


# ---------------------------------------------------------------- the user's own data


def from_arrays(
    x_train: Any,
    y_train: Any,
    x_test: Any = None,
    y_test: Any = None,
    *,
    classes: Sequence[Any] | None = None,
    scale: Scale = "auto",
    test_fraction: float | None = None,
    seed: int | None = None,
    name: str = "arrays",
    shape: Sequence[int] | None = None,
) -> Dataset:
    """A `Dataset` from in-memory arrays, checked; the inputs are copied, never aliased.

    ``x``: ``[N, D]`` (flat, ``shape`` (D,)), ``[N, H, W]`` (stored as ``[N, 1, H, W]``) or
    ``[N, C, H, W]`` (channels first); ``shape=`` reshapes each sample, e.g. ``(1, 28, 28)``
    for flat pixels meant for a CNN. ``y``: 1-D integer labels 0..C-1 with C =
    ``len(classes)``, else max(y_train) + 1. ``scale``: x' = x / s with s = 255 (``"uint8"``,
    integer values 0..255 required), 1 (``"unit"``, values in [0, 1] required; ``"none"``,
    unchecked) or the number given; ``"auto"``: 255 for uint8 arrays, 1 for floats. Without
    ``x_test``, a stratified split with ``seed`` (default 0) moves ``test_fraction``
    (default 0.2) of each class to the test set. Bad input raises `DataFormatError` (a
    ``ValueError``) in one line naming the array.
    """
    return _freeze(
        name,
        *build_arrays(
            x_train,
            y_train,
            x_test,
            y_test,
            classes=classes,
            scale=scale,
            test_fraction=test_fraction,
            seed=seed,
            shape=shape,
        ),
    )


def _npz_classes(a: np.ndarray, where: str) -> list[str]:
    if a.ndim != 1 or a.dtype.kind not in "USiu":
        raise DataFormatError(
            f"{where}: class names must be a 1-D array of strings, got dtype {a.dtype} "
            f"shape {list(a.shape)}"
        )
    try:
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in a.tolist()]
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{where}: class names are not UTF-8 ({e})") from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file by key, read without pickle (object arrays are refused)."""
    if not path.is_file():
        why = "is not a file" if path.exists() else "does not exist"
        raise DataNotFoundError(f"npz file {path} {why}")
    try:
        z = np.load(path, allow_pickle=False)  # untrusted files: never unpickle
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        # numpy reports an unknown file as pickled data and suggests allow_pickle: never.
        why = "neither .npz nor .npy" if "pickle" in str(e) else str(e)
        raise DataFormatError(f"{path}: not a readable .npz file ({why})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataFormatError(
            f"{path}: a single .npy array, not an .npz archive; write it with np.savez(path, "
            "x_train=..., y_train=...)"
        )
    out: dict[str, np.ndarray] = {}
    with z:
        unknown = [k for k in z.files if k not in NPZ_KEYS]
        if unknown:
            raise DataFormatError(
                f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(NPZ_KEYS)}"
            )
        for key in z.files:
            try:
                out[key] = z[key]
            except ValueError as e:
                if "allow_pickle" in str(e) or "object" in str(e).lower():
                    raise DataFormatError(
                        f"{path}: {key}: object array refused (files are read without "
                        "pickle); store numbers, and class names as strings"
                    ) from None
                raise DataFormatError(f"{path}: {key}: unreadable ({e})") from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as e:
                raise DataFormatError(f"{path}: {key}: unreadable ({e})") from None
    for key in ("x_train", "y_train"):
        if key not in out:
            has = ", ".join(out) or "no arrays"
            raise DataFormatError(f"{path}: missing key {key!r} (the file has {has})")
    return out


def load_npz(
    path: str | os.PathLike[str],
    *,
    classes: Sequence[Any] | None = None,
    scale: Scale = "auto",
    test_fraction: float | None = None,
    seed: int | None = None,
    name: str = "npz",
    shape: Sequence[int] | None = None,
) -> Dataset:
    """A `Dataset` from an .npz file with keys ``x_train``, ``y_train`` and optionally
    ``x_test``, ``y_test`` and ``classes`` (or ``class_names``); options and checks as in `from_arrays`.

    Read with ``allow_pickle=False`` (object arrays are refused). Errors name the file and
    the key. ``classes=`` may only repeat the file's class names, not contradict them.
    """
    p = Path(path).expanduser()
    arrs = _read_npz(p)
    file_classes: list[str] | None = None
    if "classes" in arrs and "class_names" in arrs:
        raise DataFormatError(f"{p}: holds both 'classes' and 'class_names'; keep one")
    for key in ("classes", "class_names"):
        if key in arrs:
            file_classes = _npz_classes(arrs[key], f"{p}: {key}")
    if classes is not None and file_classes is not None:
        if [str(c) for c in classes] != file_classes:
            raise DataFormatError(
                f"{p}: classes: the file names {file_classes}, the caller {list(classes)}"
            )
    return _freeze(
        name,
        *build_arrays(
            arrs["x_train"],
            arrs["y_train"],
            arrs.get("x_test"),
            arrs.get("y_test"),
            classes=classes if classes is not None else file_classes,
            scale=scale,
            test_fraction=test_fraction,
            seed=seed,
            shape=shape,
            where=lambda k: f"{p}: {k}",
        ),
    )


def load_idx_dir(
    path: str | os.PathLike[str],
    *,
    classes: Sequence[Any] | None = None,
    scale: Scale = "auto",
    name: str = "idx",
) -> Dataset:
    """A `Dataset` from a directory holding the four MNIST-named IDX files (each raw or .gz):
    train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
    t10k-labels-idx1-ubyte. Any IDX dtype; ``scale`` and checks as in `from_arrays`
    (uint8 images: x / 255; float images: as stored)."""
    d = Path(path).expanduser()
    why = _check_idx_dir(d)
    if why is not None:
        raise DataNotFoundError(f"IDX directory {d} {why}")
    return _read_idx_dir(name, d, list(classes) if classes is not None else None, scale)


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Spec:
    name: str
    dir_names: tuple[str, ...]  # names looked for under user roots; the first is canonical
    system_names: tuple[str, ...]  # names looked for under SYSTEM_DATA_ROOT
    check: Callable[[Path], str | None]  # None when the directory holds the data set
    read: Callable[[str, Path, list[str], Scale], Dataset]
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
        scale: Scale = "auto",
        test_fraction: float | None = None,
        seed: int | None = None,
    ) -> Dataset:
        return load_dataset(
            name,
            path=path,
            data_dir=data_dir,
            download=download,
            scale=scale,
            test_fraction=test_fraction,
            seed=seed,
        )

    load.__name__ = f"load_{name}"
    load.__doc__ = f"Load {name!r}; see `load_dataset`."
    return load


#: Data set name -> loader taking the keyword arguments of `load_dataset`.
DATASETS: dict[str, Callable[..., Dataset]] = {
    n: _dataset_loader(n) for n in ("fashion_mnist", "mnist", "digits", "cifar10")
}

#: The user's own files, usable as a data set name together with ``path``: ``npz`` (an .npz
#: file, see `load_npz`) and ``idx`` (a directory of the four IDX files, `load_idx_dir`).
#: Loaders take the same keyword arguments as those of `DATASETS`.
FORMATS: dict[str, Callable[..., Dataset]] = {n: _dataset_loader(n) for n in ("npz", "idx")}


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


# The caches key on every argument: call them with all arguments, positionally, so that a
# default left out and the same default passed explicitly hit the same entry.
@functools.lru_cache(maxsize=8)
def _read_cached(name: str, resolved: str, scale: Scale) -> Dataset:
    spec = _SPECS[name]
    return spec.read(name, Path(resolved), spec.classes, scale)


@functools.lru_cache(maxsize=4)
def _digits_cached(scale: Scale, test_fraction: float | None, seed: int | None) -> Dataset:
    return _load_digits(scale, test_fraction, seed)


@functools.lru_cache(maxsize=4)
def _format_cached(
    kind: str,
    resolved: str,
    stamp: tuple[tuple[int, int], ...],  # (mtime_ns, size) of each file: an edit re-reads
    scale: Scale,
    test_fraction: float | None,
    seed: int | None,
) -> Dataset:
    if kind == "npz":
        return load_npz(resolved, scale=scale, test_fraction=test_fraction, seed=seed)
    return load_idx_dir(resolved, scale=scale)


def clear_cache() -> None:
    """Forget every data set loaded in this process."""
    _read_cached.cache_clear()
    _digits_cached.cache_clear()
    _format_cached.cache_clear()


def _load_format(
    key: str,
    path: str | os.PathLike[str] | None,
    download: bool,
    scale: Scale,
    test_fraction: float | None,
    seed: int | None,
) -> Dataset:
    what = "an .npz file" if key == "npz" else "a directory of the four IDX files"
    if path is None:
        raise DataFormatError(f"path: dataset {key!r} reads {what}; give its path")
    if download:
        raise DataFormatError(
            f"download: dataset {key!r} reads your own files; nothing to download"
        )
    p = Path(path).expanduser()
    if key == "npz":
        if not p.is_file():
            why = "is not a file" if p.exists() else "does not exist"
            raise DataNotFoundError(f"Dataset 'npz': the given path {p} {why}")
        files = [p]
    else:
        why = _check_idx_dir(p)
        if why is not None:
            raise DataNotFoundError(
                f"Dataset 'idx' not found at the given path {p} ({why}); it must hold "
                f"{_SPECS['mnist'].files_hint}"
            )
        if test_fraction is not None or seed is not None:
            _no_split_options(key, test_fraction)
        files = [f for f in (_idx_file(p, s) for s in IDX_FILES.values()) if f is not None]
    stamp = tuple((st.st_mtime_ns, st.st_size) for st in (f.stat() for f in files))
    return _format_cached(key, str(p.resolve()), stamp, scale, test_fraction, seed)


def _no_split_options(key: str, test_fraction: float | None) -> None:
    opt = "test_fraction" if test_fraction is not None else "seed"
    raise DataFormatError(
        f"{opt}: dataset {key!r} has its own test split; test_fraction and the split seed "
        "apply only to data without one (digits, an npz file without x_test, from_arrays)"
    )


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
    scale: Scale = "auto",
    test_fraction: float | None = None,
    seed: int | None = None,
) -> Dataset:
    """Load a data set by name from the first place that holds it (see the module docstring).

    ``name`` is one of `DATASETS`, or one of `FORMATS` (``npz``, ``idx``) with ``path`` the
    user's file or directory. ``scale`` states the input scale (see `from_arrays`; the
    default ``"auto"`` gives the named sets' usual [0, 1] images). ``test_fraction`` and
    ``seed`` (defaults 0.2 and 0) set the stratified test split of data that has none
    (``digits``, an npz file without x_test); for data with its own test split they must be
    left None.

    Raises ``ValueError`` for an unknown name, `DataFormatError` (a ``ValueError``) for
    unusable data or options, and `DataNotFoundError` when the data is nowhere, with one
    paragraph listing every place looked and how to get the data. Results are cached per
    (name, resolved directory, options) for the life of the process.
    """
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS and key not in FORMATS:
        raise ValueError(
            f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}, "
            f"or with a path: {', '.join(sorted(FORMATS))}"
        )
    scale = check_scale(scale)
    if key in FORMATS:
        return _load_format(key, path, download, scale, test_fraction, seed)
    if key == "digits":
        if path is not None:
            raise ValueError("dataset 'digits' ships with scikit-learn and takes no path")
        return _digits_cached(scale, test_fraction, seed)
    if test_fraction is not None or seed is not None:
        _no_split_options(key, test_fraction)

    spec = _SPECS[key]
    ddir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if path is not None:
        # An explicit path is the only place looked: silently using other data instead of
        # the one the config names would make runs irreproducible.
        p = Path(path).expanduser()
        why = spec.check(p)
        if why is None:
            return _read_cached(key, str(p.resolve()), scale)
        raise DataNotFoundError(
            f"Dataset {key!r} not found at the given path {p} ({why}); it must hold "
            f"{spec.files_hint}. {_how_to_get(spec, ddir)}"
        )

    looked: list[str] = [] if os.environ.get(ENV_VAR) else [f"${ENV_VAR} (not set)"]
    for cand in _candidates(spec, ddir):
        why = spec.check(cand)
        if why is None:
            return _read_cached(key, str(cand.resolve()), scale)
        looked.append(f"{cand} ({why})")

    target = ddir / spec.dir_names[0]
    if download:
        return _download(spec, target, looked, ddir, scale)
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


def _download(
    spec: _Spec, target: Path, looked: list[str], ddir: Path, scale: Scale = "auto"
) -> Dataset:
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
    # Checked with the default scale: a scale the data does not fit must not delete the files.
    try:
        ds = _read_cached(spec.name, str(target.resolve()), "auto")
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
    return ds if scale == "auto" else _read_cached(spec.name, str(target.resolve()), scale)
