"""Streaming HDF5 writer for run files: the only code that touches HDF5 while training.

Life cycle of a `Recorder`:

1. *Lazy phase* (after construction). Every ``log_*`` call is buffered in memory; a flush
   opens the file, creates the datasets it needs (first use creates them), appends, and
   closes the file again. Keeping the file closed between flushes means a process killed
   in this phase still leaves a consistent file that any reader opens.
2. *SWMR phase* (after `Recorder.start_swmr`). The file stays open in HDF5 single-writer /
   multiple-reader mode: datasets that exist are appended to in place, readers in other
   processes see the new rows, and a SIGKILL leaves a readable file holding everything up
   to the last flush. HDF5 forbids creating objects and writing attributes in this mode, so
   names first logged now, and every attribute, are kept in memory until `Recorder.close`.
3. *Close*. The final status goes into the ``/status`` dataset in place, the SWMR handle is
   closed, the file is reopened normally, buffered objects and attributes are written, and
   the root attributes ``status`` and ``finished`` are set.

Creation never clobbers by accident: the first version of the file (root attributes, status
"running") is written under a temporary name in the target's directory and then renamed
into place, with a hard link that fails if the name was taken meanwhile (``on_exists``
decides between refusing, replacing and taking the next numbered name).

A kill at any instant leaves a readable file. HDF5 flags a file open for writing outside
SWMR in its superblock, and a file whose writer dies in that state, half written, is refused
by every reader. So the file at the run's path is never opened for writing outside SWMR:
every such write (a lazy flush, `Recorder.start_swmr`, the objects and attributes written at
close) goes to a copy under a temporary name (``.<name>.<pid>-<hex>.tmp`` beside it), which
is renamed over the run file when it is complete: for `Recorder.start_swmr` once SWMR mode is
on, the handle staying open across the rename. A kill leaves the previous version in place
(and the temporary file, removed by the next recorder writing that name once its pid is
gone). Only when the file system has no room for the copy is the file written in place (as
before: a kill then can leave it flagged, and readers open it read-only through a cleared
superblock, see `bioplaus.record.reader`). Root attributes ``writer_pid`` and ``writer_host``
let a reader tell a live run from a killed one.

Write errors (disk full, quota, I/O error) break the recorder: it stops writing, raises
`bioplaus.errors.OutputError` naming the file and the OS error, and its close only tries to
set the status "failed" with the error. Before each flush it also checks that the file
system has the bytes it is about to write plus ``_SPACE_MARGIN``, so that a disk that fills
up ends the run while the status can still be written. Files are opened without a chunk
cache (``rdcc_nbytes=0``): HDF5 flushes a dataset's cached chunks when the dataset is
closed, and a close that fails that flush (disk full) leaves a dangling dataset that makes
the next file flush or close crash the process (measured with HDF5 2.0 / h5py 3.16); every
write goes to disk at once instead, and fails where it is made.

The layout is described in ``bioplaus/record/schema.md``.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import importlib.metadata
import itertools
import json
import math
import os
import platform
import secrets
import shutil
import socket
import stat
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from bioplaus.errors import OutputError, os_reason
from bioplaus.procs import pid_alive
from bioplaus.record._superblock import OFFSETS as SIGNATURE_OFFSETS
from bioplaus.record._superblock import SIGNATURE as _HDF5_SIGNATURE

FORMAT = "bioplaus.run"
FORMAT_VERSION = 1
STATUSES = ("running", "done", "failed", "interrupted")

# SWMR needs at least the 1.10 file format; a low bound of v110 (instead of "latest" for
# both bounds) keeps files readable by HDF5 1.10+ builds such as older h5py wheels.
LIBVER: tuple[str, str] = ("v110", "latest")

# Rows kept in memory per appendable dataset before they are written.
_MAX_ROWS = 256
_MAX_BYTES = 4 << 20
# Spike events are rows too, thousands per record: an event table counts only bytes, else
# every record would be written at once, each write recompressing the dataset's last
# partial chunk (no chunk cache), which cost 2 ms per population and record.
_MAX_EVENTS = 1 << 30
# Target size of one chunk of an appendable dataset.
_CHUNK_BYTES = 256 << 10
# How long an open waits for another process's HDF5 file lock before opening without it.
_LOCK_WAIT_S = 2.0
# Free bytes a flush leaves on the file system beyond what it writes (room for the status).
_SPACE_MARGIN = 1 << 20
# Free bytes needed to write the final status and error after a write error.
_CLOSE_SPACE = 64 << 10
# What happens when the run file exists: refuse, replace it (run files only), or write
# <stem>-1<suffix>, <stem>-2<suffix>, ... (the first free name).
ON_EXISTS = ("refuse", "overwrite", "number")
# Files whose close failed after a write error: kept referenced so that garbage collection
# does not try (and fail, noisily) to close them again.
_UNCLOSABLE: list[h5py.File] = []
_SCAN_BYTES = 1 << 20


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _is_lock_error(exc: OSError) -> bool:
    return "unable to lock file" in str(exc)


def _open_h5(
    path: Path, mode: str, *, wait_s: float = _LOCK_WAIT_S, **kwargs: Any
) -> tuple[h5py.File, bool]:
    """Open an HDF5 file, waiting up to ``wait_s`` for other processes' locks, then without.

    Returns the file and whether it was opened with locking. A reader left open (a
    notebook, a live ``bioplaus inspect``) holds a shared lock that would otherwise make
    the writer fail to flush or close and lose the run; readers never modify the file, so
    ignoring their lock after a short wait is safe for the data.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return h5py.File(path, mode, **kwargs), True
        except OSError as exc:
            if not _is_lock_error(exc):
                raise
            if time.monotonic() >= deadline:
                return h5py.File(path, mode, locking=False, **kwargs), False
            time.sleep(0.05)


