"""Figures and a text summary from a run file (``bioplaus report`` / ``bioplaus inspect``).

Figures (PNG, dpi 120), each skipped when its data is absent:

- ``learning_curves.png``: metrics named ``train_*``, ``val_*``, ``test_*`` against the
  training step, one panel for losses, one for accuracies (and one for the rest).
- ``layer_metrics.png``: metrics named ``layer<k>/<name>`` (e.g. CCL's per-layer losses),
  one panel per name with a line per layer.
- ``spikes_<population>.png``: a raster of the last recorded step, first few samples.
- ``membrane_<trace>.png``: traces named ``*.mem``, a few neurons of the last record.
- ``weights.png``: per layer, a histogram of the last snapshot and first vs last.
- ``acc_matrix.png``: the continual-learning accuracy matrix with ACC and BWT.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through
pyplot, so that reporting does not touch the global backend of a caller's session.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bioplaus.errors import BioplausError, one_line
from bioplaus.record.reader import RunFile, open_run

DPI = 120
MAX_RASTER_SAMPLES = 4
MAX_MEM_NEURONS = 5
MAX_WEIGHT_LAYERS = 8
_SPLITS = ("train_", "val_", "test_")
_SPLIT_COLORS = {"train_": "C0", "val_": "C1", "test_": "C3"}
_LAYER_METRIC = re.compile(r"^layer(\d+)/(.+)$")


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_dir: Path, name: str, written: list[Path]) -> None:
    fig.tight_layout()
    path = out_dir / name
    fig.savefig(path, dpi=DPI)
    written.append(path)


def _safe(name: str) -> str:
    """A file-name fragment for a population, trace or layer name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


def _ms(dt: float | None) -> tuple[float, str]:
    """Scale from time bins to the x axis, and its label."""
    if dt is None or not math.isfinite(dt) or dt <= 0:
        return 1.0, "time (bins)"
    return dt * 1e3, "time (ms)"


# ---------------------------------------------------------------------- figures


def _learning_curves(run: RunFile, out_dir: Path, written: list[Path]) -> None:
    names = [n for n in run.metrics if n.startswith(_SPLITS) and "/" not in n]
    if not names:
        return
    panels: dict[str, list[str]] = {"loss": [], "accuracy": [], "other": []}
    for n in names:
        key = "loss" if "loss" in n else "accuracy" if "acc" in n else "other"
        panels[key].append(n)
    panels = {k: v for k, v in panels.items() if v}
    fig = _new_figure(5.2 * len(panels), 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (kind, members) in zip(axes, panels.items()):
        top = -math.inf
        low = math.inf
        seen: dict[str, int] = defaultdict(int)
        for n in sorted(members, key=lambda m: (_SPLITS.index(m.split("_")[0] + "_"), m)):
            steps, values = run.metric_steps(n), run.metric(n)
            # One colour per split across panels; further metrics of a split get new dashes.
            split = n.split("_")[0] + "_"
            style = ("-", "--", ":", "-.")[seen[split] % 4]
            seen[split] += 1
            ax.plot(
                steps,
                values,
                color=_SPLIT_COLORS[split],
                ls=style,
                marker="o" if len(values) < 30 else None,
                ms=3,
                label=n,
            )
            finite = values[np.isfinite(values)]
            if len(finite):
                top, low = max(top, float(finite.max())), min(low, float(finite.min()))
        if kind == "loss":
            ylabel = "loss"
            if low > 0 and top / low > 50:
                # Losses spanning decades are unreadable on a linear axis.
                ax.set_yscale("log")
        elif kind == "accuracy":
            ylabel = "accuracy (%)" if top > 1.0 else "accuracy (fraction)"
        else:
            ylabel = "value"
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{kind.capitalize()} vs training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{run.name}: learning curves")
    _save(fig, out_dir, "learning_curves.png", written)


def _layer_metrics(run: RunFile, out_dir: Path, written: list[Path]) -> None:
    by_name: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for n in run.metrics:
        m = _LAYER_METRIC.match(n)
        if m:
            by_name[m.group(2)].append((int(m.group(1)), n))
    if not by_name:
        return
    cols = min(3, len(by_name))
    rows = math.ceil(len(by_name) / cols)
    fig = _new_figure(5.0 * cols, 3.6 * rows)
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
    _save(fig, out_dir, "layer_metrics.png", written)


def _raster(run: RunFile, population: str, out_dir: Path, written: list[Path]) -> None:
    events = run.spikes(population)
    if len(events.steps) == 0:
        return
    step = int(events.steps[-1])
    dense = events.to_dense(step)
    n_time, n_samples, n_neurons = dense.shape
    shown = min(MAX_RASTER_SAMPLES, n_samples)
    if shown == 0:
        return
    scale, xlabel = _ms(events.dt)
    duration_s = n_time * events.dt if events.dt > 0 else float("nan")
    height = 1.0 + shown * min(2.6, 1.2 + n_neurons / 100)
    fig = _new_figure(7.5, height)
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
    _save(fig, out_dir, f"spikes_{_safe(population)}.png", written)


def _membrane(run: RunFile, name: str, out_dir: Path, written: list[Path]) -> None:
    info = run.trace_info(name)
    data = run.trace(name)
    if len(data) == 0:
        return
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
    fig = _new_figure(7.5, 4.0)
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
    _save(fig, out_dir, f"membrane_{_safe(name)}.png", written)


def _weights(run: RunFile, out_dir: Path, written: list[Path]) -> None:
    layers = run.layers_with_weights[:MAX_WEIGHT_LAYERS]
    if not layers:
        return
    fig = _new_figure(10.0, 2.9 * len(layers))
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
    _save(fig, out_dir, "weights.png", written)


def _acc_matrix(run: RunFile, out_dir: Path, written: list[Path]) -> None:
    path = "/continual/acc_matrix"
    if not run.has(path):
        return
    mat = np.asarray(run.array(path), dtype=float)
    if mat.ndim != 2 or mat.size == 0:
        return
    attrs = run.attrs_of(path)
    percent = np.nanmax(mat) > 1.0 if np.isfinite(mat).any() else False
    rows, cols = mat.shape
    fig = _new_figure(1.6 + 0.7 * cols, 1.4 + 0.6 * rows)
    ax = fig.subplots()
    img = ax.imshow(np.ma.masked_invalid(mat), cmap="viridis", vmin=0, vmax=100 if percent else 1)
    if rows * cols <= 400:
        for i in range(rows):
            for j in range(cols):
                if np.isfinite(mat[i, j]):
                    dark = mat[i, j] < (50 if percent else 0.5)
                    ax.text(
                        j,
                        i,
                        f"{mat[i, j]:.2f}" if not percent else f"{mat[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="w" if dark else "k",
                    )
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after training task")
    fig.colorbar(img, ax=ax, label="accuracy (%)" if percent else "accuracy (fraction)")
    title = "Accuracy matrix"
    parts = [f"{k} = {_fmt(attrs[k])}" for k in ("ACC", "BWT") if k in attrs]
    if parts:
        title += "\n" + ", ".join(parts)
    ax.set_title(title)
    _save(fig, out_dir, "acc_matrix.png", written)


_TASK_METRIC = re.compile(r"^task(\d+)/test_acc$")


def _task_curves(run: RunFile, out_dir: Path, written: list[Path]) -> None:
    """Per-task test accuracy against the training step (continual runs)."""
    tasks = sorted(
        (int(m.group(1)), n) for n in run.metrics if (m := _TASK_METRIC.match(n)) is not None
    )
    if not tasks:
        return
    fig = _new_figure(7.5, 4.2)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"]
    for j, name in tasks:
        y = np.asarray(run.metric(name), dtype=float)
        scale = 100.0 if np.nanmax(y) <= 1.0 else 1.0
        ax.plot(run.metric_steps(name), scale * y, marker="o", ms=3,
                color=cmap(j / max(len(tasks) - 1, 1)), label=f"task {j}")
    if "task" in run.metrics:
        # a dotted line where each new task starts
        for st in run.metric_steps("task")[:-1]:
            ax.axvline(st, color="0.8", lw=0.8, ls=":")
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{run.name}: accuracy on each task while the stream is learned")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(tasks) > 5 else 1, loc="lower left")
    _save(fig, out_dir, "task_curves.png", written)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:+.3f}" if value < 0 else f"{value:.3f}"
    return str(value)


