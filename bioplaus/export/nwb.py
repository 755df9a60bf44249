"""A run file's recordings as NWB (Neurodata Without Borders), with pynwb.

``bioplaus export RUN.h5 --nwb OUT.nwb`` writes:

* a **trials** table: one trial per recorded (training step, sample), in order of step then
  sample, each T·dt seconds long and placed end to end (trial k starts at k·T·dt), with the
  columns ``record_step`` and ``sample``;
* a **Units** table: one unit per (population, neuron), columns ``population`` and
  ``neuron``; ``spike_times`` in seconds = trial start + t·dt;
* each membrane trace ``/traces/<name>`` as a ``TimeSeries`` in the processing module
  ``bioplaus`` (rate 1/dt, data [time, neuron]; its (record, sample) windows follow the
  same order as the trials), and the input of a ``bioplaus simulate`` run as the
  acquisition ``TimeSeries`` ``input`` (rate 1/dt, the encoded input at every step);
* the config (JSON) as ``experiment_description``, the versions, seed and run attributes as
  ``notes``, and the run's creation time as the session start.

Nothing partial is ever left at the target: the free space is checked up front against an
estimate (the data written plus ``_NWB_OVERHEAD`` for the cached NWB schema), the file is
built in memory (HDF5's core driver; above ``_IN_MEMORY_MAX`` bytes on disk under a
temporary name) and written to a temporary name beside the target, which is renamed into
place only once complete. A disk that fills up ends in one `OutputError` (HDF5 itself,
failing a write on a full disk, leaves a file whose close can crash the process).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bioplaus.errors import BioplausError, OutputError, os_reason
from bioplaus.resources import check_bytes

UNIT_BYTES = 250  # a Units row: its spike-time array, (population, neuron) key and columns
TRIAL_BYTES = 200  # a (step, sample) trial: the tuple in a set, its index entry and table row
# Bytes an NWB file holds beyond its data: the cached NWB and HDMF schema, the tables' metadata.
_NWB_OVERHEAD = 1 << 20
# Largest NWB file built in memory before it is written; larger ones are written by HDF5.
_IN_MEMORY_MAX = 1 << 30
# Files whose HDF5 close failed (a write error): kept referenced so that nothing closes them again.
_UNCLOSABLE: list[Any] = []


def _trials(events: dict[str, Any]) -> list[tuple[int, int]]:
    pairs: set[tuple[int, int]] = set()
    for ev in events.values():
        if ev.record_step is not None and len(ev.record_step):
            for st, off, n in zip(ev.record_step, ev.record_sample_offset, ev.record_n_samples):
                pairs.update((int(st), int(off) + k) for k in range(int(n)))
        pairs.update(zip(ev.step.astype(int).tolist(), ev.sample.astype(int).tolist()))
    return sorted(pairs)


def spike_times(run_path: str | Path) -> tuple[dict[tuple[str, int], np.ndarray], list[tuple[int, int]], float, int]:
    """Spike times in seconds per (population, neuron) on the trial timeline (module docstring).

    Returns (times, trials, dt, T).
    """
    from bioplaus.record import open_run

    with open_run(run_path) as run:
        events = {pop: run.spikes(pop) for pop in run.populations}
    if not events:
        return {}, [], 0.0, 0
    # A run file declares its sizes: check them before a Python object is made per unit / trial.
    units = sum(int(ev.n_neurons) for ev in events.values())
    samples = sum(len(ev.step) + (0 if ev.record_n_samples is None else int(np.sum(ev.record_n_samples, dtype=np.float64)))
                  for ev in events.values())
    check_bytes(UNIT_BYTES * units + TRIAL_BYTES * samples, str(run_path),
                f"an NWB export of {units} neurons and {samples} recorded samples")
    dts = {float(ev.dt) for ev in events.values()}
    ts = {int(ev.n_time) for ev in events.values() if ev.n_time}
    if len(dts) != 1 or len(ts) > 1:
        raise BioplausError(f"{run_path}: populations differ in dt or T; cannot place them on one timeline")
    dt = dts.pop()
    n_time = ts.pop() if ts else int(max(int(ev.t.max()) + 1 if ev.count else 1 for ev in events.values()))
    trials = _trials(events)
    index = {p: k for k, p in enumerate(trials)}
    out: dict[tuple[str, int], np.ndarray] = {}
    for pop, ev in events.items():
        trial = np.array([index[(int(s), int(m))] for s, m in zip(ev.step, ev.sample)], dtype=np.int64)
        times = (trial * n_time + ev.t.astype(np.int64)) * dt
        order = np.lexsort((times, ev.neuron))
        neuron, times = ev.neuron[order], times[order]
        bounds = np.searchsorted(neuron, np.arange(ev.n_neurons + 1))
        for n in range(ev.n_neurons):
            out[(pop, n)] = times[bounds[n]:bounds[n + 1]]
    return out, trials, dt, n_time


def export_nwb(run_path: str | Path, out: str | Path, *, overwrite: bool = False) -> dict[str, int]:
    """Write the NWB file of a run (module docstring); returns counts of what was written."""
    try:
        from pynwb import NWBHDF5IO, NWBFile, ProcessingModule, TimeSeries
    except ImportError:
        raise BioplausError("--nwb needs pynwb: pip install pynwb") from None

    from bioplaus.record import open_run
    from bioplaus.record.writer import check_export_path

    out = check_export_path(out, overwrite, "the NWB file", kind="nwb", source=run_path)
    times, trials, dt, n_time = spike_times(run_path)
    with open_run(run_path) as run:
        attrs = dict(run.attrs)
        config = run.config
        traces = {name: (run.trace(name), run.trace_info(name)) for name in run.traces}
        inp = run.array("/simulate/input") if run.has("/simulate/input") else None
    created = attrs.get("created")
    try:
        start = datetime.fromisoformat(str(created)) if created else datetime.now(UTC)
    except ValueError:
        start = datetime.now(UTC)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    notes = {k: (v.tolist() if isinstance(v, np.ndarray) else v.item() if isinstance(v, np.generic) else v)
             for k, v in attrs.items() if k not in ("config",)}
    nwb = NWBFile(
        session_description=f"bioplaus run {Path(run_path).name} ({attrs.get('kind', 'run')})",
        identifier=str(uuid.uuid4()),
        session_start_time=start,
        experiment_description=json.dumps(config, default=str),
        notes=json.dumps(notes, default=str),
        source_script="bioplaus export --nwb",
        source_script_file_name="bioplaus/export/nwb.py",
    )
    if trials:
        nwb.add_trial_column("record_step", "training step at which the spikes were recorded")
        nwb.add_trial_column("sample", "index of the sample within that record")
        for k, (st, sm) in enumerate(trials):
            nwb.add_trial(start_time=k * n_time * dt, stop_time=(k + 1) * n_time * dt, record_step=st, sample=sm)
    n_spikes = 0
    if times:
        nwb.add_unit_column("population", "bioplaus population (layer) of the neuron")
        nwb.add_unit_column("neuron", "index of the neuron in its population")
        for (pop, n), ts in times.items():
            nwb.add_unit(spike_times=ts, population=pop, neuron=n)
            n_spikes += len(ts)
    series = 0
    if traces:
        mod = ProcessingModule(name="bioplaus", description="membrane traces recorded by bioplaus")
        nwb.add_processing_module(mod)
        for name, (data, info) in traces.items():
            dims = str(info.get("dims", ""))
            arr = np.asarray(data, dtype=np.float32)
            tdt = float(info.get("dt") or dt or 1.0)
            if dims.startswith("record,time,sample") and arr.ndim >= 4:
                arr = arr.reshape(*arr.shape[:3], -1).transpose(0, 2, 1, 3)  # record, sample, time, n
                arr = arr.reshape(-1, arr.shape[-1])
            else:
                arr = arr.reshape(arr.shape[0], -1)
            mod.add(TimeSeries(name=name.replace("/", "_"), data=arr, unit=str(info.get("unit") or "1"),
                               rate=1.0 / tdt, starting_time=0.0,
                               description=f"{name}: dims {dims}; windows in trial order"))
            series += 1
    if inp is not None:
        x = np.asarray(inp, dtype=np.float32).reshape(len(inp), -1)
        data = np.repeat(x, n_time, axis=0) if n_time else x
        nwb.add_acquisition(TimeSeries(name="input", data=data, unit="1", rate=1.0 / dt, starting_time=0.0,
                                       description="encoded input current per step (direct encoding), "
                                       "one trial per sample"))
        series += 1
    data_bytes = n_spikes * 16 + len(times) * 64 + len(trials) * 48 + sum(
        int(np.prod(np.shape(d), dtype=np.int64)) * 4 for d, _ in traces.values())
    if inp is not None:
        data_bytes += int(np.prod(np.shape(inp), dtype=np.int64)) * 4 * max(n_time, 1)
    _write_nwb(nwb, out, data_bytes + _NWB_OVERHEAD, NWBHDF5IO)
    return {"units": len(times), "spikes": n_spikes, "series": series, "trials": len(trials)}


def _write_nwb(nwb: Any, out: Path, estimate: int, io_class: Any) -> None:
    """Write ``nwb`` to ``out`` (about ``estimate`` bytes) via a temporary name; nothing is left
    at ``out`` (or beside it) on an error, which is one `OutputError` (module docstring)."""
    import h5py

    from bioplaus.record.writer import _free_bytes

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create its directory: {os_reason(exc)}") from None
    free = _free_bytes(out.parent)
    if free is not None and free < estimate:
        raise OutputError(
            f"{out}: disk full: {free / 2**20:.1f} MiB free, the NWB file needs about {estimate / 2**20:.1f} MiB"
        )
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        if estimate <= _IN_MEMORY_MAX:
            with h5py.File(tmp.name, "w", driver="core", backing_store=False) as h5:
                io = io_class(mode="w", file=h5)
                io.write(nwb)
                h5.flush()
                image = h5.id.get_file_image()
                io.close()
            with open(tmp, "xb") as fh:
                fh.write(image)
        else:
            h5 = h5py.File(tmp, "x", rdcc_nbytes=0)
            io = io_class(mode="w", file=h5)
            try:
                io.write(nwb)
            except BaseException:
                _UNCLOSABLE.append((io, h5))  # its close after a failed write can crash HDF5
                raise
            io.close()
        os.replace(tmp, out)
    except (OSError, RuntimeError, MemoryError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        reason = "out of memory" if isinstance(exc, MemoryError) else os_reason(exc)
        raise OutputError(f"{out}: cannot write the NWB file: {reason}; nothing was written") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
