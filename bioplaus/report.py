"""Figures and a text summary from a run file (``bioplaus report`` / ``bioplaus inspect``).

Figures come from the ``figures`` registry: ``bioplaus report`` draws every registered
figure whose data the file holds (each returns no file otherwise). Experiment kinds, rules
and plugins register their own with `bioplaus.registry.register_figure`; before drawing,
the kind, rule and plugins named in the file are looked up so that third-party modules
(entry points) register theirs. The generic figures here (PNG, dpi 120):

- ``learning_curves.png``: scalar metrics against the step, one panel per declared
  ``panel`` (undeclared metrics: by the part of the name after the first ``_``).
- ``layer_metrics.png``: metrics named ``layer<k>/<name>``, one panel per name, a line per layer.
- ``spikes_<population>.png``: a raster of the last recorded step, first few samples.
- ``membrane_<trace>.png``: traces named ``*.mem``, a few neurons of the last record.
- ``weights.png``: per layer, a histogram of the last snapshot and first vs last.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through
pyplot, so that reporting does not touch the global backend of a caller's session.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bioplaus.context import Metric, find_metric, headline
from bioplaus.errors import BioplausError, one_line
from bioplaus.record.reader import RunFile, open_run
from bioplaus.registry import register_figure

DPI = 120
MAX_RASTER_SAMPLES = 4
MAX_MEM_NEURONS = 5
MAX_WEIGHT_LAYERS = 8
_SPLITS = ("train_", "val_", "test_")
_SPLIT_COLORS = {"train_": "C0", "val_": "C1", "test_": "C3"}
_LAYER_METRIC = re.compile(r"^layer(\d+)/(.+)$")


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    fig.tight_layout()
    path = out_dir / name
    fig.savefig(path, dpi=DPI)
    return [path]


def _safe(name: str) -> str:
    """A file-name fragment for a population, trace or layer name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


def _ms(dt: float | None) -> tuple[float, str]:
    """Scale from time bins to the x axis, and its label."""
    if dt is None or not math.isfinite(dt) or dt <= 0:
        return 1.0, "time (bins)"
    return dt * 1e3, "time (ms)"


# ---------------------------------------------------------------------- figures


def declared_metrics(run: RunFile) -> list[Metric]:
    """The metric declarations stored in the file, else those its kind would make."""
    raw = run.attrs.get("declared_metrics")
    if raw is not None:
        try:
            items = json.loads(raw) if isinstance(raw, str) else raw
            return [Metric.from_json(d) for d in items if isinstance(d, dict) and isinstance(d.get("name"), str)]
        except (ValueError, TypeError, RecursionError):
            return []
    try:  # a file written before declarations existed: ask its kind
        from bioplaus.config import load_config
        from bioplaus.registry import EXPERIMENTS

        cfg = load_config(dict(run.config))
        return EXPERIMENTS.get(cfg.kind).declared_metrics(cfg)
    except Exception:  # noqa: BLE001 - any config of any age: no declarations then
        return []


def _panel(name: str, declared: list[Metric]) -> tuple[str, Metric | None] | None:
    """Which panel of the learning curves a metric goes to (None: not plotted there)."""
    m = find_metric(declared, name)
    if m is not None:
        if m.panel:
            return m.panel, m
        if m.direction == "none":
            return None  # counters (epoch, task) and the like
    return (name.split("_", 1)[1] if "_" in name else name), m


