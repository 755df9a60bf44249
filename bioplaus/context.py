"""The run context: the one holder of process-wide state for one run, and its metric channel.

A `RunContext` scopes to one run what would otherwise leak between runs in one process
(a sweep, a notebook): the global torch / numpy / ``random`` RNG states, torch's thread
count and the SIGINT / SIGTERM handlers are set on entry and restored on exit. It owns the
run file: rules, plugins and experiment kinds emit metrics and arrays through it, it
stamps the step from its clock, and only its `Recorder` touches HDF5.

Used by every experiment kind, and directly from a hand-written loop::

    with RunContext("runs/mine.h5", seed=0, metrics=[Metric("loss", "min", headline=True)]) as run:
        for step in range(1, 101):
            run.step = step
            run.log(loss=train_one_batch())
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from bioplaus.errors import ConfigError, OutputError, RunError
from bioplaus.metrics import Metric, find_metric
from bioplaus.procs import DeferredStop

# ----------------------------------------------------------------------------- progress


class Progress:
    """A tqdm bar on a terminal, one line per epoch otherwise (logs stay readable).

    Shows the declared ``progress`` metrics of each step and the ``summary`` metrics of
    each epoch line, values to 4 significant digits. An epoch line stays within ``WIDTH``
    characters: the headline metric and the loss of each split come first; other summary
    metrics are shown while they fit (every value is in the run file).
    """

    WIDTH = 100

    def __init__(self, total: int, enabled: bool, desc: str, declared: Iterable[Metric] = ()) -> None:
        self.enabled = enabled
        self.declared = list(declared)
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=True)

    def _pick(self, values: Mapping[str, float], role: str) -> list[tuple[str, float]]:
        out = []
        for k, v in values.items():
            m = find_metric(self.declared, k)
            if m is not None and getattr(m, role) and "*" not in m.name:
                out.append((k, v))
        return out

    def update(self, position: str, values: Mapping[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            shown = " ".join(f"{k} {v:.4g}" for k, v in self._pick(values, "progress"))
            self.bar.set_postfix_str(f"{position} {shown}".strip(), refresh=False)

    def _priority(self, name: str) -> int:
        """0: the headline; 1: metrics to minimise (each split's loss); 2: the others."""
        m = find_metric(self.declared, name)
        if m is not None and m.headline:
            return 0
        return 1 if m is not None and m.direction == "min" else 2

    def format_line(self, label: str, values: Mapping[str, float], seconds: float) -> str:
        """The text of `line`: within ``WIDTH`` characters unless the essentials need more."""
        picked = self._pick(values, "summary")
        items = {k: f"{k}={v:.4g}" for k, v in picked}
        tail = f" ({seconds:.1f} s)"
        room = self.WIDTH - len(label) - 2 - len(tail)
        keep: set[str] = set()
        for k in sorted(items, key=lambda k: (self._priority(k), list(items).index(k))):
            cost = len(items[k]) + (1 if keep else 0)
            if cost <= room or self._priority(k) <= 1:
                keep.add(k)
                room -= cost
        text = " ".join(items[k] for k in items if k in keep)
        return f"{label}: {text}{tail}"

    def line(self, label: str, values: Mapping[str, float], seconds: float) -> None:
        """One line for an epoch (or task): its summary metrics and the time it took."""
        if not self.enabled:
            return
        self.write(self.format_line(label, values, seconds))

    def write(self, line: str) -> None:
        """A line above the bar (or on stderr without one); nothing when disabled."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ----------------------------------------------------------------------------- context


class RunContext:
    """Scope, clock and metric channel of one run (see the module docstring).

    ``out`` is the run file (created by `open`, or by the first ``log*`` call); ``config``
    is stored in it as JSON; ``metrics`` are the declarations stored beside it that
    progress lines, summaries, ``inspect`` and ``report`` read. An existing ``out`` is
    refused unless ``on_exists`` is "overwrite" (run files only) or "number" (write the
    first free ``<stem>-<k>`` name; ``out`` then holds the name written).
    """

    def __init__(
        self,
        out: str | Path | None = None,
        *,
        seed: int = 0,
        threads: int = 0,
        config: Mapping[str, Any] | None = None,
        name: str = "run",
        metrics: Iterable[Metric] = (),
        progress: bool = True,
        flush_every_s: float = 30.0,
        on_exists: str = "refuse",
        device: str | torch.device = "cpu",
    ) -> None:
        self.out = Path(out) if out is not None else None
        self.device = torch.device(device)
        self.on_exists = on_exists
        self.seed = int(seed)
        self.threads = int(threads)
        self.config = dict(config or {})
        self.name = name
        self.declared: list[Metric] = list(metrics)
        self.progress_enabled = progress
        self.flush_every_s = flush_every_s
        self.recorder: Any = None
        self.step = 0
        self._stop = DeferredStop()
        self._saved: dict[str, Any] | None = None
        self._meta: dict[str, Any] = {}

    # -- scope -----------------------------------------------------------------------
    def __enter__(self) -> RunContext:
        self._saved = {
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "random": random.getstate(),
            "threads": torch.get_num_threads(),
            "device": torch.get_default_device(),
        }
        if self.device != self._saved["device"]:
            # Allocations without an explicit device (models, rule and plugin state) follow
            # the run's device; set only when it differs: the default needs no mode on CPU.
            torch.set_default_device(self.device)
        if self.threads > 0:
            torch.set_num_threads(self.threads)
        torch.manual_seed(self.seed)
        np.random.seed(self.seed % 2**32)
        random.seed(self.seed)
        self._stop.install()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self.recorder is not None and not self.recorder.closed:
                if exc is None:
                    self.close("done", steps=self.step)
                elif isinstance(exc, KeyboardInterrupt):
                    self.close("interrupted", stopped_at_step=self.step)
                elif isinstance(exc, OutputError):
                    self.close("failed", error=str(exc), stopped_at_step=self.step)
                elif isinstance(exc, RunError):
                    self.close("failed", error=str(exc), failed_step=self.step + 1)
                else:
                    self.close("failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._restore()

    def _restore(self) -> None:
        self._stop.restore()
        saved, self._saved = self._saved, None
        if saved is None:
            return
        torch.set_rng_state(saved["torch_rng"])
        np.random.set_state(saved["numpy_rng"])
        random.setstate(saved["random"])
        if torch.get_num_threads() != saved["threads"]:
            torch.set_num_threads(saved["threads"])
        if torch.get_default_device() != saved["device"]:
            torch.set_default_device(saved["device"])

    # -- signals ---------------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        """Whether a SIGINT / SIGTERM asked the run to stop (`bioplaus.procs.DeferredStop`)."""
        return self._stop.requested

    @stop_requested.setter
    def stop_requested(self, value: bool) -> None:
        self._stop.requested = value

    def check_stop(self) -> None:
        """Raise KeyboardInterrupt if a SIGINT/SIGTERM arrived (called between steps).

        The handlers stay installed while the run is in scope: a signal sets the flag (a
        second one raises at once), also in a process started in the background, which
        inherits SIGINT ignored.
        """
        self._stop.check()

    # -- the run file ----------------------------------------------------------------
    def declare(self, *metrics: Metric) -> None:
        """Add declarations (before `open`; later ones reach progress lines, not the file)."""
        self.declared.extend(metrics)

    def open(self, meta: Mapping[str, Any] | None = None) -> Any:
        """Create the run file (status "running") with the config, meta and declarations."""
        from bioplaus.record import Recorder

        if self.recorder is not None:
            return self.recorder
        if self.out is None:
            raise RunError("RunContext: no output path to write the run file to")
        attrs = dict(meta or {})
        attrs.setdefault("device", str(self.device))
        attrs["declared_metrics"] = json.dumps([m.to_json() for m in self.declared])
        rec = Recorder(
            self.out, self.config, self.seed, meta=attrs, flush_every_s=self.flush_every_s,
            on_exists=self.on_exists,
        )
        self.recorder = rec
        self.out = rec.path
        # Declared metrics exist from the first flush, so SWMR can start after one step.
        rec.declare_metrics(*(m.name for m in self.declared if not any(c in m.name for c in "*?[")))
        return rec

    @property
    def rec(self) -> Any:
        return self.recorder if self.recorder is not None else self.open()

    def log(self, step: int | None = None, **values: float) -> None:
        """Append scalars to ``/metrics/<name>`` at ``step`` (default: the clock)."""
        self.rec.log_metrics(self.step if step is None else step, **values)

    def log_array(self, path: str, array: Any, **attrs: Any) -> None:
        self.rec.log_array(path, array, **attrs)

    def log_trace(self, name: str, array: Any, step: int | None = None, **attrs: Any) -> None:
        self.rec.log_trace(name, self.step if step is None else step, array, **attrs)

    def log_spikes(self, population: str, spikes: Any, step: int | None = None, **attrs: Any) -> int:
        return self.rec.log_spikes(population, self.step if step is None else step, spikes, **attrs)

    def log_weights(self, layer: str, W: Any, step: int | None = None) -> None:
        self.rec.log_weights(layer, self.step if step is None else step, W)

    def set_attrs(self, path: str, **attrs: Any) -> None:
        self.rec.set_attrs(path, **attrs)

    def flush(self) -> None:
        if self.recorder is not None:
            self.recorder.flush()

    def start_swmr(self) -> None:
        self.rec.start_swmr()

    def close(self, status: str = "done", **attrs: Any) -> None:
        if self.recorder is not None:
            gemm = _spike_gemm_used(self.config)
            if gemm is not None:
                attrs.setdefault("spike_gemm", gemm)
            self.recorder.close(status, **attrs)

    def progress(self, total: int) -> Progress:
        """A progress bar over ``total`` steps showing the declared progress metrics."""
        return Progress(total, self.progress_enabled, self.name, self.declared)


def _spike_gemm_used(config: Mapping[str, Any]) -> str | None:
    """How a run's spike-fed synapses multiply (fp32, bf16x3, lut) when its neuron model
    spikes; None for other runs (for them resolving the mode would build the kernel for nothing)."""
    from bioplaus.neurons import neuron_model, synapses

    net = config.get("network")
    try:
        spikes = isinstance(net, Mapping) and neuron_model(str(net.get("backend"))).spikes
    except ConfigError:  # a model that is not registered here: nothing to say
        return None
    if not spikes:
        return None
    try:
        return synapses.spike_gemm_mode()
    except ConfigError:  # a bad BIOPLAUS_SPIKE_GEMM set during the run: the file still closes
        return None


def finite_or_raise(values: Mapping[str, float], step: int) -> None:
    """RunError naming the first non-finite value: the run diverged at ``step``."""
    for k, v in values.items():
        if not math.isfinite(v):
            raise RunError(f"{k} is {v} at step {step}: the run diverged")
