"""The figure kit: shared plotting helpers, the generic figures and `make_report`.

`make_report` draws the figures that the run's kind, rule and plugins name in their
``figures`` (a kind not installed here, or a file without one: `TRAINING_FIGURES`), each
only if the file holds the data it ``needs`` (`bioplaus.registry.register_figure`).
Looking the owners up imports their modules, so their own figures register (third-party
ones through entry points). The kit's figures (PNG, dpi 120):

- ``learning_curves.png``: scalar metrics against the step, one panel per declared
  ``panel`` (undeclared metrics: by the part of the name after the first ``_``).
- ``layer_metrics.png``: metrics named ``layer<k>/<name>``, one panel per name, a line per layer.
- ``spikes_<population>.png``: a raster of the last recorded step, first few samples
  (with their class when the probe labels are recorded).
- ``membrane_<trace>.png``: traces named ``*.mem``, a few neurons of the last record, the
  threshold and the spikes of those neurons.
- ``weights.png``: per layer, a histogram of the last snapshot and first vs last.

A figure skips what it cannot draw (rows without a time axis, indices of absurd size,
empty series) rather than fail; names too long for a file name are shortened with a hash.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through
pyplot, so that reporting does not touch the global backend of a caller's session.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bioplaus.config import kind_metrics
from bioplaus.errors import BioplausError, one_line
from bioplaus.metrics import Metric, find_metric
from bioplaus.record.reader import RunFile, open_run
from bioplaus.registry import (
    EXPERIMENTS,
    FIGURES,
    PLUGINS,
    RULES,
    TRAINING_FIGURES,
    FigureSpec,
    register_figure,
)

DPI = 120
MAX_RASTER_SAMPLES = 4
MAX_MEM_NEURONS = 5
MAX_WEIGHT_LAYERS = 8
MAX_NAME = 80  # characters of a population / trace name kept in a file name
SHORT_SERIES = 30  # series with fewer points get markers (a lone point is otherwise invisible)
_SPLITS = ("train_", "val_", "test_")
_SPLIT_COLORS = {"train_": "C0", "val_": "C1", "test_": "C3"}
_OTHER_COLORS = ("C2", "C4", "C5", "C6", "C8", "C9", "C7")
_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")
# Layer indices of a sane size only: int() of a 5000-digit string raises.
_LAYER_METRIC = re.compile(r"^(?:layer(\d{1,6})|(input))/(.+)$")


def new_figure(width: float, height: float) -> Figure:
    """A figure with constrained layout (keeps suptitle, titles and labels apart)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    path = out_dir / name
    fig.savefig(path, dpi=DPI)
    return [path]


