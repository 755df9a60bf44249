"""Read-only access to run files, also while a `Recorder` is still writing them (SWMR).

`open_run` opens a file in SWMR-read mode when it can (a file being written, or killed
while being written, opens only this way) and falls back to a plain read-only open for
files written without SWMR support. In SWMR mode every dataset is refreshed before it is
read, so repeated calls see the rows appended since. A file whose writer died while it had
the file open outside SWMR mode (HDF5 then refuses every open) is read through a view with
the superblock's status flags cleared (`bioplaus.record._superblock`); the file itself is
never changed. A file shorter than the end of file its superblock stores is refused as
truncated before HDF5 opens it (an SWMR-read open of it would retry forever).
`RunFile.note` says, in one line, when a file was not closed by its writer.

Run files are untrusted input. Opening one validates its layout against
``bioplaus/record/schema.md`` before anything is read: links other than hard links,
external storage, virtual datasets, declared sizes that the stored bytes cannot back,
deep JSON, malformed metrics, traces, weights and spike groups all raise
`bioplaus.errors.RunFileError` (one line naming the file and the object). Checks that need
the data itself (spike indices against the declared sizes, the size of a dense spike
array) run when that data is read.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from bioplaus.errors import RunFileError, RunFileNotFound, os_reason
from bioplaus.metrics import Metric, headline
from bioplaus.procs import pid_alive
from bioplaus.record import _untrusted as u
from bioplaus.record._superblock import (
    WRITE_ACCESS,
    ClearedFlags,
    Superblock,
    looping_global_heap,
    read_superblock,
)
from bioplaus.record.writer import FORMAT, FORMAT_VERSION, STATUSES

_LOCK_WAIT_S = 2.0
SUPPORTED_VERSIONS = (FORMAT_VERSION,)
# Largest read of one dataset at once (a sparse or bomb-like dataset is refused earlier,
# at open, by comparing its declared size with the bytes it stores).
MAX_READ_BYTES = 2 << 30
# Largest dense spike array `SpikeEvents.to_dense` builds (bool, one byte per entry).
MAX_DENSE_BYTES = 1 << 30
# Most ``neo.SpikeTrain`` objects `SpikeEvents.to_neo` builds (each is a Python object).
MAX_NEO_TRAINS = 1_000_000
# Index ranges of the event columns (t int32, neuron uint32): larger declared sizes lie.
# Statuses of a run that did not close normally (killed, or stopped by a write error): a
# dataset may be a flush ahead of its companions; the reader cuts them to a common length.
_UNFINISHED = ("running", "failed")
_MAX_NEURONS = 1 << 32
_MAX_TIME = 1 << 31
_SPIKE_COLUMNS = ("step", "t", "neuron", "sample")
_RECORD_COLUMNS = ("record_step", "record_sample_offset", "record_n_samples")
# Attributes of traces that readers (figures) use as numbers or text.
_TRACE_ATTRS = {"dt": "positive", "threshold": "finite", "every": "int", "unit": "text", "dims": "text"}


def _not_regular(path: Path) -> str:
    """'' for a regular file (or a link to one); else what it is (a FIFO would block an open)."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return ""
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a regular file"


def _writer_gone(attrs: Any) -> bool:
    """Whether the root attributes name a writer on this host (``writer_pid``,
    ``writer_host``) that is no longer alive; False when they do not say."""
    try:
        pid, host = _scalar(attrs.get("writer_pid")), u.as_text(attrs.get("writer_host"))
    except Exception:  # noqa: BLE001 - unreadable attributes say nothing about the writer
        return False
    return _is_int(pid) and host == socket.gethostname() and not pid_alive(pid)