def make_report(run_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write the PNG figures of a run file into ``out_dir``; return the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with open_run(run_path) as run:
        try:
            _learning_curves(run, out, written)
            _layer_metrics(run, out, written)
            for population in run.populations:
                _raster(run, population, out, written)
            for name in run.traces:
                if name.endswith(".mem"):
                    _membrane(run, name, out, written)
            _weights(run, out, written)
            _acc_matrix(run, out, written)
            _task_curves(run, out, written)
        except BioplausError:
            raise
        except (ValueError, LookupError, OSError) as exc:
            # The reader checked the layout; values it allows can still defeat figure code
            # (scalar trace rows, empty task metrics, names too long for a file name).
            raise BioplausError(one_line(
                f"{run_path}: report: cannot draw the figures ({type(exc).__name__}: {str(exc)[:200]})"
            )) from None
    return written


# ---------------------------------------------------------------------- text


def summary_text(run_path: str | Path) -> str:
    """A multi-line, human-readable overview of a run file (``bioplaus inspect``)."""
    with open_run(run_path) as run:
        s = run.summary()
        acc_attrs = (
            run.attrs_of("/continual/acc_matrix") if run.has("/continual/acc_matrix") else {}
        )
    lines = [
        f"run file   {s['path']}",
        f"name       {s['name']}  (seed {s['seed']}, format v{s['format_version']})",
        f"status     {s['status']}",
        f"created    {s['created']}",
    ]
    if s.get("finished"):
        lines.append(f"finished   {s['finished']}")
    if s.get("error"):
        lines.append(f"error      {s['error']}")
    if s["last_step"] is not None:
        lines.append(f"last step  {s['last_step']}")
    if s["metrics"]:
        width = max(len(n) for n in s["metrics"])
        lines.append("metrics (final value):")
        lines += [f"  {n:<{width}}  {v:.6g}" for n, v in s["metrics"].items()]
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
            extra = ""
            if p == "/continual/acc_matrix" and acc_attrs:
                extra = "  " + ", ".join(f"{k}={_fmt(v)}" for k, v in acc_attrs.items())
            lines.append(f"  {p}  {shape}{extra}")
    lines.append(f"groups     {', '.join(s['groups']) or '(none)'}")
    return "\n".join(lines)