def is_run_file(path: str | Path) -> bool:
    """True if ``path`` looks like a bioplaus run file: an HDF5 signature and the format tag
    in its first MiB. Bytes only, nothing is parsed: a killed run's file that HDF5 refuses to
    open (``h5clear -s``) still counts, and a hostile file cannot do harm."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SCAN_BYTES)
    except OSError:
        return False
    return any(head[o : o + 8] == _HDF5_SIGNATURE for o in SIGNATURE_OFFSETS) and FORMAT.encode() in head


def _tmp_name(target: Path) -> Path:
    """A fresh temporary name beside ``target`` for one of its versions (pid inside)."""
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _remove_stale_versions(target: Path) -> None:
    """Remove temporary versions of ``target`` (`_tmp_name`) left by writers that are gone."""
    with contextlib.suppress(OSError):
        for tmp in target.parent.glob(f".{glob.escape(target.name)}.*-*.tmp"):
            pid = tmp.name[len(target.name) + 2 :].split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    tmp.unlink()


def _candidates(path: Path) -> Iterator[Path]:
    yield path
    for k in itertools.count(1):
        yield path.with_name(f"{path.stem}-{k}{path.suffix}")


def _kind_of_file(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_out_path(path: str | Path, on_exists: str = "refuse") -> Path:
    """The path a new run file will take, or `OutputError` saying why not; creates nothing.

    ``on_exists``: ``"refuse"`` an existing file, ``"overwrite"`` it if it is a bioplaus run
    file (`is_run_file`; any other file is refused), or take the first free ``"number"``ed
    name (``runs/x.h5``, ``runs/x-1.h5``, ...). A directory, a device or a pipe is always
    refused, and so is a directory the process cannot create the file in.
    """
    if on_exists not in ON_EXISTS:
        raise ValueError(f"on_exists must be one of {', '.join(ON_EXISTS)}; got {on_exists!r}")
    path = Path(path)
    if on_exists == "number":
        path = next(p for p in _candidates(path) if not os.path.lexists(p) or p.is_dir())
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name for the run file, e.g. {path / 'run.h5'}")
    if os.path.lexists(path):
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise OutputError(f"{path}: cannot use it as the run file: {os_reason(exc)}") from None
        if not stat.S_ISREG(mode):
            raise OutputError(f"{path}: is {_kind_of_file(mode)}; a run file must be a regular file")
        if on_exists == "refuse":
            raise OutputError(f"{path}: exists; pass --overwrite (record.overwrite = true) to replace it")
        if not is_run_file(path):
            raise OutputError(f"{path}: exists and is not a bioplaus run file; refusing to overwrite it")
    _check_parent(path, "the run file")
    return path


def _check_parent(path: Path, what: str) -> None:
    """`OutputError` unless ``what`` can be created at ``path``: the nearest existing
    ancestor is a writable directory on a writable file system."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: cannot create {what}: {parent} is not a directory")
    try:
        read_only = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        raise OutputError(f"{path}: cannot create {what}: {os.strerror(errno.EROFS)}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot create {what}: {os.strerror(errno.EACCES)} ({parent})")


def check_export_path(
    path: str | Path, overwrite: bool, what: str, *, kind: str | None = None, source: str | Path | None = None
) -> Path:
    """The path an exported file (``what``: "the NIR file", "the NWB file") will take, or
    `OutputError`: an existing file is replaced only with ``overwrite``, and only if it is an
    output of the same ``kind`` ("nir", "nwb"; `is_export_file`): never the ``source`` being
    read (same resolved path or same inode and device), never a run file, never anything else;
    a directory, a device or a pipe, a name the file system refuses, and a place the process
    cannot write, are always refused. Creates nothing."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
        if os.path.islink(path):  # a dangling symlink: writing would create its target
            raise OutputError(f"{path}: is a broken symbolic link; give a file name for {what}") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot use it for {what}: {os_reason(exc)}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{path}: is a directory; give a file name for {what}")
        if source is not None and _same_file(path, st, Path(source)):
            raise OutputError(f"{path}: is the run file being exported; give another name for {what}")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{path}: is {_kind_of_file(st.st_mode)}; {what} must be a regular file")
        if not overwrite:
            raise OutputError(f"{path}: exists; pass --overwrite to replace it")
        if kind is not None and not is_export_file(path, kind):
            other = "nwb" if kind == "nir" else "nir"
            if is_export_file(path, other):
                raise OutputError(f"{path}: is a {other.upper()} file, not a {kind.upper()} file; refusing to overwrite it")
            if is_run_file(path):
                raise OutputError(f"{path}: is a bioplaus run file; --overwrite replaces only {what}, never a run")
            raise OutputError(f"{path}: exists and is not a {kind.upper()} file; refusing to overwrite it")
    _check_parent(path, what)
    return path


def _same_file(path: Path, st: os.stat_result, source: Path) -> bool:
    """True if ``path`` (stat ``st``) and ``source`` are one file: same resolved path, or the
    same inode on the same device (a hard link)."""
    try:
        if path.resolve() == source.resolve():
            return True
        src = os.stat(source)
    except (OSError, RuntimeError):
        return False
    return (st.st_dev, st.st_ino) == (src.st_dev, src.st_ino)


# What marks an exported file, read from its HDF5 root: NWB files carry the root attribute
# ``nwb_version`` (and ``namespace``); ``nir.write`` writes a root dataset ``version`` and a
# group ``node``, nothing else.
_EXPORT_MARKS = {"nwb": b"nwb_version", "nir": b"node"}


def is_export_file(path: str | Path, kind: str) -> bool:
    """True if ``path`` is an exported file of ``kind`` ("nwb", "nir") and not a run file:
    an HDF5 signature and the kind's mark in the first MiB (bytes, as `is_run_file`), then
    confirmed on the opened file's root (no run file's ``format`` attribute). Any error: False."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SCAN_BYTES)
    except OSError:
        return False
    if head[:8] != _HDF5_SIGNATURE or _EXPORT_MARKS[kind] not in head:
        return False
    try:
        with h5py.File(path, "r") as f:
            if "format" in f.attrs:  # a run file's root (an NWB file keeps the run's attributes
                return False  # as its notes, so the bytes alone do not tell them apart)
            if kind == "nwb":
                return "nwb_version" in f.attrs
            return set(f.keys()) == {"version", "node"} and isinstance(f["node"], h5py.Group)
    except Exception:
        return False


