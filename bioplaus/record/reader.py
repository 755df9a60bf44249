"""Read-only access to run files, also while a `Recorder` is still writing them (SWMR).

`open_run` opens a file in SWMR-read mode when it can (a file being written, or killed
while being written, opens only this way) and falls back to a plain read-only open for
files written without SWMR support. In SWMR mode every dataset is refreshed before it is
read, so repeated calls see the rows appended since.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np

from bioplaus.record.writer import FORMAT

_LOCK_WAIT_S = 2.0


def _decode(value: Any) -> Any:
    """HDF5 attribute -> Python value; JSON text (objects, arrays, null) is decoded."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        if value.startswith(("{", "[")) or value == "null":
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(eq=False)
class SpikeEvents:
    """Spike events of one population: parallel arrays, one entry per spike.

    The time of an event is ``t * dt`` seconds; ``sample`` is the index of the sample
    within the records of that training ``step``. ``record_*`` list every recorded call
    (also calls without any spike).
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

    def to_dense(self, step: int | None = None) -> np.ndarray:
        """Spikes of one record step (default: the last) as a bool array [T, S, N].

        T is the ``n_time`` attribute; S covers every sample recorded at that step.
        """
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
        out = np.zeros((n_time, n_samples, self.n_neurons), dtype=bool)
        out[t, s, n] = True
        return out


class RunFile:
    """A run file opened for reading; see ``bioplaus/record/schema.md`` for the layout."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"run file not found: {self.path}")
        self._f, self._swmr = self._open(self.path)
        fmt = _decode(self._f.attrs.get("format"))
        if fmt != FORMAT:
            self._f.close()
            raise ValueError(
                f"{self.path} is not a bioplaus run file (root attribute format={fmt!r}, "
                f"expected {FORMAT!r})"
            )

    @staticmethod
    def _open(path: Path) -> tuple[h5py.File, bool]:
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
        raise ValueError(f"cannot open run file {path}{hint}: {errors[-1]}")

    # ------------------------------------------------------------------ basics

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._f.id.valid:
            self._f.close()

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
        return f"RunFile({str(self.path)!r}, status={self.status!r})"

    def _ds(self, path: str) -> h5py.Dataset:
        obj = self._f.get(path)
        if not isinstance(obj, h5py.Dataset):
            raise KeyError(f"{self.path}: no dataset {path!r}")
        if self._swmr:
            obj.refresh()
        return obj

    def _names(self, group: str, skip_steps: bool = True) -> list[str]:
        """Dataset names under ``group`` (recursive), without the ``<name>_step`` companions."""
        grp = self._f.get(group)
        if not isinstance(grp, h5py.Group):
            return []
        names: list[str] = []
        grp.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        if skip_steps:
            present = set(names)
            names = [n for n in names if not (n.endswith("_step") and n[:-5] in present)]
        return sorted(names)

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes, JSON text decoded (``config``, ``versions``, meta items)."""
        return {k: _decode(v) for k, v in self._f.attrs.items()}

    @property
    def status(self) -> str:
        """running | done | failed | interrupted.

        The root attribute is final once the writer closed; while it says "running" the
        ``/status`` dataset, which the writer updates in place under SWMR, is the truth.
        """
        status = str(_decode(self._f.attrs.get("status", "running")))
        if status == "running" and isinstance(self._f.get("status"), h5py.Dataset):
            value = self._ds("status")[()]
            status = value.decode() if isinstance(value, bytes) else str(value)
            status = status.rstrip("\x00").strip() or "running"
        return status

    @property
    def config(self) -> dict[str, Any]:
        """The experiment configuration as stored at the start of the run."""
        cfg = _decode(self._f.attrs.get("config", "{}"))
        return cfg if isinstance(cfg, dict) else {}

    @property
    def seed(self) -> int | None:
        """The run's seed."""
        seed = self._f.attrs.get("seed")
        return None if seed is None else int(seed)

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
        if f"metrics/{name}" not in self._f:
            known = ", ".join(self._names("metrics")) or "none"
            raise KeyError(f"{self.path}: no metric {name!r} (metrics: {known})")
        values = self._ds(f"metrics/{name}")[()]
        steps = self._ds(f"metrics/{name}_step")[()]
        # A reader can catch a flush between the two datasets: keep whole rows only.
        n = min(len(values), len(steps))
        return steps[:n], values[:n]

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
        grp = self._f.get("spikes")
        return sorted(grp.keys()) if isinstance(grp, h5py.Group) else []

    def spikes(self, population: str) -> SpikeEvents:
        """All spike events of one population."""
        grp = self._f.get(f"spikes/{population}")
        if not isinstance(grp, h5py.Group):
            known = ", ".join(self.populations) or "none"
            raise KeyError(f"{self.path}: no spike population {population!r} (have: {known})")
        base = f"spikes/{population}"
        cols = {k: self._ds(f"{base}/{k}")[()] for k in ("step", "t", "neuron", "sample")}
        n = min(len(v) for v in cols.values())
        recs: dict[str, np.ndarray | None] = {}
        for key in ("record_step", "record_sample_offset", "record_n_samples"):
            recs[key] = self._ds(f"{base}/{key}")[()] if f"{base}/{key}" in self._f else None
        lengths = [len(v) for v in recs.values() if v is not None]
        if lengths:
            m = min(lengths)
            recs = {k: None if v is None else v[:m] for k, v in recs.items()}
        n_time = grp.attrs.get("n_time")
        return SpikeEvents(
            step=cols["step"][:n],
            t=cols["t"][:n],
            neuron=cols["neuron"][:n],
            sample=cols["sample"][:n],
            n_neurons=int(grp.attrs["n_neurons"]),
            dt=float(grp.attrs["dt"]),
            n_time=None if n_time is None else int(n_time),
            **recs,
        )

    # ------------------------------------------------------------------ traces, weights

    @property
    def traces(self) -> list[str]:
        """Names of recorded traces (e.g. ``layer1.mem``)."""
        return self._names("traces")

    def _require(self, group: str, name: str, what: str) -> None:
        if not isinstance(self._f.get(f"{group}/{name}"), h5py.Dataset):
            known = ", ".join(self._names(group)) or "none"
            raise KeyError(f"{self.path}: no {what} {name!r} (have: {known})")

    def trace(self, name: str) -> np.ndarray:
        """All records of one trace, float32 [n_records, ...] (axes in ``trace_info``)."""
        self._require("traces", name, "trace")
        data = self._ds(f"traces/{name}")[()]
        steps = self._ds(f"traces/{name}_step")
        return data[: min(len(data), steps.shape[0])]

    def trace_info(self, name: str) -> dict[str, Any]:
        """Attributes of a trace (unit, dt, every, dims, ...) plus ``steps`` and ``shape``."""
        self._require("traces", name, "trace")
        ds = self._ds(f"traces/{name}")
        info = {k: _decode(v) for k, v in ds.attrs.items()}
        steps = self._ds(f"traces/{name}_step")[()]
        n = min(len(steps), ds.shape[0])
        info["steps"] = steps[:n]
        info["shape"] = (n, *ds.shape[1:])
        return info

    @property
    def layers_with_weights(self) -> list[str]:
        """Layers with weight snapshots."""
        return self._names("weights")

    def weights(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps [S], snapshots float32 [S, ...]) of one layer."""
        self._require("weights", layer, "weights of layer")
        data = self._ds(f"weights/{layer}")[()]
        steps = self._ds(f"weights/{layer}_step")[()]
        n = min(len(data), len(steps))
        return steps[:n], data[:n]

    # ------------------------------------------------------------------ anything else

    def has(self, path: str) -> bool:
        """True if an object exists at ``path``."""
        return path.strip("/") in self._f if path.strip("/") else True

    def model_keys(self, part: str = "net") -> list[str]:
        """Parameter names saved under ``/model/<part>`` (e.g. ``layers.0.synapse.weight``)."""
        return self._names(f"model/{part}", skip_steps=False)

    def array(self, path: str) -> np.ndarray:
        """Any dataset by path, e.g. ``/continual/acc_matrix`` or ``/model/fc1.weight``."""
        value = self._ds(path.strip("/"))[()]
        if isinstance(value, bytes):
            return np.array(value.decode("utf-8", errors="replace"))
        return np.asarray(value)

    def attrs_of(self, path: str) -> dict[str, Any]:
        """Attributes of any object by path (JSON text decoded)."""
        p = path.strip("/")
        obj = self._f if not p else self._f.get(p)
        if obj is None:
            raise KeyError(f"{self.path}: no object {path!r}")
        return {k: _decode(v) for k, v in obj.attrs.items()}

    def summary(self) -> dict[str, Any]:
        """JSON-friendly overview used by ``bioplaus inspect``."""
        attrs = self.attrs
        metrics: dict[str, float] = {}
        last_step: int | None = None
        for name in self._names("metrics"):
            steps, values = self._metric_pair(name)
            if len(values):
                metrics[name] = float(values[-1])
                last_step = max(int(steps[-1]), last_step if last_step is not None else -1)
        populations = {p: int(self._ds(f"spikes/{p}/t").shape[0]) for p in self.populations}
        traces = {n: list(self.trace_info(n)["shape"]) for n in self.traces}
        weights: dict[str, list[int]] = {}
        for layer in self.layers_with_weights:
            n = int(self._ds(f"weights/{layer}_step").shape[0])
            weights[layer] = [n, *self._f[f"weights/{layer}"].shape[1:]]
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
            "groups": sorted(k for k, v in self._f.items() if isinstance(v, h5py.Group)),
        }
        if "error" in attrs:
            summary["error"] = attrs["error"]
        return summary


def open_run(path: str | Path) -> RunFile:
    """Open a run file for reading (works while it is being written); use ``with``/``close``."""
    return RunFile(path)