def _scalar(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    return value.item() if isinstance(value, np.generic) else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(eq=False)
class SpikeEvents:
    """Spike events of one population: parallel arrays, one entry per spike.

    The time of an event is ``t * dt`` seconds; ``sample`` is the index of the sample
    within the records of that training ``step``. ``record_*`` list every recorded call
    (also calls without any spike). ``source`` names where they were read from.
    """

    step: np.ndarray
    t: np.ndarray
    neuron: np.ndarray
    sample: np.ndarray
    n_neurons: int
    dt: float
    n_time: int | None = None
    record_step: np.ndarray | None = None
    record_sample_offset: np.ndarray | None = None
    record_n_samples: np.ndarray | None = None
    source: str = "spike events"

    @property
    def count(self) -> int:
        """Number of events."""
        return int(len(self.t))

    @property
    def times(self) -> np.ndarray:
        """Event times in seconds (t * dt)."""
        return self.t.astype(np.float64) * self.dt

    @property
    def steps(self) -> np.ndarray:
        """The distinct training steps that have a record, ascending."""
        if self.record_step is not None and len(self.record_step):
            return np.unique(self.record_step)
        return np.unique(self.step)

    def _step_events(self, step: int | None) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, int, int]:
        """(step, t, sample, neuron, T, S) of one record step (default: the last)."""
        steps = self.steps
        if len(steps) == 0:
            raise ValueError("no spike records")
        if step is None:
            step = int(steps[-1])
        elif step not in steps:
            raise KeyError(f"no spike record at step {step}; recorded steps: {steps.tolist()}")
        mask = self.step == step
        t = self.t[mask].astype(np.int64)
        s = self.sample[mask].astype(np.int64)
        n = self.neuron[mask].astype(np.int64)
        n_time = self.n_time if self.n_time is not None else int(t.max(initial=-1)) + 1
        n_samples = int(s.max(initial=-1)) + 1
        if self.record_step is not None and self.record_n_samples is not None:
            rmask = self.record_step == step
            offsets = self.record_sample_offset
            ends = self.record_n_samples[rmask].astype(np.int64)
            if offsets is not None:
                ends = ends + offsets[rmask].astype(np.int64)
            n_samples = max(n_samples, int(ends.max(initial=0)))
        return int(step), t, s, n, int(n_time), int(n_samples)

    def to_dense(self, step: int | None = None) -> np.ndarray:
        """Spikes of one record step (default: the last) as a bool array [T, S, N].

        T is the ``n_time`` attribute; S covers every sample recorded at that step. An
        array larger than ``MAX_DENSE_BYTES`` raises `RunFileError` instead of allocating.
        """
        step, t, s, n, n_time, n_samples = self._step_events(step)
        size = int(n_time) * int(n_samples) * int(self.n_neurons)
        if size > MAX_DENSE_BYTES:
            raise RunFileError(
                f"{self.source}: step {step}: a dense [T, S, N] = [{n_time}, {n_samples}, "
                f"{self.n_neurons}] array needs {u.size_text(size)}, more than the "
                f"{u.size_text(MAX_DENSE_BYTES)} cap (reader.MAX_DENSE_BYTES)"
            )
        out = np.zeros((n_time, n_samples, self.n_neurons), dtype=bool)
        out[t, s, n] = True
        return out

    def to_neo(self, step: int | None = None) -> list[Any]:
        """Spikes of one record step (default: the last) as ``neo.SpikeTrain``s, for Elephant.

        One train per sample and neuron, sample-major (train ``s * N + n``), each annotated
        with ``step``, ``sample`` and ``neuron``: spike times ``t * dt`` in seconds (the
        step at which the neuron fired, times the time step), ``t_start = 0``,
        ``t_stop = T * dt``. Needs the optional ``neo`` package (extra ``analysis``); more
        than ``MAX_NEO_TRAINS`` trains raise `RunFileError` instead of allocating.
        """
        try:
            import neo
            import quantities as pq
        except ImportError as exc:
            raise ImportError(f"SpikeEvents.to_neo needs neo: pip install 'bioplaus[analysis]' ({exc})") from None
        step, t, s, n, n_time, n_samples = self._step_events(step)
        n_trains = n_samples * int(self.n_neurons)
        if n_trains > MAX_NEO_TRAINS:
            raise RunFileError(
                f"{self.source}: step {step}: {n_samples} samples x {self.n_neurons} neurons = "
                f"{n_trains} spike trains, more than the {MAX_NEO_TRAINS} cap (reader.MAX_NEO_TRAINS)"
            )
        if not math.isfinite(self.dt * max(n_time, 1)):
            raise RunFileError(f"{self.source}: attribute dt={self.dt!r}: T * dt is not finite")
        order = np.lexsort((t, n, s))  # by sample, then neuron, then time
        key = s[order] * int(self.n_neurons) + n[order]
        times = t[order].astype(np.float64) * self.dt
        bounds = np.searchsorted(key, np.arange(n_trains + 1))
        t_stop = n_time * self.dt
        trains = []
        for k in range(n_trains):
            trains.append(neo.SpikeTrain(
                times[bounds[k]:bounds[k + 1]], units=pq.s, t_start=0.0 * pq.s, t_stop=t_stop * pq.s,
                step=step, sample=k // int(self.n_neurons), neuron=k % int(self.n_neurons)))
        return trains


@dataclass
class Outcome:
    """What a finished (or broken) run says about itself: `RunFile.outcome`.

    ``finals`` are the ``final_<metric>`` root attributes that are numbers (names without
    the prefix); ``declared`` the metric declarations stored in the file (for a file written
    before they were stored, those the caller's ``declare`` gives); ``headline`` the declared
    headline, ``headline_value`` its final value (None if the run did not reach it).
    """

    path: Path
    name: str
    status: str
    kind: str | None  # the root attribute the run driver writes
    seed: int | None
    config: dict[str, Any]
    error: str | None
    steps: int | None
    seconds: float | None
    finals: dict[str, float] = field(default_factory=dict)
    declared: list[Metric] = field(default_factory=list)

    @property
    def headline(self) -> Metric | None:
        return headline(self.declared)

    @property
    def headline_value(self) -> float | None:
        h = self.headline
        return None if h is None else self.finals.get(h.name)


def stored_metrics(raw: Any) -> list[Metric] | None:
    """The ``declared_metrics`` root attribute as `Metric` s; None if it is absent.

    Malformed declarations give [] (the figures and summaries then work without them).
    """
    if raw is None:
        return None
    try:
        items = u.load_json(raw, "declared_metrics", ValueError, strict=True) if isinstance(raw, str) else raw
        return [Metric.from_json(d) for d in items if isinstance(d, dict) and isinstance(d.get("name"), str)]
    except (ValueError, TypeError, RecursionError):
        return []


class RunFile:
    """A run file opened for reading; see ``bioplaus/record/schema.md`` for the layout.

    Opening validates the file (see the module docstring); every problem with the file
    raises `RunFileError`. Asking for a name the file does not hold raises KeyError.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            exists = self.path.exists()
        except OSError as e:  # a name too long for the file system, a loop of links, ...
            shown = str(path) if len(str(path)) <= 80 else str(path)[:77] + "..."
            raise RunFileError(f"cannot open run file {shown}: {os_reason(e)}") from None
        if not exists:
            raise RunFileNotFound(f"run file not found: {self.path}")
        not_regular = _not_regular(self.path)
        if not_regular:
            raise RunFileError(f"{self.path}: not a regular file ({not_regular}); not opened")
        self._view: ClearedFlags | None = None
        self._cleared: str | None = None  # how the file was flagged when read through the view
        self._f, self._swmr = self._open(self.path)
        try:
            self._validate()
        except (KeyError, OSError, ValueError, RuntimeError) as exc:
            self.close()
            if isinstance(exc, RunFileError):
                raise
            # HDF5 failing on the file's own metadata (a checksum, a missing object): a file
            # damaged by a kill outside SWMR mode or by hand
            reason = str(exc).strip("'\"").splitlines()[0] if str(exc) else type(exc).__name__
            raise RunFileError(f"cannot read run file {self.path} (damaged HDF5 file): {reason}") from None
        except BaseException:
            self.close()
            raise

    def _open_cleared(self, path: Path, sb: Superblock) -> h5py.File | None:
        """A file still flagged open for writing, opened read-only through `ClearedFlags`
        when its writer is gone: outside SWMR mode (HDF5 refuses any other open) always; in
        SWMR mode if its root names a writer on this host that is no longer alive (a plain
        read of a dead writer's file never enters HDF5's SWMR retry loop). None: open it in
        SWMR mode (a live writer, or one this host cannot check)."""
        view = ClearedFlags(path, sb)
        try:
            f = h5py.File(view, "r")
        except Exception as exc:  # noqa: BLE001 - HDF5 errors on a half-written file vary
            view.close()
            if not sb.open_outside_swmr:
                return None
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RunFileError(
                f"cannot open run file {path} (its writer ended without closing it, outside SWMR mode, "
                f"and it is damaged): {reason}"
            ) from None
        if sb.open_outside_swmr or _writer_gone(f.attrs):
            self._view, self._cleared = view, "outside SWMR mode" if sb.open_outside_swmr else "in SWMR mode"
            return f
        f.close()
        view.close()
        return None

    def _open(self, path: Path) -> tuple[h5py.File, bool]:
        sb = read_superblock(path)
        if sb is not None:
            try:
                size = os.path.getsize(path)
            except OSError as exc:
                raise RunFileError(f"cannot open run file {path}: {exc.strerror or exc}") from None
            if size < sb.eof:
                raise RunFileError(
                    f"cannot open run file {path} (truncated HDF5 file): {size} bytes, its "
                    f"superblock says {sb.eof}"
                )
        heap = looping_global_heap(path, sb.raw[10] if sb is not None else 8)
        if heap is not None:
            raise RunFileError(
                f"cannot open run file {path} (corrupt HDF5 file): the global heap at byte {heap} "
                "has an object of size 0, which HDF5 would read forever"
            )
        if sb is not None:
            if sb.flags & WRITE_ACCESS:
                opened = self._open_cleared(path, sb)
                if opened is not None:
                    return opened, False
        # An SWMR-read open skips HDF5's check of the stored end of file against the file's
        # size and retries forever on a truncated file; a plain open (no lock taken) runs
        # that check first and fails at once. A file being written opens only in SWMR mode:
        # the plain open of it fails on the write flag, not on the size, and goes on below.
        # A file no writer holds opens plainly, and is read so: in SWMR-read mode HDF5 retries
        # a metadata block whose checksum fails (a corrupt file) with growing sleeps for up to
        # an hour, deaf to signals; a plain read fails on it at once.
        try:
            return h5py.File(path, "r"), False
        except OSError as exc:
            if "truncated" in str(exc):
                raise RunFileError(f"cannot open run file {path} (truncated HDF5 file): {exc}") from None
        try:
            h5py.File(path, "r", locking=False).close()
        except OSError as exc:
            if "truncated" in str(exc):
                raise RunFileError(f"cannot open run file {path} (truncated HDF5 file): {exc}") from None
        deadline = time.monotonic() + _LOCK_WAIT_S
        errors: list[str] = []
        while True:
            try:
                return h5py.File(path, "r", swmr=True), True
            except OSError as exc:
                errors = [str(exc)]
            try:
                return h5py.File(path, "r"), False
            except OSError as exc:
                errors.append(str(exc))
            if not any("unable to lock file" in e for e in errors):
                break
            if time.monotonic() >= deadline:
                # The writer holds its lock only for a flush; reading without it is safe
                # for the file, at worst this read sees a partial flush.
                try:
                    return h5py.File(path, "r", swmr=True, locking=False), True
                except OSError as exc:
                    errors.append(str(exc))
                    break
            time.sleep(0.05)
        hint = ""
        if any("already open for write" in e for e in errors):
            hint = (
                " (the writing process ended without closing it, outside SWMR mode; "
                f"`h5clear -s {path}` clears the flag)"
            )
        elif any("signature" in e for e in errors):
            hint = " (not an HDF5 file)"
        elif any("truncated" in e for e in errors):
            hint = " (truncated HDF5 file)"
        raise RunFileError(f"cannot open run file {path}{hint}: {errors[-1]}")

    # ------------------------------------------------------------------ validation

    def _err(self, where: str, message: str) -> RunFileError:
        return RunFileError(f"{self.path}: {where}: {message}")

    def _validate(self) -> None:
        """The checks of the module docstring that need no bulk data."""
        fmt = u.read_attr(self._f, "format", f"{self.path}: /", RunFileError)
        if u.as_text(fmt) != FORMAT:
            raise RunFileError(
                f"{self.path} is not a bioplaus run file (root attribute format="
                f"{u.brief(fmt)}, expected {FORMAT!r})"
            )
        version = _scalar(u.read_attr(self._f, "format_version", f"{self.path}: /", RunFileError))
        if version is None:
            raise self._err("/", "no root attribute format_version")
        if not _is_int(version) or version not in SUPPORTED_VERSIONS:
            raise self._err(
                "/", f"format_version {u.brief(version)} is not supported (this bioplaus reads "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))})"
            )
        u.check_tree(self._f, str(self.path), RunFileError)
        live = self.status in _UNFINISHED
        _ = self.config, self.seed
        for name in self._names("metrics"):
            self._series("metrics", name, one_d=True, live=live)
        for name in self._names("traces"):
            self._series("traces", name, one_d=False, live=live)
            self._trace_attrs(name)
        for name in self._names("weights"):
            self._series("weights", name, one_d=False, live=live)
        for population in self.populations:
            self._spike_group(population, live=live)

    def _get(self, path: str) -> Any:
        return u.get(self._f, path, str(self.path), RunFileError)

    def _dataset(self, path: str) -> h5py.Dataset | None:
        """The checked dataset at ``path``, None if absent; another object raises."""
        obj = self._get(path)
        if obj is None:
            return None
        if not isinstance(obj, h5py.Dataset):
            raise self._err("/" + path.strip("/"), "expected a dataset, found a group")
        if self._swmr:
            obj.refresh()
        u.check_dataset(obj, "/" + path.strip("/"), str(self.path), RunFileError)
        return obj

    def _read(self, ds: h5py.Dataset, rows: int | None = None) -> Any:
        return u.read(ds, ds.name, str(self.path), RunFileError, rows=rows, cap=MAX_READ_BYTES)

    def _group(self, path: str) -> h5py.Group | None:
        obj = self._get(path)
        if obj is not None and not isinstance(obj, h5py.Group):
            raise self._err("/" + path.strip("/"), "expected a group, found a dataset")
        return obj

    def _series(
        self, group: str, name: str, *, one_d: bool, live: bool | None = None
    ) -> tuple[h5py.Dataset, h5py.Dataset, int]:
        """(values, steps, rows) of ``<group>/<name>`` and its ``_step`` companion."""
        base = f"{group}/{name}"
        where = "/" + base
        ds = self._dataset(base)
        if ds is None:
            raise KeyError(f"{self.path}: no dataset {where!r}")
        if ds.dtype.kind not in "iuf" or (ds.ndim != 1 if one_d else ds.ndim < 1):
            raise self._err(
                where,
                f"expected a {'1-D' if one_d else '[rows, ...]'} numeric dataset, got dtype "
                f"{ds.dtype.str}, shape {ds.shape}",
            )
        steps = self._dataset(base + "_step")
        if steps is None:
            raise self._err(where, f"no {where}_step dataset (the training step of each row)")
        if steps.dtype.kind not in "iu" or steps.ndim != 1:
            raise self._err(
                where + "_step",
                f"expected a 1-D integer dataset, got dtype {steps.dtype.str}, shape {steps.shape}",
            )
        n_values, n_steps = ds.shape[0], steps.shape[0]
        if n_values != n_steps:
            # A live (or killed) writer, or one stopped by a write error (disk full), may
            # be one flush ahead on one of them; a finished file with unequal lengths is
            # damaged.
            if live is None:
                live = self.status in _UNFINISHED
            if not live:
                raise self._err(where, f"{n_values} rows but {where}_step has {n_steps}")
        return ds, steps, min(n_values, n_steps)

    def _trace_attrs(self, name: str) -> dict[str, Any]:
        where = f"/traces/{name}"
        ds = self._dataset(f"traces/{name}")
        assert ds is not None
        info = u.read_attrs(ds, f"{self.path}: {where}", RunFileError)
        for key, kind in _TRACE_ATTRS.items():
            if key not in info:
                continue
            v = info[key]
            ok = {
                "positive": _is_real(v) and math.isfinite(v) and v > 0,
                "finite": _is_real(v) and math.isfinite(v),
                "int": _is_int(v),
                "text": isinstance(v, str),
            }[kind]
            if not ok:
                want = {"positive": "a positive number", "finite": "a finite number",
                        "int": "an integer", "text": "text"}[kind]
                raise self._err(where, f"attribute {key}={u.brief(v)}: expected {want}")
        return info

    def _attr_number(
        self, obj: Any, key: str, where: str, *, integer: bool, lo: float, hi: float,
        required: bool,
    ) -> Any:
        raw = u.read_attr(obj, key, f"{self.path}: {where}", RunFileError)
        if raw is None:
            if required:
                raise self._err(where, f"no attribute {key}")
            return None
        v = _scalar(raw)
        ok = _is_int(v) if integer else _is_real(v) and math.isfinite(v)
        if not ok or not lo <= v <= hi:
            kind = "an integer" if integer else "a finite number"
            bounds = f" in [{lo}, {hi}]" if math.isfinite(hi) else f" >= {lo}"
            raise self._err(where, f"attribute {key}={u.brief(v)}: expected {kind}{bounds}")
        return v

    def _spike_group(
        self, population: str, *, live: bool | None = None
    ) -> tuple[dict[str, h5py.Dataset], dict[str, h5py.Dataset], int, int, dict[str, Any]]:
        """(event columns, record columns, events, records, attrs) of a population, checked."""
        where = f"/spikes/{population}"
        grp = self._get(f"spikes/{population}")
        if grp is None:
            known = ", ".join(self.populations) or "none"
            raise KeyError(f"{self.path}: no spike population {population!r} (have: {known})")
        if not isinstance(grp, h5py.Group):
            raise self._err(where, "expected a group of spike events, found a dataset")
        cols: dict[str, h5py.Dataset] = {}
        recs: dict[str, h5py.Dataset] = {}
        for key in (*_SPIKE_COLUMNS, *_RECORD_COLUMNS):
            ds = self._dataset(f"spikes/{population}/{key}")
            if ds is None:
                if key in _SPIKE_COLUMNS:
                    raise self._err(f"{where}/{key}", "missing (a population has step, t, neuron, sample)")
                continue
            if ds.ndim != 1 or ds.dtype.kind not in "iu":
                raise self._err(
                    f"{where}/{key}",
                    f"expected a 1-D integer dataset, got dtype {ds.dtype.str}, shape {ds.shape}",
                )
            (cols if key in _SPIKE_COLUMNS else recs)[key] = ds
        if recs and len(recs) != len(_RECORD_COLUMNS):
            missing = [k for k in _RECORD_COLUMNS if k not in recs]
            raise self._err(f"{where}/{missing[0]}", "missing (the record_* columns come together)")
        attrs = {
            "n_neurons": self._attr_number(grp, "n_neurons", where, integer=True, lo=0,
                                           hi=_MAX_NEURONS, required=True),
            "dt": self._attr_number(grp, "dt", where, integer=False, lo=0, hi=math.inf,
                                    required=True),
            "n_time": self._attr_number(grp, "n_time", where, integer=True, lo=0,
                                        hi=_MAX_TIME, required=False),
        }
        if attrs["dt"] <= 0:
            raise self._err(where, f"attribute dt={attrs['dt']!r}: expected a positive number")
        counts = [ds.shape[0] for ds in cols.values()]
        rec_counts = [ds.shape[0] for ds in recs.values()]
        if len(set(counts)) > 1 or len(set(rec_counts)) > 1:
            if live is None:
                live = self.status in _UNFINISHED
            if not live:
                lengths = ", ".join(f"{k} {ds.shape[0]}" for k, ds in {**cols, **recs}.items())
                raise self._err(where, f"columns of unequal length ({lengths})")
        return cols, recs, min(counts), min(rec_counts, default=0), attrs

    # ------------------------------------------------------------------ basics

    def close(self) -> None:
        """Close the file (idempotent)."""
        f = getattr(self, "_f", None)
        if f is not None and f.id.valid:
            f.close()
        view = getattr(self, "_view", None)
        if view is not None:
            view.close()

    @property
    def writer_gone(self) -> bool:
        """True if the file says "running" but its writer (root attributes ``writer_pid``,
        ``writer_host``: this host) is no longer alive, or it was read through a cleared
        superblock: the run was killed (or crashed) before closing the file."""
        if self._cleared == "outside SWMR mode":
            return True
        return self.status == "running" and _writer_gone(self._f.attrs)

    @property
    def note(self) -> str | None:
        """One line when the file was not closed by its writer (killed); else None."""
        if self._cleared == "outside SWMR mode":
            return ("its writer ended without closing it, outside SWMR mode (killed during a "
                    "write): read as last written, through a cleared superblock; the file is unchanged")
        if self.writer_gone:
            return (f"its writer (pid {_scalar(self._f.attrs.get('writer_pid'))}) is gone: the run was "
                    "killed before it finished; the file holds what was written up to then")
        return None

    def __enter__(self) -> RunFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        try:
            status = self.status
        except (RunFileError, ValueError):
            status = "invalid"
        return f"RunFile({str(self.path)!r}, status={status!r})"

    def _names(self, group: str, skip_steps: bool = True) -> list[str]:
        """Dataset names under ``group`` (recursive), without the ``<name>_step`` companions."""
        grp = self._group(group)
        if grp is None:
            return []
        names = [
            n for n, o in u.walk(grp, str(self.path), RunFileError, group)
            if isinstance(o, h5py.Dataset)
        ]
        if skip_steps:
            present = set(names)
            names = [n for n in names if not (n.endswith("_step") and n[:-5] in present)]
        return sorted(names)

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes, JSON text decoded (``config``, ``versions``, meta items)."""
        return u.read_attrs(self._f, f"{self.path}: /", RunFileError)

    @property
    def status(self) -> str:
        """running | done | failed | interrupted.

        The root attribute is final once the writer closed; while it says "running" the
        ``/status`` dataset, which the writer updates in place under SWMR, is the truth.
        Any other value raises `RunFileError`.
        """
        raw = u.read_attr(self._f, "status", f"{self.path}: /", RunFileError, "running")
        status, where = u.as_text(raw), "/: attribute status"
        if status == "running":
            ds = self._dataset("status")
            if ds is not None:
                where = "/status"
                if ds.shape != () or ds.dtype.kind not in "SOU":
                    raise self._err(where, f"expected a scalar string, got dtype {ds.dtype.str}, shape {ds.shape}")
                status = u.as_text(self._read(ds))
                status = None if status is None else status.rstrip("\x00").strip() or "running"
        if status not in STATUSES:
            raise self._err(
                where, f"invalid status {u.brief(status if status is not None else raw)} "
                f"(expected one of {', '.join(STATUSES)})"
            )
        return status

    @property
    def config(self) -> dict[str, Any]:
        """The experiment configuration as stored at the start of the run."""
        where = f"{self.path}: /: attribute config"
        raw = u.read_attr(self._f, "config", where, RunFileError)
        if raw is None:
            return {}
        text = u.as_text(raw)
        if text is None:
            raise RunFileError(f"{where}: expected JSON text, got {u.brief(raw)}")
        cfg = u.load_json(text, where, RunFileError, strict=True)
        if not isinstance(cfg, dict):
            raise RunFileError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
        return cfg

    @property
    def seed(self) -> int | None:
        """The run's seed."""
        seed = _scalar(u.read_attr(self._f, "seed", f"{self.path}: /", RunFileError))
        if seed is not None and not _is_int(seed):
            raise self._err("/", f"attribute seed={u.brief(seed)}: expected an integer")
        return seed

    @property
    def name(self) -> str:
        """The experiment name from the config, else the file name without suffix."""
        cfg = self.config
        for section in (cfg, cfg.get("run"), cfg.get("experiment")):
            if isinstance(section, dict) and isinstance(section.get("name"), str):
                return section["name"]
        return self.path.stem

    # ------------------------------------------------------------------ metrics

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        """Metric name -> values (float64), in step order as logged."""
        return {name: self.metric(name) for name in self._names("metrics")}

    def _metric_pair(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if self._get(f"metrics/{name}") is None:
            known = ", ".join(self._names("metrics")) or "none"
            raise KeyError(f"{self.path}: no metric {name!r} (metrics: {known})")
        ds, steps, n = self._series("metrics", name, one_d=True)
        # A reader can catch a flush between the two datasets: keep whole rows only.
        return self._read(steps, n), self._read(ds, n)

    def metric(self, name: str) -> np.ndarray:
        """Values of one metric."""
        return self._metric_pair(name)[1]

    def metric_steps(self, name: str) -> np.ndarray:
        """Training steps (int64) of one metric's values."""
        return self._metric_pair(name)[0]

    # ------------------------------------------------------------------ spikes

    @property
    def populations(self) -> list[str]:
        """Populations with spike records."""
        grp = self._group("spikes")
        return sorted(grp.keys()) if grp is not None else []

    def spikes(self, population: str) -> SpikeEvents:
        """All spike events of one population (indices checked against the declared sizes)."""
        cols, recs, n, m, attrs = self._spike_group(population)
        where = f"/spikes/{population}"
        data = {k: self._read(ds, n) for k, ds in cols.items()}
        rec_data = {k: self._read(ds, m) for k, ds in recs.items()}
        limits = {"t": attrs["n_time"], "neuron": attrs["n_neurons"]}
        for key, values in {**data, **rec_data}.items():
            if not len(values):
                continue
            lo, hi = int(values.min()), int(values.max())
            top = limits.get(key)
            if lo < 0 or (top is not None and hi >= top):
                bound = f"[0, {top})" if top is not None else "non-negative"
                raise self._err(f"{where}/{key}", f"values {lo}..{hi} outside {bound}")
        return SpikeEvents(
            step=data["step"],
            t=data["t"],
            neuron=data["neuron"],
            sample=data["sample"],
            n_neurons=attrs["n_neurons"],
            dt=float(attrs["dt"]),
            n_time=attrs["n_time"],
            record_step=rec_data.get("record_step"),
            record_sample_offset=rec_data.get("record_sample_offset"),
            record_n_samples=rec_data.get("record_n_samples"),
            source=f"{self.path}: {where}",
        )

    # ------------------------------------------------------------------ traces, weights

    @property
    def traces(self) -> list[str]:
        """Names of recorded traces (e.g. ``layer1.mem``)."""
        return self._names("traces")

    def _require(self, group: str, name: str, what: str) -> None:
        if not isinstance(self._get(f"{group}/{name}"), h5py.Dataset):
            known = ", ".join(self._names(group)) or "none"
            raise KeyError(f"{self.path}: no {what} {name!r} (have: {known})")

    def trace(self, name: str) -> np.ndarray:
        """All records of one trace, float32 [n_records, ...] (axes in ``trace_info``)."""
        self._require("traces", name, "trace")
        ds, _, n = self._series("traces", name, one_d=False)
        return self._read(ds, n)

    def trace_info(self, name: str) -> dict[str, Any]:
        """Attributes of a trace (unit, dt, every, dims, ...) plus ``steps`` and ``shape``."""
        self._require("traces", name, "trace")
        ds, steps, n = self._series("traces", name, one_d=False)
        info = self._trace_attrs(name)
        info["steps"] = self._read(steps, n)
        info["shape"] = (n, *ds.shape[1:])
        return info

    @property
    def layers_with_weights(self) -> list[str]:
        """Layers with weight snapshots."""
        return self._names("weights")

    def weights(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps [S], snapshots float32 [S, ...]) of one layer."""
        self._require("weights", layer, "weights of layer")
        ds, steps, n = self._series("weights", layer, one_d=False)
        return self._read(steps, n), self._read(ds, n)

    # ------------------------------------------------------------------ anything else

    def has(self, path: str) -> bool:
        """True if an object exists at ``path``."""
        return self._get(path) is not None if path.strip("/") else True

    def model_keys(self, part: str = "net") -> list[str]:
        """Parameter names saved under ``/model/<part>`` (e.g. ``layers.0.synapse.weight``)."""
        return self._names(f"model/{part}", skip_steps=False)

    def array(self, path: str) -> np.ndarray:
        """Any dataset by path, e.g. ``/model/net/layers.0.synapse.weight``."""
        obj = self._get(path)
        if not isinstance(obj, h5py.Dataset):
            raise KeyError(f"{self.path}: no dataset {path.strip('/')!r}")
        ds = self._dataset(path)
        assert ds is not None
        value = self._read(ds)
        if isinstance(value, bytes):
            return np.array(value.decode("utf-8", errors="replace"))
        return np.asarray(value)

    def attrs_of(self, path: str) -> dict[str, Any]:
        """Attributes of any object by path (JSON text decoded)."""
        p = path.strip("/")
        obj = self._f if not p else self._get(p)
        if obj is None:
            raise KeyError(f"{self.path}: no object {path!r}")
        return u.read_attrs(obj, f"{self.path}: /{p}", RunFileError)

    def declared_metrics(self, declare: Callable[[Mapping[str, Any]], Iterable[Metric]] | None = None) -> list[Metric]:
        """The metric declarations stored in the file; else ``declare(config)``'s, else none."""
        declared = stored_metrics(self.attrs.get("declared_metrics"))
        if declared is None:
            return list(declare(self.config)) if declare is not None else []
        return declared

    def outcome(self, declare: Callable[[Mapping[str, Any]], Iterable[Metric]] | None = None) -> Outcome:
        """Status, kind, error, steps, seconds, final metrics, declarations and headline.

        Reads root attributes only. ``declare(config)`` supplies the declarations of a
        file written before they were stored (its kind's); without it such a file has none.
        """
        attrs = self.attrs
        config = self.config
        kind, steps, seconds, error = (attrs.get(k) for k in ("kind", "steps", "seconds", "error"))
        return Outcome(
            path=self.path,
            name=self.name,
            status=self.status,
            kind=kind if isinstance(kind, str) and kind else None,
            seed=self.seed,
            config=config,
            error=None if error is None else str(error),
            steps=int(steps) if _is_real(steps) and math.isfinite(steps) else None,
            seconds=float(seconds) if _is_real(seconds) else None,
            finals={k[len("final_"):]: float(v) for k, v in attrs.items() if k.startswith("final_") and _is_real(v)},
            declared=self.declared_metrics(declare),
        )

    def summary(self) -> dict[str, Any]:
        """JSON-friendly overview used by ``bioplaus inspect``.

        Reads no bulk data except the metrics; a malformed object raises `RunFileError`
        (nothing is skipped silently).
        """
        attrs = self.attrs
        metrics: dict[str, float] = {}
        last_step: int | None = None
        for name in self._names("metrics"):
            steps, values = self._metric_pair(name)
            if len(values):
                metrics[name] = float(values[-1])
                last_step = max(int(steps[-1]), last_step if last_step is not None else -1)
        populations = {p: int(self._spike_group(p)[2]) for p in self.populations}
        traces = {n: list(self.trace_info(n)["shape"]) for n in self.traces}
        weights: dict[str, list[int]] = {}
        for layer in self.layers_with_weights:
            ds, _, n = self._series("weights", layer, one_d=False)
            weights[layer] = [n, *ds.shape[1:]]
        arrays: dict[str, list[int]] = {}
        streamed = {"metrics", "traces", "spikes", "weights", "status"}

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and name.split("/", 1)[0] not in streamed:
                arrays[f"/{name}"] = list(obj.shape)

        self._f.visititems(visit)
        summary: dict[str, Any] = {
            "path": str(self.path),
            "name": self.name,
            "status": self.status,
            "note": self.note,
            "created": attrs.get("created"),
            "finished": attrs.get("finished"),
            "seed": self.seed,
            "format_version": attrs.get("format_version"),
            "last_step": last_step,
            "metrics": metrics,
            "populations": populations,
            "traces": traces,
            "weights": weights,
            "arrays": arrays,
            "groups": sorted(k for k in self._f.keys() if isinstance(self._get(k), h5py.Group)),
        }
        if "error" in attrs:
            summary["error"] = attrs["error"]
        return summary


def open_run(path: str | Path) -> RunFile:
    """Open a run file for reading (works while it is being written); use ``with``/``close``."""
    from bioplaus.config import path_arg

    return RunFile(path_arg(path, "path", RunFileError))