def _close_or_keep(f: h5py.File) -> bool:
    """Close ``f``; if that fails (a write error), keep it referenced rather than let garbage
    collection try, and fail, noisily, again. True if it closed."""
    try:
        f.close()
    except Exception:
        _UNCLOSABLE.append(f)
        return False
    return True


def _close_or_raise(f: h5py.File) -> None:
    """Close ``f``; if that fails, keep it referenced (as `_close_or_keep`) and re-raise."""
    try:
        f.close()
    except BaseException:
        _UNCLOSABLE.append(f)
        raise


def _free_bytes(path: Path) -> int | None:
    """Bytes available to this user on the file system of ``path`` (None if unknown)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    if st.f_blocks == 0:  # pseudo and some FUSE file systems report no size at all
        return None
    return st.f_bavail * st.f_frsize


def _version_of(module: str) -> str | None:
    # Prefer an already imported module, and never import one only to read its version:
    # importing torch costs about a second.
    mod = sys.modules.get(module)
    version = getattr(mod, "__version__", None) if mod is not None else None
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return None


def _versions() -> dict[str, str | None]:
    return {
        "python": platform.python_version(),
        "bioplaus": _version_of("bioplaus"),
        "torch": _version_of("torch"),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
    }


def encode_attr(value: Any) -> Any:
    """Turn a Python value into something HDF5 stores as an attribute.

    Scalars (str, int, float, bool, numpy scalars) and numeric numpy arrays are stored as
    they are; dicts, lists, tuples and None become JSON text (the reader decodes them).
    """
    if isinstance(value, np.generic):
        return value
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return value
    if hasattr(value, "detach"):
        return _to_numpy(value)
    return json.dumps(value, default=str)


def _to_numpy(x: Any) -> np.ndarray:
    # Accept torch tensors without importing torch.
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _chunk_rows(row_bytes: int, cap: int = 4096) -> int:
    return int(max(1, min(cap, _CHUNK_BYTES // max(1, row_bytes))))


@dataclass
class _Column:
    """One appendable dataset: [n, *row_shape], resizable along axis 0."""

    path: str
    dtype: np.dtype
    row_shape: tuple[int, ...]
    compress: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)

    def create(self, f: h5py.File) -> None:
        row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        chunks = (_chunk_rows(row_bytes), *self.row_shape)
        opts: dict[str, Any] = {}
        if self.compress:
            opts = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
        ds = f.create_dataset(
            self.path,
            shape=(0, *self.row_shape),
            maxshape=(None, *self.row_shape),
            chunks=chunks,
            dtype=self.dtype,
            **opts,
        )
        for key, value in self.attrs.items():
            ds.attrs[key] = encode_attr(value)


class _Table:
    """Columns appended together (values with their steps), buffered in memory.

    Columns of one table always get the same number of new rows, so a reader that cuts
    every column to the shortest length sees whole rows even mid-write.
    """

    def __init__(
        self,
        columns: dict[str, _Column],
        group: str | None = None,
        group_attrs: Mapping[str, Any] | None = None,
        max_rows: int = _MAX_ROWS,
    ) -> None:
        self.columns = columns
        self.max_rows = max_rows
        self.group = group
        self.group_attrs = dict(group_attrs or {})
        self.pending: dict[str, list[np.ndarray]] = {k: [] for k in columns}
        self.rows = 0
        self.nbytes = 0
        self.written = 0  # rows written to the file so far
        self.created = False  # the datasets exist in the file

    def append(self, **arrays: np.ndarray) -> None:
        n = None
        for key, arr in arrays.items():
            if n is None:
                n = len(arr)
            elif len(arr) != n:  # pragma: no cover - internal invariant
                raise AssertionError(f"column {key}: {len(arr)} rows, expected {n}")
            self.pending[key].append(arr)
            self.nbytes += arr.nbytes
        self.rows += n or 0

    @property
    def full(self) -> bool:
        return self.rows >= self.max_rows or self.nbytes >= _MAX_BYTES

    def write(self, f: h5py.File) -> None:
        """Create the datasets if needed (even with no rows yet) and append pending rows."""
        if not self.created:
            if self.group is not None:
                grp = f.require_group(self.group)
                for key, value in self.group_attrs.items():
                    grp.attrs[key] = encode_attr(value)
            for col in self.columns.values():
                if col.path not in f:
                    col.create(f)
            self.created = True
        if self.rows == 0:
            return
        for key, col in self.columns.items():
            parts = self.pending[key]
            data = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
            ds = f[col.path]
            n = ds.shape[0]
            ds.resize(n + len(data), axis=0)
            ds[n:] = data
            self.pending[key] = []
        self.written += self.rows
        self.rows = 0
        self.nbytes = 0


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not name or name.startswith("/") or name.endswith("/"):
        raise ValueError(f"{kind} name must be a non-empty relative name, got {name!r}")
    if "//" in name:
        raise ValueError(f"{kind} name {name!r} contains an empty path component")
    return name


def _norm_path(path: str) -> str:
    p = "/" + str(path).strip("/")
    return p


class Recorder:
    """Streams one run into an HDF5 run file (see the module docstring for the life cycle).

    ``config`` is stored as JSON in the root attribute ``config``; ``meta`` items become
    further root attributes (non-scalars as JSON). The file is created (parents too) at
    once with status "running"; an existing file is refused unless ``on_exists`` says
    otherwise (see `check_out_path`; ``path`` then holds the name actually written). Use
    as a context manager to get status "failed" (with attribute ``error``) on an exception
    and "interrupted" on Ctrl-C. Problems with the file raise `OutputError`.
    """

    def __init__(
        self,
        path: str | Path,
        config: Mapping[str, Any],
        seed: int,
        meta: Mapping[str, Any] | None = None,
        flush_every_s: float = 30.0,
        on_exists: str = "refuse",
    ) -> None:
        self.path = Path(path)
        self.flush_every_s = float(flush_every_s)
        self._f: h5py.File | None = None
        self._mode = "lazy"  # lazy | swmr | closed
        self._tables: dict[str, _Table] = {}
        self._arrays: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}
        self._attrs: dict[str, dict[str, Any]] = {}
        self._metric_names: set[str] = set()
        self._busy = 0
        self._deferred_close: tuple[str, dict[str, Any]] | None = None
        self._last_flush = time.monotonic()
        self._lock_wait_s = _LOCK_WAIT_S
        self._closing = False
        self._broken: OutputError | None = None
        self._no_space = False  # the file system is full (or over quota)
        self._status_loc: tuple[int, int, int] | None = None  # offset, st_dev, st_ino of /status
        self._ident: tuple[int, int] | None = None  # st_dev, st_ino of the file this recorder placed
        self._declared: set[str] = set()  # metric tables created before any value

        root: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "versions": _versions(),
            "seed": int(seed),
            "config": json.dumps(dict(config), default=str),
            "created": _now(),
            "status": "running",
            "writer_pid": os.getpid(),
            "writer_host": socket.gethostname(),
        }
        for key, value in (meta or {}).items():
            if key in root:
                raise ValueError(f"meta key {key!r} clashes with a reserved root attribute")
            root[key] = value
        self.path = self._create(self.path, root, on_exists)

    def _create(self, target: Path, root: Mapping[str, Any], on_exists: str) -> Path:
        """Write the first version under a temporary name, then move it to ``target``."""
        target = check_out_path(target, on_exists)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{target}: cannot create its directory: {os_reason(exc)}") from None
        _remove_stale_versions(target)
        tmp = _tmp_name(target)
        try:
            try:
                with h5py.File(tmp, "x", libver=LIBVER, rdcc_nbytes=0) as f:
                    for key, value in root.items():
                        f.attrs[key] = encode_attr(value)
                    # Fixed-size so that it can be rewritten in place while SWMR forbids attributes.
                    ds = f.create_dataset("status", data=np.bytes_(b"running"), dtype="S16")
                    offset = ds.id.get_offset()
            except (OSError, RuntimeError) as exc:
                raise OutputError(f"{target}: cannot create the run file: {os_reason(exc)}") from None
            placed = self._place(tmp, target, on_exists)
            if offset is not None:
                self._status_loc = (int(offset), 0, 0)
            self._placed(placed)
            return placed
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def _placed(self, path: Path) -> None:
        """Remember which file is the run file now (device, inode), for `_replace` and `_poke_status`."""
        try:
            st = os.stat(path)
        except OSError:
            return
        self._ident = (st.st_dev, st.st_ino)
        if self._status_loc is not None:  # a byte copy keeps /status at the same offset
            self._status_loc = (self._status_loc[0], st.st_dev, st.st_ino)

    def _copy_fits(self, nbytes: int) -> bool:
        """Whether the file system has room for a copy of the run file plus ``nbytes`` and the margin."""
        free = _free_bytes(self.path.parent)
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return True  # the copy itself says what is wrong
        return free is None or free >= size + nbytes + _SPACE_MARGIN

    @contextlib.contextmanager
    def _next_version(self, *, keep_open: bool = False) -> Iterator[h5py.File]:
        """The run file opened for writing outside SWMR, as a copy under a temporary name that
        replaces the run file when the block ends (closed first unless ``keep_open``: then the
        caller switches it to SWMR inside the block and keeps the handle). On any error, or a
        kill, the run file stays as it was."""
        tmp = _tmp_name(self.path)
        try:
            shutil.copyfile(self.path, tmp)
            f = h5py.File(tmp, "a", libver=LIBVER, rdcc_nbytes=0)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        try:
            yield f
            if not keep_open:
                _close_or_raise(f)
            self._replace(tmp)
        except BaseException:
            if f.id.valid:
                _close_or_keep(f)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def _replace(self, tmp: Path) -> None:
        """Rename the finished version ``tmp`` over the run file, if that is still the file
        this recorder placed (else `OutputError`: it was moved or replaced meanwhile)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or (self._ident is not None and (st.st_dev, st.st_ino) != self._ident):
            raise OutputError(f"{self.path}: was removed or replaced while the run wrote it; not writing over it")
        os.replace(tmp, self.path)
        self._placed(self.path)

    @staticmethod
    def _place(tmp: Path, target: Path, on_exists: str) -> Path:
        """Rename ``tmp`` to ``target``; without "overwrite", never onto an existing file."""
        names = _candidates(target) if on_exists == "number" else iter([target])
        for name in names:
            try:
                if on_exists == "overwrite":
                    os.replace(tmp, name)
                    return name
                try:
                    os.link(tmp, name)  # atomic: fails if the name was taken meanwhile
                    return name
                except FileExistsError:
                    if on_exists == "number":
                        continue
                    raise OutputError(
                        f"{name}: exists; pass --overwrite (record.overwrite = true) to replace it"
                    ) from None
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS):
                        raise
                    # No hard links on this file system: check, then rename (a small race).
                    if os.path.lexists(name):
                        if on_exists == "number":
                            continue
                        raise OutputError(
                            f"{name}: exists; pass --overwrite (record.overwrite = true) to replace it"
                        ) from None
                    os.replace(tmp, name)
                    return name
            except OSError as exc:
                raise OutputError(f"{name}: cannot create the run file: {os_reason(exc)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ state

    @property
    def swmr(self) -> bool:
        """True while the file is open in SWMR mode."""
        return self._mode == "swmr"

    @property
    def closed(self) -> bool:
        """True after `close`."""
        return self._mode == "closed"

    @property
    def broken(self) -> OutputError | None:
        """The error that stopped writing (disk full, I/O error), or None."""
        return self._broken

    def _check_open(self) -> None:
        if self._mode == "closed":
            raise RuntimeError(f"Recorder for {self.path} is closed")
        if self._broken is not None:
            raise self._broken

    @contextlib.contextmanager
    def _io(self) -> Iterator[None]:
        """Around every HDF5 write: an OS error breaks the recorder (see the module docstring)."""
        if self._broken is not None:
            raise self._broken
        try:
            yield
        except OutputError as exc:
            self._broken = exc
            self._no_space = "disk full" in str(exc) or "quota" in str(exc)
            raise
        except (OSError, RuntimeError) as exc:
            self._no_space = os_reason(exc).startswith(("disk full", "disk quota"))
            self._broken = OutputError(
                f"{self.path}: cannot write the run file: {os_reason(exc)}; it holds what was "
                "written up to the last flush"
            )
            raise self._broken from None

    def _pending_bytes(self) -> int:
        return sum(t.nbytes for t in self._tables.values()) + sum(a.nbytes for a, _ in self._arrays.values())

    def _check_space(self, nbytes: int) -> None:
        """`OutputError` (disk full) unless ``nbytes`` plus the margin fit on the file system."""
        free = _free_bytes(self.path.parent)
        if free is not None and free < nbytes + _SPACE_MARGIN:
            raise OutputError(
                f"{self.path}: disk full: {free / 1024:.0f} kB free, a flush needs {nbytes / 1024:.0f} kB "
                f"+ {_SPACE_MARGIN >> 10} kB to spare; the file holds what was written up to the last flush"
            )

    @contextlib.contextmanager
    def _op(self) -> Iterator[None]:
        # A signal handler calling close() in the middle of an HDF5 write would re-enter
        # the library; close() then only records the request and it runs here, afterwards.
        self._check_open()
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            if self._busy == 0:
                if self._deferred_close is not None:
                    status, attrs = self._deferred_close
                    self._deferred_close = None
                    self.close(status, **attrs)
                elif time.monotonic() - self._last_flush >= self.flush_every_s:
                    self._flush_now()

    def _writable(self, table: _Table) -> bool:
        return self._mode == "swmr" and table.created

    def _after_append(self, table: _Table) -> None:
        if not table.full:
            return
        if self._writable(table):
            assert self._f is not None
            with self._io():
                self._check_space(table.nbytes)
                table.write(self._f)
        elif self._mode == "lazy":
            self._flush_lazy()
        # New names during SWMR stay in memory until close: HDF5 cannot create them now.

    # ------------------------------------------------------------------ logging

    def _metric_table(self, name: str) -> _Table:
        table = self._tables.get(f"metrics/{name}")
        if table is None:
            _check_name("metric", name)
            if (name.endswith("_step") and name[:-5] in self._metric_names) or (
                f"{name}_step" in self._metric_names
            ):
                raise ValueError(f"metric {name!r} collides with the step dataset of another metric")
            self._metric_names.add(name)
            table = _Table(
                {
                    "value": _Column(f"metrics/{name}", np.dtype("f8"), ()),
                    "step": _Column(f"metrics/{name}_step", np.dtype("i8"), ()),
                }
            )
            self._tables[f"metrics/{name}"] = table
        return table

    def declare_metrics(self, *names: str) -> None:
        """Create ``/metrics/<name>`` (empty) at the next flush, before any value is logged.

        A metric that exists when `start_swmr` is called is streamed under SWMR; one first
        logged later is kept in memory until close. Declared metrics that never got a value
        are removed when the recorder closes.
        """
        with self._op():
            for name in names:
                if f"metrics/{name}" not in self._tables:
                    self._metric_table(name)
                    self._declared.add(name)

    def log_metrics(self, step: int, **values: float) -> None:
        """Append scalars to ``/metrics/<name>`` (float64) and ``/metrics/<name>_step`` (int64).

        Names may contain "/" (``layer0/loss`` -> group ``/metrics/layer0``). A name must not
        collide with another metric's ``_step`` companion.
        """
        with self._op():
            step = int(step)
            for name, value in values.items():
                table = self._metric_table(name)
                try:
                    v = float(value.item() if hasattr(value, "item") else value)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"metric {name!r}: expected a number, got {value!r}") from exc
                table.append(value=np.array([v], dtype="f8"), step=np.array([step], dtype="i8"))
                self._after_append(table)

    def log_trace(
        self,
        name: str,
        step: int,
        array: Any,
        *,
        unit: str,
        dt: float | None,
        every: int,
        dims: str | list[str] | tuple[str, ...],
    ) -> None:
        """Append one record [*shape] to ``/traces/<name>`` (float32, [n_records, *shape]).

        ``dims`` names the axes, e.g. "record,time,sample,neuron"; a list is joined with ",",
        and a leading "record" is added when only the axes of ``array`` are named. ``dt`` is
        the time bin in seconds (None for traces without a time axis), ``every`` the number
        of training steps between records.
        """
        with self._op():
            _check_name("trace", name)
            arr = _to_numpy(array).astype(np.float32, copy=False)
            dim_list = [d.strip() for d in (dims.split(",") if isinstance(dims, str) else dims)]
            if len(dim_list) == arr.ndim:
                dim_list = ["record", *dim_list]
            if len(dim_list) != arr.ndim + 1:
                raise ValueError(
                    f"trace {name!r}: dims {','.join(dim_list)!r} do not match an array of "
                    f"shape {arr.shape} (expected {arr.ndim + 1} names starting with 'record')"
                )
            key = f"traces/{name}"
            table = self._tables.get(key)
            if table is None:
                attrs: dict[str, Any] = {
                    "unit": str(unit),
                    "every": int(every),
                    "dims": ",".join(dim_list),
                }
                if dt is not None:
                    attrs["dt"] = float(dt)
                table = _Table(
                    {
                        "value": _Column(key, np.dtype("f4"), arr.shape, True, attrs),
                        "step": _Column(f"{key}_step", np.dtype("i8"), ()),
                    }
                )
                self._tables[key] = table
            elif table.columns["value"].row_shape != arr.shape:
                raise ValueError(
                    f"trace {name!r}: record shape {arr.shape} differs from the first record's "
                    f"{table.columns['value'].row_shape}"
                )
            table.append(value=arr[None].copy(), step=np.array([int(step)], dtype="i8"))
            self._after_append(table)

    def log_spikes(
        self,
        population: str,
        step: int,
        spikes: Any,
        *,
        dt: float,
        sample_offset: int = 0,
    ) -> int:
        """Append the spikes of a [T, S, N] 0/1 array as events to ``/spikes/<population>``.

        Each nonzero entry (t, s, n) becomes one event: ``step`` (training step), ``t``
        (time bin; time = t * dt), ``neuron`` = n, ``sample`` = sample_offset + s. Trailing
        neuron axes (e.g. [T, S, C, H, W]) are flattened in C order. One row per call goes to
        ``record_step``, ``record_sample_offset``, ``record_n_samples`` so that records
        without any spike are still known. Returns the number of events.
        """
        with self._op():
            _check_name("population", population)
            if "/" in population:
                raise ValueError(f"population name {population!r} must not contain '/'")
            arr = _to_numpy(spikes)
            if arr.ndim < 3:
                raise ValueError(
                    f"spikes of {population!r}: expected [T, S, N], got shape {arr.shape}"
                )
            n_time, n_samples = arr.shape[:2]
            neuron_shape = arr.shape[2:]
            arr = arr.reshape(n_time, n_samples, -1)
            n_neurons = arr.shape[2]
            t, s, n = np.nonzero(arr)
            key = f"spikes/{population}"
            table = self._tables.get(key)
            if table is None:
                table = _Table(
                    {
                        "step": _Column(f"{key}/step", np.dtype("i8"), (), True),
                        "t": _Column(f"{key}/t", np.dtype("i4"), (), True),
                        "neuron": _Column(f"{key}/neuron", np.dtype("u4"), (), True),
                        "sample": _Column(f"{key}/sample", np.dtype("u4"), (), True),
                    },
                    group=key,
                    group_attrs={
                        "n_neurons": int(n_neurons),
                        "neuron_shape": np.array(neuron_shape, dtype="i8"),
                        "dt": float(dt),
                        "n_time": int(n_time),
                    },
                    max_rows=_MAX_EVENTS,
                )
                self._tables[key] = table
                self._tables[f"{key}#records"] = _Table(
                    {
                        "step": _Column(f"{key}/record_step", np.dtype("i8"), ()),
                        "offset": _Column(f"{key}/record_sample_offset", np.dtype("u4"), ()),
                        "n": _Column(f"{key}/record_n_samples", np.dtype("u4"), ()),
                    }
                )
            else:
                ga = table.group_attrs
                if (ga["n_neurons"], ga["n_time"]) != (n_neurons, n_time) or not math.isclose(
                    ga["dt"], float(dt)
                ):
                    raise ValueError(
                        f"spikes of {population!r}: T={n_time}, N={n_neurons}, dt={dt} differ "
                        f"from the first record (T={ga['n_time']}, N={ga['n_neurons']}, "
                        f"dt={ga['dt']})"
                    )
            count = len(t)
            table.append(
                step=np.full(count, int(step), dtype="i8"),
                t=t.astype("i4"),
                neuron=n.astype("u4"),
                sample=(s + int(sample_offset)).astype("u4"),
            )
            records = self._tables[f"{key}#records"]
            records.append(
                step=np.array([int(step)], dtype="i8"),
                offset=np.array([int(sample_offset)], dtype="u4"),
                n=np.array([n_samples], dtype="u4"),
            )
            self._after_append(records)
            self._after_append(table)
            return count

    def log_weights(self, layer: str, step: int, W: Any) -> None:
        """Append a float32 snapshot to ``/weights/<layer>`` [S, *W.shape] with its step."""
        with self._op():
            _check_name("layer", layer)
            arr = _to_numpy(W).astype(np.float32, copy=False)
            key = f"weights/{layer}"
            table = self._tables.get(key)
            if table is None:
                table = _Table(
                    {
                        "value": _Column(key, np.dtype("f4"), arr.shape, True),
                        "step": _Column(f"{key}_step", np.dtype("i8"), ()),
                    }
                )
                self._tables[key] = table
            elif table.columns["value"].row_shape != arr.shape:
                raise ValueError(
                    f"weights of {layer!r}: shape {arr.shape} differs from the first "
                    f"snapshot's {table.columns['value'].row_shape}"
                )
            table.append(value=arr[None].copy(), step=np.array([int(step)], dtype="i8"))
            self._after_append(table)

    def log_array(self, path: str, array: Any, **attrs: Any) -> None:
        """Write or overwrite a fixed dataset at ``path`` (e.g. a kind's result matrix).

        ``bytes`` are stored as uint8, ``str`` as a scalar string. During SWMR an existing
        dataset of the same shape and dtype is overwritten in place at once; anything else
        (and every attribute) is written at close.
        """
        with self._op():
            p = _norm_path(path)
            if p == "/":
                raise ValueError("log_array needs a dataset path, got '/'")
            if isinstance(array, bytes | bytearray):
                arr = np.frombuffer(bytes(array), dtype=np.uint8)
            elif isinstance(array, str):
                arr = np.array(array, dtype=h5py.string_dtype())
            else:
                arr = _to_numpy(array)
                if arr.dtype.kind == "U":
                    arr = arr.astype(h5py.string_dtype())
            enc = dict(attrs)
            if self._mode == "swmr":
                assert self._f is not None
                ds = self._f.get(p)
                if (
                    isinstance(ds, h5py.Dataset)
                    and ds.shape == arr.shape
                    and ds.dtype == arr.dtype
                    and p not in self._arrays
                ):
                    with self._io():
                        ds[...] = arr
                    if enc:
                        self._attrs.setdefault(p, {}).update(enc)
                    return
            # Attributes of an earlier in-place write must not override these at close.
            for key in enc:
                self._attrs.get(p, {}).pop(key, None)
            self._arrays[p] = (arr.copy(), enc)

    def set_attrs(self, path: str, **attrs: Any) -> None:
        """Set attributes on the object at ``path`` ("/" = root).

        Written at the next flush in the lazy phase and at close in SWMR mode (HDF5 forbids
        attribute writes under SWMR). A path that does not exist then becomes a group.
        """
        with self._op():
            self._attrs.setdefault(_norm_path(path), {}).update(attrs)

    # ------------------------------------------------------------------ writing

    def _write_all(self, f: h5py.File) -> None:
        for table in self._tables.values():
            table.write(f)
        for p, (arr, attrs) in self._arrays.items():
            ds = f.get(p)
            if isinstance(ds, h5py.Dataset) and ds.shape == arr.shape and ds.dtype == arr.dtype:
                ds[...] = arr
            else:
                if p in f:
                    del f[p]
                ds = f.create_dataset(p, data=arr)
            for key, value in attrs.items():
                ds.attrs[key] = encode_attr(value)
        self._arrays.clear()
        for p, attrs in self._attrs.items():
            obj = f.get(p)
            if obj is None:
                obj = f.create_group(p)
            for key, value in attrs.items():
                obj.attrs[key] = encode_attr(value)
        self._attrs.clear()

    def _open(self, mode: str) -> h5py.File:
        try:
            f, locked = _open_h5(self.path, mode, wait_s=self._lock_wait_s, libver=LIBVER, rdcc_nbytes=0)
        except OSError as exc:
            hint = ""
            if "already open for read-only" in str(exc):
                hint = " (a RunFile in this process has it open: close readers first)"
            raise OutputError(f"{self.path}: cannot write the run file{hint}: {os_reason(exc)}") from exc
        if not locked:
            # A reader keeps the file open; do not wait for it again at every flush.
            self._lock_wait_s = 0.0
        return f

    @contextlib.contextmanager
    def _opened(self, mode: str) -> Iterator[h5py.File]:
        """The file, closed afterwards; one whose close fails is kept in `_UNCLOSABLE`."""
        f = self._open(mode)
        try:
            yield f
        except BaseException:
            _close_or_keep(f)
            raise
        _close_or_raise(f)

    def _version(self, nbytes: int) -> contextlib.AbstractContextManager[h5py.File]:
        """Where a write outside SWMR of ``nbytes`` goes: a copy that replaces the file
        (`_next_version`), or the file itself when there is no room for the copy."""
        return self._next_version() if self._copy_fits(nbytes) else self._opened("a")

    def _flush_lazy(self) -> None:
        if not self._arrays and not self._attrs and all(t.created and not t.rows for t in self._tables.values()):
            return  # nothing to write: no new version of the file (each costs a copy of it)
        with self._io():
            nbytes = self._pending_bytes()
            self._check_space(nbytes)
            with self._version(nbytes) as f:
                self._write_all(f)
        self._last_flush = time.monotonic()

    def flush(self) -> None:
        """Write buffered rows and make them durable (and visible to SWMR readers)."""
        with self._op():
            self._flush_now()

    def _flush_now(self) -> None:
        if self._mode == "lazy":
            self._flush_lazy()
            return
        assert self._f is not None
        with self._io():
            self._check_space(sum(t.nbytes for t in self._tables.values() if t.created))
            for table in self._tables.values():
                if table.created:
                    table.write(self._f)
            self._f.flush()
        self._last_flush = time.monotonic()

    def start_swmr(self) -> None:
        """Write everything logged so far and switch the file to SWMR mode.

        Call after the first training step, when every metric, trace and population has
        been logged once: later new names are kept in memory until `close`.
        """
        with self._op():
            if self._mode == "swmr":
                return
            with self._io():
                nbytes = self._pending_bytes()
                self._check_space(nbytes)
                if self._copy_fits(nbytes):
                    # SWMR on before the rename: the run file is never flagged open outside SWMR.
                    with self._next_version(keep_open=True) as f:
                        self._write_all(f)
                        f.swmr_mode = True
                else:
                    f = self._open("a")
                    try:
                        self._write_all(f)
                        f.swmr_mode = True
                    except BaseException:
                        _close_or_keep(f)
                        raise
            self._f = f
            self._mode = "swmr"
            self._last_flush = time.monotonic()

    def close(self, status: str = "done", **final_attrs: Any) -> None:
        """Flush everything, set root attributes ``status``/``finished`` (and ``final_attrs``).

        Idempotent: a second call does nothing. ``status`` is one of running, done, failed,
        interrupted.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
        if self._mode == "closed" or self._closing:
            return
        if self._busy:
            self._deferred_close = (status, final_attrs)
            return
        self._closing = True
        if self._broken is not None:
            self._close_broken(status, final_attrs)
            return
        try:
            with self._io():
                if self._mode == "swmr":
                    assert self._f is not None
                    f, self._f = self._f, None
                    try:
                        for table in self._tables.values():
                            if table.created:
                                table.write(f)
                        copy = self._copy_fits(self._pending_bytes())
                        if not copy:
                            # Written in place below: if that fails, the file still tells how
                            # the run ended. (With a copy, a kill before the rename leaves the
                            # status running: the run did not finish.)
                            f["status"][()] = np.bytes_(status.encode())
                        f.flush()
                    except BaseException:
                        self._f = f  # closed (or given up) by _close_broken
                        raise
                    _close_or_raise(f)
                else:
                    copy = self._copy_fits(self._pending_bytes())
                self._mode = "closed"
                with self._next_version() if copy else self._opened("a") as f:
                    self._write_all(f)
                    self._drop_unused_metrics(f)
                    for key, value in final_attrs.items():
                        f.attrs[key] = encode_attr(value)
                    f.attrs["status"] = status
                    f.attrs["finished"] = _now()
                    f["status"][()] = np.bytes_(status.encode())
        except OutputError:
            self._close_broken(status, final_attrs)
            raise

    def _drop_unused_metrics(self, f: h5py.File) -> None:
        """Remove declared metrics that never got a value (their empty datasets)."""
        for name in self._declared:
            table = self._tables.get(f"metrics/{name}")
            if table is not None and table.written == 0 and table.rows == 0:
                for p in (f"metrics/{name}", f"metrics/{name}_step"):
                    if p in f:
                        del f[p]

    def _close_broken(self, status: str, final_attrs: Mapping[str, Any]) -> None:
        """After a write error: try to set the status "failed" and the error, else leave the
        file as last flushed. Buffered rows are dropped; HDF5 errors are not raised again."""
        assert self._broken is not None
        requested = status
        if status in ("done", "running"):
            status = "failed"
        attrs = dict(final_attrs)
        if status == "failed" and (requested != "failed" or "error" not in attrs):
            attrs["error"] = str(self._broken)
        self._tables.clear()
        self._arrays.clear()
        self._attrs.clear()
        self._mode = "closed"
        f, self._f = self._f, None
        written = False
        if f is not None:  # SWMR: the status dataset is rewritten in place, no new space
            with contextlib.suppress(Exception):
                f["status"][()] = np.bytes_(status.encode())
                f.flush()
                written = True
            written = _close_or_keep(f) and written
        # Attributes need new space: on a full disk, opening the file outside SWMR to write
        # them would fail to close and leave it flagged as open (unreadable until h5clear);
        # the status dataset written in place above is then all the file gets.
        free = _free_bytes(self.path.parent)
        g = None
        if (free is None and not self._no_space) or (free is not None and free >= _CLOSE_SPACE):
            with contextlib.suppress(Exception):
                g, _ = _open_h5(self.path, "a", wait_s=0.0, libver=LIBVER, rdcc_nbytes=0)
        if g is not None:
            ok = False
            with contextlib.suppress(Exception):
                for key, value in attrs.items():
                    g.attrs[key] = encode_attr(value)
                g.attrs["status"] = status
                g.attrs["finished"] = _now()
                g["status"][()] = np.bytes_(status.encode())
                ok = True
            written = (_close_or_keep(g) and ok) or written
        if not written:
            self._poke_status(status)
        if requested == "done":
            raise self._broken

    def _poke_status(self, status: str) -> None:
        """Write ``status`` straight into the bytes of the ``/status`` dataset, bypassing HDF5.

        Its storage is contiguous, fixed (16 bytes) and allocated when the file was created,
        so this needs no new space on a full disk; HDF5 never moves it. Only done if the
        file at the path is still the one this recorder created.
        """
        if self._status_loc is None:
            return
        offset, dev, ino = self._status_loc
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == (dev, ino):
                os.pwrite(fd, status.encode().ljust(16, b"\0"), offset)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close("done")
        elif isinstance(exc, KeyboardInterrupt | SystemExit):
            self.close("interrupted")
        else:
            self.close("failed", error=str(exc), error_type=type(exc).__name__)