@register_figure("learning_curves")
def learning_curves(run: RunFile, out_dir: Path) -> list[Path]:
    """Scalar metrics against the step, grouped into the panels they declare."""
    declared = declared_metrics(run)
    panels: dict[str, list[tuple[str, Metric | None]]] = defaultdict(list)
    for n in run.metrics:
        if "/" in n:
            continue
        where = _panel(n, declared)
        if where is not None:
            panels[where[0]].append((n, where[1]))
    if not panels:
        return []
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = new_figure(5.2 * cols, 3.9 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (panel, members) in zip(axes, sorted(panels.items())):
        top, low = -math.inf, math.inf
        units = {m.unit for _, m in members if m is not None and m.unit}
        for c, (n, _) in enumerate(sorted(members)):
            steps, values = run.metric_steps(n), run.metric(n)
            ax.plot(steps, values, color=f"C{c % 10}", ls=("-", "--", ":", "-.")[(c // 10) % 4],
                    marker="o" if len(values) < 30 else None, ms=3, label=n)
            finite = values[np.isfinite(values)]
            if len(finite):
                top, low = max(top, float(finite.max())), min(low, float(finite.min()))
        directions = {m.direction for _, m in members if m is not None}
        if directions == {"min"} and low > 0 and top / low > 50:
            ax.set_yscale("log")  # losses spanning decades are unreadable on a linear axis
        ax.set_xlabel("step")
        ax.set_ylabel(panel + (f" ({', '.join(sorted(units))})" if units else ""))
        ax.set_title(panel, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{run.name}: learning curves")
    return save_figure(fig, out_dir, "learning_curves.png")


@register_figure("layer_metrics")
def layer_metrics(run: RunFile, out_dir: Path) -> list[Path]:
    """Metrics named ``layer<k>/<name>``: a panel per name, a line per layer."""
    by_name: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for n in run.metrics:
        m = _LAYER_METRIC.match(n)
        if m:
            by_name[m.group(2)].append((int(m.group(1)), n))
    if not by_name:
        return []
    cols = min(3, len(by_name))
    rows = math.ceil(len(by_name) / cols)
    fig = new_figure(5.0 * cols, 3.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, members) in zip(axes, sorted(by_name.items())):
        for k, full in sorted(members):
            ax.plot(run.metric_steps(full), run.metric(full), label=f"layer {k}")
        ax.set_title(f"{name} per layer")
        ax.set_xlabel("training step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(by_name) :]:
        ax.set_visible(False)
    fig.suptitle(f"{run.name}: per-layer metrics")
    return save_figure(fig, out_dir, "layer_metrics.png")


def _raster(run: RunFile, population: str, out_dir: Path) -> list[Path]:
    events = run.spikes(population)
    if len(events.steps) == 0:
        return []
    step = int(events.steps[-1])
    dense = events.to_dense(step)
    n_time, n_samples, n_neurons = dense.shape
    shown = min(MAX_RASTER_SAMPLES, n_samples)
    if shown == 0:
        return []
    scale, xlabel = _ms(events.dt)
    duration_s = n_time * events.dt if events.dt > 0 else float("nan")
    height = 1.0 + shown * min(2.6, 1.2 + n_neurons / 100)
    fig = new_figure(7.5, height)
    axes = fig.subplots(shown, 1, sharex=True, squeeze=False)[:, 0]
    marker_size = 30 if n_neurons <= 50 else 12 if n_neurons <= 200 else 4
    for s, ax in enumerate(axes):
        t, n = np.nonzero(dense[:, s, :])
        ax.scatter(t * scale, n, marker="|", s=marker_size, c="k", linewidths=0.8)
        rate = len(t) / (n_neurons * duration_s) if n_neurons and duration_s > 0 else float("nan")
        ax.set_ylim(-0.5, n_neurons - 0.5)
        ax.set_xlim(-0.5 * scale, (n_time - 0.5) * scale)
        ax.set_ylabel(f"sample {s}\nneuron")
        ax.set_title(f"{len(t)} spikes, mean rate {rate:.1f} Hz", fontsize=9, loc="right")
    axes[-1].set_xlabel(xlabel)
    dt_ms = events.dt * 1e3
    fig.suptitle(
        f"{population}: spikes at step {step} ({n_neurons} neurons, dt = {dt_ms:g} ms, "
        f"{shown} of {n_samples} samples)"
    )
    return save_figure(fig, out_dir, f"spikes_{_safe(population)}.png")


def _membrane(run: RunFile, name: str, out_dir: Path) -> list[Path]:
    info = run.trace_info(name)
    data = run.trace(name)
    if len(data) == 0:
        return []
    dims = str(info.get("dims", "")).split(",")[1:]
    record = data[-1]
    if len(dims) != record.ndim:
        dims = ["time", *(f"axis{i}" for i in range(1, record.ndim))]
    if "sample" in dims:
        record = np.take(record, 0, axis=dims.index("sample"))
        dims = [d for d in dims if d != "sample"]
    t_axis = dims.index("time") if "time" in dims else 0
    mem = np.moveaxis(record, t_axis, 0).reshape(record.shape[t_axis], -1)
    n_time, n_neurons = mem.shape
    # Neurons spread over the upper half of the peak-potential ranking: the most active
    # alone look alike, silent ones are flat lines.
    peak = np.nan_to_num(mem.max(axis=0), nan=-np.inf)
    order = np.argsort(-peak, kind="stable")
    ranks = np.linspace(0, max(0, n_neurons // 2 - 1), min(MAX_MEM_NEURONS, n_neurons))
    chosen = np.unique(order[ranks.round().astype(int)])
    dt = info.get("dt")
    scale, xlabel = _ms(float(dt) if dt is not None else None)
    x = np.arange(n_time) * scale
    unit = info.get("unit", "") or "a.u."
    fig = new_figure(7.5, 4.0)
    ax = fig.subplots()
    for j in chosen:
        ax.plot(x, mem[:, j], lw=1.1, label=f"neuron {j}")
    threshold = info.get("threshold")
    if threshold is not None:
        ax.axhline(float(threshold), color="r", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"membrane potential ({unit})")
    step = int(info["steps"][-1]) if len(info["steps"]) else -1
    ax.set_title(f"{name}: step {step}, sample 0, {len(chosen)} of {n_neurons} neurons")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, out_dir, f"membrane_{_safe(name)}.png")


@register_figure("weights")
def weights(run: RunFile, out_dir: Path) -> list[Path]:
    """Per layer: a histogram of the last snapshot, and first vs last."""
    layers = run.layers_with_weights[:MAX_WEIGHT_LAYERS]
    if not layers:
        return []
    fig = new_figure(10.0, 2.9 * len(layers))
    axes = fig.subplots(len(layers), 2, squeeze=False)
    for (ax_last, ax_cmp), layer in zip(axes, layers):
        steps, snaps = run.weights(layer)
        if len(snaps) == 0:
            ax_last.set_visible(False)
            ax_cmp.set_visible(False)
            continue
        last = snaps[-1].ravel()
        first = snaps[0].ravel()
        both = np.concatenate([first, last])
        both = both[np.isfinite(both)]
        lo, hi = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 61)
        ax_last.hist(last, bins=bins, color="C0")
        ax_last.set_title(
            f"{layer} at step {int(steps[-1])}: mean {last.mean():.3g}, std {last.std():.3g}",
            fontsize=9,
        )
        ax_last.set_xlabel("weight value")
        ax_last.set_ylabel("count")
        if len(snaps) > 1:
            ax_cmp.hist(first, bins=bins, alpha=0.5, label=f"step {int(steps[0])} (first)")
            ax_cmp.hist(last, bins=bins, alpha=0.5, label=f"step {int(steps[-1])} (last)")
            ax_cmp.legend(fontsize=8)
            ax_cmp.set_title(f"{layer}: first vs last of {len(snaps)} snapshots", fontsize=9)
        else:
            ax_cmp.text(0.5, 0.5, "one snapshot only", ha="center", va="center")
            ax_cmp.set_title(f"{layer}: first vs last", fontsize=9)
        ax_cmp.set_xlabel("weight value")
        ax_cmp.set_ylabel("count")
    fig.suptitle(f"{run.name}: weight distributions")
    return save_figure(fig, out_dir, "weights.png")


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:+.3f}" if value < 0 else f"{value:.3f}"
    return str(value)


@register_figure("spikes")
def spikes(run: RunFile, out_dir: Path) -> list[Path]:
    """A raster per recorded population (last recorded step, first samples)."""
    return [p for population in run.populations for p in _raster(run, population, out_dir)]


@register_figure("membrane")
def membrane(run: RunFile, out_dir: Path) -> list[Path]:
    """Membrane traces (``*.mem``) of a few neurons, last record."""
    return [p for name in run.traces if name.endswith(".mem") for p in _membrane(run, name, out_dir)]


def _register_owners(run: RunFile) -> None:
    """Look up the file's kind, rule and plugins so that their modules register their figures."""
    from bioplaus.registry import EXPERIMENTS, PLUGINS, RULES

    cfg = run.config if isinstance(run.config, dict) else {}
    rule = cfg.get("rule", {}).get("name") if isinstance(cfg.get("rule"), dict) else None
    plugins = [p.get("name") for p in cfg.get("plugins", []) if isinstance(p, dict)] if isinstance(cfg.get("plugins"), list) else []
    for reg, name in [(EXPERIMENTS, run.attrs.get("kind") or cfg.get("kind")), (RULES, rule), *((PLUGINS, n) for n in plugins)]:
        if isinstance(name, str) and name:
            try:
                reg.get(name)
            except BioplausError:
                pass  # written by a package not installed here: its own figures are skipped


def make_report(run_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write the PNG figures of a run file into ``out_dir``; return the files written."""
    from bioplaus.registry import FIGURES

    out = Path(out_dir)
    written: list[Path] = []
    with open_run(run_path) as run:
        _register_owners(run)
        out.mkdir(parents=True, exist_ok=True)
        for name, figure in FIGURES.items():
            try:
                written += figure(run, out) or []
            except BioplausError:
                raise
            except (ValueError, LookupError, OSError) as exc:
                # The reader checked the layout; values it allows can still defeat figure
                # code (scalar trace rows, empty task metrics, names too long for a file).
                raise BioplausError(one_line(
                    f"{run_path}: report: cannot draw figure {name!r} ({type(exc).__name__}: {str(exc)[:200]})"
                )) from None
    return written


# ---------------------------------------------------------------------- text


def summary_text(run_path: str | Path) -> str:
    """A multi-line, human-readable overview of a run file (``bioplaus inspect``)."""
    with open_run(run_path) as run:
        s = run.summary()
        declared = declared_metrics(run)
        kind = run.attrs.get("kind")
        final = {k[6:]: v for k, v in run.attrs.items() if k.startswith("final_")}
        array_attrs = {p: run.attrs_of(p) for p in s["arrays"] if not p.startswith("/model/")}
    lines = [
        f"run file   {s['path']}",
        f"name       {s['name']}  (seed {s['seed']}, format v{s['format_version']})",
        f"status     {s['status']}",
        f"created    {s['created']}",
    ]
    if kind:
        lines.append(f"kind       {kind}")
    h = headline(declared)
    if h is not None:
        value = s["metrics"].get(h.name, final.get(h.name))
        better = {"max": "higher is better", "min": "lower is better"}.get(h.direction, "")
        shown = f"{value:.6g}" if isinstance(value, int | float) else "(not reached)"
        unit = f" {h.unit}" if h.unit else ""
        lines.append(f"headline   {h.name} = {shown}{unit}" + (f"  ({better})" if better else ""))
    if s.get("finished"):
        lines.append(f"finished   {s['finished']}")
    if s.get("error"):
        lines.append(f"error      {s['error']}")
    if s["last_step"] is not None:
        lines.append(f"last step  {s['last_step']}")
    if s["metrics"]:
        width = max(len(n) for n in s["metrics"])
        lines.append("metrics (final value):")
        for n, v in s["metrics"].items():
            m = find_metric(declared, n)
            tag = {"max": "  (max)", "min": "  (min)"}.get(m.direction, "") if m is not None else ""
            lines.append(f"  {n:<{width}}  {v:.6g}{tag}")
    if s["populations"]:
        lines.append("spikes (events):")
        lines += [f"  {p}  {c}" for p, c in s["populations"].items()]
    if s["traces"]:
        lines.append("traces [records, ...]:")
        lines += [f"  {n}  {shape}" for n, shape in s["traces"].items()]
    if s["weights"]:
        lines.append("weights [snapshots, ...]:")
        lines += [f"  {n}  {shape}" for n, shape in s["weights"].items()]
    if s["arrays"]:
        lines.append("arrays:")
        for p, shape in s["arrays"].items():
            attrs = {k: v for k, v in array_attrs.get(p, {}).items() if isinstance(v, int | float | str)}
            extra = "  " + ", ".join(f"{k}={fmt(v)}" for k, v in attrs.items()) if attrs else ""
            lines.append(f"  {p}  {shape}{extra}")
    lines.append(f"groups     {', '.join(s['groups']) or '(none)'}")
    return "\n".join(lines)