def _safe(name: str) -> str:
    """A file-name fragment for a population, trace or layer name.

    Long names are cut and tagged with a hash of the full name, so that two long names
    that share a prefix still give two files and no name exceeds the file-system limit.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"
    if len(safe) > MAX_NAME:
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe = f"{safe[: MAX_NAME - 9]}-{digest}"
    return safe


def _short(text: str, width: int = 60) -> str:
    """A label that fits in a title or legend."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _few_ticks(ax: Axes, x: int = 5, y: int = 5) -> None:
    """At most a handful of ticks per axis: long tick labels must not run together."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=x))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=y))


def _ms(dt: float | None) -> tuple[float, str]:
    """Scale from time bins to the x axis, and its label."""
    if dt is None or not math.isfinite(dt) or dt <= 0:
        return 1.0, "time (bins)"
    return dt * 1e3, "time (ms)"


# ---------------------------------------------------------------------- figures


def _panel(name: str, declared: list[Metric]) -> tuple[str, Metric | None] | None:
    """Which panel of the learning curves a metric goes to (None: not plotted there)."""
    m = find_metric(declared, name)
    if m is not None:
        if m.panel:
            return m.panel, m
        if m.direction == "none":
            return None  # counters (epoch, task) and the like
    return (name.split("_", 1)[1] if "_" in name else name), m


def _split_of(name: str) -> str:
    return next((p for p in _SPLITS if name.startswith(p)), "")


def line_styles(names: list[str]) -> dict[str, dict[str, Any]]:
    """Colour, line style and marker of each line of one panel.

    The colour is the split's (train blue, val orange, test red), else one colour per
    metric; the metrics of one colour (``train_loss``, ``train_loss_epoch``,
    ``train_local_loss``) get their own line style and marker, so no two lines of a
    panel look alike (for up to 12 metrics of one colour).
    """
    styles: dict[str, dict[str, Any]] = {}
    used: dict[str, int] = defaultdict(int)
    others = 0
    split_rank = {p: i for i, p in enumerate(_SPLITS)}
    for n in sorted(names, key=lambda n: (split_rank.get(_split_of(n), len(_SPLITS)), len(n), n)):
        split = _split_of(n)
        if split:
            color = _SPLIT_COLORS[split]
        else:
            color = _OTHER_COLORS[others % len(_OTHER_COLORS)]
            others += 1
        k = used[color]
        used[color] += 1
        styles[n] = {"color": color, "ls": _STYLES[k % len(_STYLES)], "marker": _MARKERS[k % len(_MARKERS)]}
    return styles


def _plot_series(ax: Axes, steps: np.ndarray, values: np.ndarray, style: dict[str, Any], label: str,
                 dense: bool) -> Any:
    """One line; markers on short series (a lone point would be invisible) and sparse ones
    on long series (to tell the line styles apart); dense raw series (per-step values
    beside epoch means) thin, translucent and behind."""
    n = len(values)
    every = 1 if n < SHORT_SERIES else max(1, n // 12)
    (line,) = ax.plot(
        steps, values, color=style["color"], ls=style["ls"], marker=None if dense else style["marker"],
        ms=4 if n < SHORT_SERIES else 3.5, markevery=every, label=label,
        lw=0.9 if dense else 1.6, alpha=0.65 if dense else 1.0, zorder=1 if dense else 2,
    )
    return line


def _legend(ax: Axes, n: int) -> None:
    if n:
        ax.legend(fontsize=7 if n <= 6 else 6, ncol=1 if n <= 6 else 2, loc="best", framealpha=0.8)


@register_figure("learning_curves", needs=("/metrics",))
def learning_curves(run: RunFile, out_dir: Path) -> list[Path]:
    """Scalar metrics against the step, grouped into the panels they declare."""
    declared = run.declared_metrics(kind_metrics)
    panels: dict[str, list[tuple[str, Metric | None]]] = defaultdict(list)
    for n in run.metrics:
        if "/" in n:
            continue
        where = _panel(n, declared)
        if where is not None:
            panels[where[0]].append((n, where[1]))
    series = {n: (run.metric_steps(n), run.metric(n)) for members in panels.values() for n, _ in members}
    panels = {k: [(n, m) for n, m in v if len(series[n][1])] for k, v in panels.items()}
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return []
    # One step range for every panel: a metric logged once (lr at step 1) is seen in context.
    all_steps = np.concatenate([s for s, _ in series.values()]).astype(float)
    x_lo, x_hi = float(all_steps.min()), float(all_steps.max())
    pad = 0.03 * (x_hi - x_lo) if x_hi > x_lo else 1.0
    cols = 2 if len(panels) == 4 else min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = new_figure(5.2 * cols, 3.9 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (panel, members) in zip(axes, sorted(panels.items())):
        top, low = -math.inf, math.inf
        units = {m.unit for _, m in members if m is not None and m.unit}
        names = [n for n, _ in members]
        styles = line_styles(names)
        fewest = min(len(series[n][1]) for n in names)
        for n in sorted(names, key=list(styles).index):
            steps, values = series[n]
            dense = len(values) >= SHORT_SERIES and len(values) > 3 * fewest
            _plot_series(ax, steps, values, styles[n], n, dense)
            finite = values[np.isfinite(values)]
            if len(finite):
                top, low = max(top, float(finite.max())), min(low, float(finite.min()))
        directions = {m.direction for _, m in members if m is not None}
        if directions == {"min"} and low > 0 and top / low > 50:
            ax.set_yscale("log")  # losses spanning decades are unreadable on a linear axis
        ax.set_xlim(x_lo - pad, x_hi + pad)
        ax.set_xlabel("training step")
        ax.set_ylabel(_short(panel, 40) + (f" ({', '.join(sorted(units))})" if units else ""))
        ax.set_title(_short(panel), fontsize=10)
        ax.grid(alpha=0.3)
        _legend(ax, len(names))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{_short(run.name)}: learning curves")
    return save_figure(fig, out_dir, "learning_curves.png")


@register_figure("layer_metrics", needs=("/metrics",))
def layer_metrics(run: RunFile, out_dir: Path) -> list[Path]:
    """Metrics named ``layer<k>/<name>`` (and ``input/<name>``): a panel per name, a line per layer."""
    by_name: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for n in run.metrics:
        m = _LAYER_METRIC.match(n)
        if m:
            by_name[m.group(3)].append((-1 if m.group(2) else int(m.group(1)), n))
    by_name = {k: v for k, v in by_name.items() if any(len(run.metric(n)) for _, n in v)}
    by_name = {k: v for k, v in by_name.items() if any(k >= 0 for k, _ in v)}  # input/* alone: no panel
    if not by_name:
        return []
    declared = run.declared_metrics(kind_metrics)
    cols = 2 if len(by_name) == 4 else min(3, len(by_name))
    rows = math.ceil(len(by_name) / cols)
    fig = new_figure(5.0 * cols, 3.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, members) in zip(axes, sorted(by_name.items())):
        for k, full in sorted(members):
            values = run.metric(full)
            n = len(values)
            ax.plot(
                run.metric_steps(full), values, label="input" if k < 0 else f"layer {k}",
                color="k" if k < 0 else f"C{k % 10}", ls="--" if k < 0 else _STYLES[(k // 10) % len(_STYLES)],
                marker=_MARKERS[(k + 1) % len(_MARKERS)], ms=4 if n < SHORT_SERIES else 3,
                markevery=1 if n < SHORT_SERIES else max(1, n // 12),
            )
        ax.set_title(f"{_short(name, 40)} per layer", fontsize=10)
        ax.set_xlabel("training step")
        units = {m.unit for _, n in members if (m := find_metric(declared, n)) is not None and m.unit}
        ax.set_ylabel(_short(name, 40) + (f" ({', '.join(sorted(units))})" if units else ""))
        ax.grid(alpha=0.3)
        _legend(ax, len(members))
    for ax in axes[len(by_name) :]:
        ax.set_visible(False)
    fig.suptitle(f"{_short(run.name)}: per-layer metrics")
    return save_figure(fig, out_dir, "layer_metrics.png")


def probe_labels(run: RunFile, path: str) -> list[int] | None:
    """The class labels of the probe samples stored on ``path`` (attribute ``labels``)."""
    try:
        raw = run.attrs_of(path).get("labels")
    except (BioplausError, KeyError):
        return None
    if raw is None:
        return None
    try:
        arr = np.asarray(raw)
    except (ValueError, TypeError):
        return None
    if arr.ndim != 1 or arr.dtype.kind not in "iu" or len(arr) > 1_000_000:
        return None
    return [int(v) for v in arr]


def sample_name(s: int, labels: list[int] | None, classes: Any) -> str:
    """``sample s (class c)``, with the class name when the run file lists them."""
    if labels is None or not 0 <= s < len(labels):
        return f"sample {s}"
    c = labels[s]
    name = classes[c] if isinstance(classes, list) and 0 <= c < len(classes) and isinstance(classes[c], str) else ""
    name = _short(name, 24)
    return f"sample {s} (class {c}: {name})" if name and name != str(c) else f"sample {s} (class {c})"


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
    labels = probe_labels(run, f"/spikes/{population}")
    classes = run.attrs.get("classes")
    scale, xlabel = _ms(events.dt)
    duration_s = n_time * events.dt if events.dt > 0 else float("nan")
    row = min(2.6, 1.2 + n_neurons / 100)
    height = 1.0 + shown * row
    fig = new_figure(7.5, height)
    axes = fig.subplots(shown, 1, sharex=True, squeeze=False)[:, 0]
    marker_size = 30 if n_neurons <= 50 else 12 if n_neurons <= 200 else 4
    for s, ax in enumerate(axes):
        t, n = np.nonzero(dense[:, s, :])
        ax.scatter(t * scale, n, marker="|", s=marker_size, c="k", linewidths=0.8)
        rate = len(t) / (n_neurons * duration_s) if n_neurons and duration_s > 0 else float("nan")
        ax.set_ylim(-0.5, n_neurons - 0.5)
        ax.set_xlim(-0.5 * scale, (n_time - 0.5) * scale)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=max(2, int(row * 2.5)), integer=True))
        if len(t) == 0:
            ax.text(0.5, 0.5, "no spikes", transform=ax.transAxes, ha="center", va="center", color="0.5")
        ax.set_ylabel("neuron")
        ax.set_title(sample_name(s, labels, classes), fontsize=9, loc="left")
        ax.set_title(f"{len(t)} spikes, mean rate {rate:.1f} Hz", fontsize=9, loc="right")
    axes[-1].set_xlabel(xlabel)
    dt_ms = events.dt * 1e3
    fig.suptitle(
        f"{_short(population)}: spikes at step {step}\n({n_neurons} neurons, dt = {dt_ms:g} ms, "
        f"{shown} of {n_samples} samples)", fontsize=11,
    )
    return save_figure(fig, out_dir, f"spikes_{_safe(population)}.png")


_MEM_TRACE = re.compile(r"^(.*)\.mem(#\d{1,6})?$", re.DOTALL)


def _spikes_of(run: RunFile, name: str, step: int, shape: tuple[int, int]) -> np.ndarray | None:
    """Spikes [time, neuron] of sample 0 of the population that ``name`` is the membrane of."""
    m = _MEM_TRACE.match(name)
    if m is None:
        return None
    population = m.group(1) + (m.group(2) or "")
    if population not in run.populations:
        return None
    events = run.spikes(population)
    if step not in events.steps:
        return None
    dense = events.to_dense(step)
    if dense.shape[1] == 0 or (dense.shape[0], dense.shape[2]) != shape:
        return None
    return dense[:, 0, :]


def _membrane(run: RunFile, name: str, out_dir: Path) -> list[Path]:
    info = run.trace_info(name)
    data = run.trace(name)
    if len(data) == 0 or data.ndim < 2:
        return []  # no record, or one value per record: nothing over time to draw
    dims = str(info.get("dims", "")).split(",")[1:]
    record = data[-1]
    if len(dims) != record.ndim:
        dims = ["time", *(f"axis{i}" for i in range(1, record.ndim))]
    if "sample" in dims:
        record = np.take(record, 0, axis=dims.index("sample"))
        dims = [d for d in dims if d != "sample"]
    if record.ndim == 0 or record.size == 0:
        return []
    t_axis = dims.index("time") if "time" in dims else 0
    mem = np.moveaxis(record, t_axis, 0).reshape(record.shape[t_axis], -1)
    n_time, n_neurons = mem.shape
    if n_neurons == 0:
        return []
    step = int(info["steps"][-1]) if len(info["steps"]) else -1
    threshold = info.get("threshold")
    spikes = _spikes_of(run, name, step, (n_time, n_neurons))
    source = "recorded"
    if spikes is not None and threshold is None and not spikes.any():
        spikes = None  # no threshold and no spike: an integrator (a non-spiking readout)
    if spikes is None and threshold is not None:
        spikes, source = mem > float(threshold), "v > threshold"  # the potential before reset
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
    fig = new_figure(8.5, 4.2)
    ax = fig.subplots()
    for i, j in enumerate(chosen):
        color = f"C{i % 10}"
        label = f"neuron {j}"
        if spikes is not None:
            ts = np.flatnonzero(spikes[:, j])
            label += f": {len(ts)} spike{'s' if len(ts) != 1 else ''}"
            ax.plot(x[ts], mem[ts, j], ls="none", marker="^", ms=5, color=color, zorder=3)
        ax.plot(x, mem[:, j], lw=1.1, color=color, label=label, marker="." if n_time < 4 else None)
    if threshold is not None:
        ax.axhline(float(threshold), color="r", ls="--", lw=1.2, label=f"threshold {float(threshold):g}", zorder=1)
    if spikes is not None:
        ax.plot([], [], ls="none", marker="^", color="0.3", label=f"spike ({source})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"membrane potential ({unit})")
    labels = probe_labels(run, f"/traces/{name}")
    ax.set_title(
        f"{_short(name)}: step {step}, {sample_name(0, labels, run.attrs.get('classes'))}, "
        f"{len(chosen)} of {n_neurons} neurons", fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save_figure(fig, out_dir, f"membrane_{_safe(name)}.png")


@register_figure("weights", needs=("/weights",))
def weights(run: RunFile, out_dir: Path) -> list[Path]:
    """Per layer: a histogram of the last snapshot, and first vs last."""
    every = run.layers_with_weights
    layers = every[:MAX_WEIGHT_LAYERS]
    if not layers:
        return []
    fig = new_figure(10.0, 0.6 + 2.7 * len(layers))
    axes = fig.subplots(len(layers), 2, squeeze=False)
    for (ax_last, ax_cmp), layer in zip(axes, layers):
        steps, snaps = run.weights(layer)
        if len(snaps) == 0 or snaps[0].size == 0:
            ax_last.set_visible(False)
            ax_cmp.set_visible(False)
            continue
        last = snaps[-1].ravel()
        first = snaps[0].ravel()
        both = np.concatenate([first, last])
        both = both[np.isfinite(both)]
        lo, hi = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 61)
        finite = last[np.isfinite(last)]
        mean, std = (float(finite.mean()), float(finite.std())) if len(finite) else (math.nan, math.nan)
        label = _short(layer, 40)
        ax_last.hist(finite, bins=bins, color="C0")
        ax_last.set_title(f"{label}, step {int(steps[-1])}: mean {mean:.2g}, std {std:.2g}", fontsize=9)
        if len(snaps) > 1:
            ax_cmp.hist(first[np.isfinite(first)], bins=bins, histtype="step", lw=1.4, color="C7",
                        label=f"step {int(steps[0])} (first)")
            ax_cmp.hist(finite, bins=bins, histtype="step", lw=1.4, color="C0", label=f"step {int(steps[-1])} (last)")
            ax_cmp.set_ylim(top=ax_cmp.get_ylim()[1] * 1.3)  # room for the legend above the bars
            ax_cmp.legend(fontsize=7, loc="upper right", ncol=2)
            ax_cmp.set_title(f"{label}: first vs last of {len(snaps)} snapshots", fontsize=9)
        else:
            ax_cmp.text(0.5, 0.5, "one snapshot only", ha="center", va="center", transform=ax_cmp.transAxes)
            ax_cmp.set_title(f"{label}: first vs last", fontsize=9)
        for ax in (ax_last, ax_cmp):
            _few_ticks(ax)
            ax.set_ylabel("count")
        # the x label once, under the last row: the rows share what it says
    for ax in axes[-1]:
        ax.set_xlabel("weight value")
    more = f" (first {len(layers)} of {len(every)} layers)" if len(every) > len(layers) else ""
    fig.suptitle(f"{_short(run.name)}: weight distributions{more}")
    return save_figure(fig, out_dir, "weights.png")


@register_figure("spikes", needs=("/spikes",))
def spikes(run: RunFile, out_dir: Path) -> list[Path]:
    """A raster per recorded population (last recorded step, first samples)."""
    return [p for population in run.populations for p in _raster(run, population, out_dir)]


@register_figure("membrane", needs=("/traces",))
def membrane(run: RunFile, out_dir: Path) -> list[Path]:
    """Membrane traces (``*.mem``, ``*.mem#<probe>``) of a few neurons, last record."""
    return [p for name in run.traces if _MEM_TRACE.match(name) for p in _membrane(run, name, out_dir)]


def _figures_of(registry: Any, name: Any, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The ``figures`` of the kind, rule or plugin registered as ``name``; ``default`` if none is."""
    if isinstance(name, str) and name:
        try:
            return tuple(registry.get(name).figures)
        except BioplausError:
            pass  # written by a package not installed here: its own figures are skipped
    return default


def figures_for(run: RunFile) -> list[str]:
    """Names of the figures that the run's kind, rule and plugins declare, sorted.

    A file without a kind, or of a kind not installed here, gets `TRAINING_FIGURES`. A file
    written by hand with a `Recorder` names its kind in its config only.
    """
    cfg = run.config
    rule = cfg["rule"].get("name") if isinstance(cfg.get("rule"), dict) else None
    plugins = [p.get("name") for p in cfg["plugins"] if isinstance(p, dict)] if isinstance(cfg.get("plugins"), list) else []
    names = set(_figures_of(EXPERIMENTS, run.attrs.get("kind") or cfg.get("kind"), TRAINING_FIGURES))
    names.update(_figures_of(RULES, rule))
    for plugin in plugins:
        names.update(_figures_of(PLUGINS, plugin))
    return sorted(names)


def make_report(run_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write the PNG figures of a run file into ``out_dir``; return the files written.

    Draws `figures_for` the run, in name order, each only if the file holds what it needs.
    """
    out = Path(out_dir)
    written: list[Path] = []
    with open_run(run_path) as run:
        names = figures_for(run)
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            figure = FIGURES.get(name)
            if not isinstance(figure, FigureSpec):  # a bare function from an entry point
                figure = FigureSpec(figure)
            if not figure.applies(run):
                continue
            try:
                written += figure.draw(run, out) or []
            except BioplausError:
                raise
            except (ValueError, LookupError, OSError) as exc:
                # The reader checked the layout and the figures skip what they cannot draw;
                # a value nobody anticipated still gives one line, not a traceback.
                raise BioplausError(one_line(
                    f"{run_path}: report: cannot draw figure {name!r} ({type(exc).__name__}: {str(exc)[:200]})"
                )) from None
    return written
