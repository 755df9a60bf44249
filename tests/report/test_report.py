"""Figures and text summary built from a synthetic run file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bioplaus.record import Recorder
from bioplaus.report import make_report, summary_text

T, S, N = 60, 6, 80
DT = 1e-3
THRESHOLD = 1.0


def _lif(current: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Membrane [T, S, N] and spikes of a LIF driven by ``current`` (reset by subtraction)."""
    v = np.zeros(current.shape[1:])
    mem, spk = np.zeros_like(current), np.zeros(current.shape, dtype=bool)
    for t in range(current.shape[0]):
        v = beta * v + current[t]
        spk[t] = v >= THRESHOLD
        mem[t] = v
        v = v - THRESHOLD * spk[t]
    return mem, spk


def build_run(path: Path, *, seed: int = 0) -> Path:
    """A run with learning curves, per-layer metrics, spikes, a .mem trace, weights, ACC."""
    rng = np.random.default_rng(seed)
    # kind "continual": its module registers acc_matrix (a figure of that kind).
    config = {"name": "synthetic", "kind": "continual", "rule": {"name": "ccl"}}
    with Recorder(path, config, seed=seed) as rec:
        steps = np.arange(0, 600, 5)
        for i, step in enumerate(steps):
            decay = np.exp(-step / 150)
            rec.log_metrics(
                int(step),
                train_loss=2.3 * decay + 0.1 + 0.05 * rng.random(),
                train_acc=1 - 0.9 * decay - 0.02 * rng.random(),
                **{f"layer{k}/loss": (1.5 - 0.3 * k) * decay + 0.2 for k in range(3)},
                **{f"layer{k}/goodness": (1 + k) * (1 - decay) for k in range(3)},
            )
            if i % 20 == 0:
                rec.log_metrics(
                    int(step), val_loss=2.3 * decay + 0.15, val_acc=1 - 0.9 * decay - 0.04
                )
            if i == 0:
                rec.start_swmr()
        rec.log_metrics(int(steps[-1]), test_acc=0.91)

        beta = float(np.exp(-DT / 5e-3))
        for probe_step in (100, 300, 595):
            drive = rng.gamma(2.0, 0.05, size=(1, S, N)) + rng.normal(0, 0.12, size=(T, S, N))
            mem, spikes = _lif(drive, beta)
            rec.log_spikes("hidden", probe_step, spikes, dt=DT)
            rec.log_trace(
                "hidden.mem",
                probe_step,
                mem,
                unit="a.u.",
                dt=DT,
                every=200,
                dims="time,sample,neuron",
            )
        rec.set_attrs("/traces/hidden.mem", threshold=THRESHOLD)

        w0 = rng.normal(0, 0.05, size=(100, 64))
        w1 = rng.normal(0, 0.1, size=(10, 100))
        for k in range(5):
            rec.log_weights("fc0", 120 * k, w0 * (1 + 0.4 * k) + 0.01 * k)
            rec.log_weights("fc1", 120 * k, w1 * (1 + 0.2 * k))

        acc = np.full((4, 4), np.nan)
        for i in range(4):
            for j in range(i + 1):
                acc[i, j] = 0.95 - 0.08 * (i - j)
        rec.log_array("/continual/acc_matrix", acc, ACC=0.83, BWT=-0.12)
    return path


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("report") / "synthetic.h5")


def test_make_report_writes_every_figure(run_file: Path, tmp_path: Path) -> None:
    files = make_report(run_file, tmp_path / "figs")
    names = {p.name for p in files}
    assert names == {
        "learning_curves.png",
        "layer_metrics.png",
        "spikes_hidden.png",
        "membrane_hidden.mem.png",
        "weights.png",
        "acc_matrix.png",
        "transfer.png",  # per-task forgetting of the same matrix
    }
    for p in files:
        assert p.exists()
        assert p.stat().st_size > 5_000, p
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_make_report_skips_absent_data(tmp_path: Path) -> None:
    path = tmp_path / "metrics_only.h5"
    with Recorder(path, {"name": "m"}, seed=1) as rec:
        for step in range(10):
            rec.log_metrics(step, train_loss=1.0 / (step + 1), lr=0.1)
    files = make_report(path, tmp_path / "figs")
    assert [p.name for p in files] == ["learning_curves.png"]


def test_make_report_empty_run(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    Recorder(path, {}, seed=0).close("failed", error="boom")
    assert make_report(path, tmp_path / "figs") == []
    text = summary_text(path)
    assert "failed" in text and "boom" in text


def test_summary_text(run_file: Path) -> None:
    text = summary_text(run_file)
    assert "synthetic" in text
    assert "status     done" in text
    assert "train_loss" in text and "layer2/goodness" in text
    assert "hidden" in text and "hidden.mem" in text
    assert "/continual/acc_matrix" in text and "BWT=-0.120" in text
    assert len(text.splitlines()) > 10


def test_make_report_on_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        make_report(tmp_path / "nope.h5", tmp_path / "figs")


def test_task_curves_for_continual_runs(tmp_path: Path) -> None:
    path = tmp_path / "cl.h5"
    with Recorder(path, {"name": "cl", "kind": "continual"}, seed=0) as rec:
        for i in range(3):
            step = 100 * i
            rec.log_metrics(step, task=float(i), **{f"task{j}/test_acc": (0.9 if j <= i else 0.1) for j in range(3)})
    files = make_report(path, tmp_path / "figs")
    names = [p.name for p in files]
    assert "task_curves.png" in names
    assert (tmp_path / "figs" / "task_curves.png").stat().st_size > 5_000


# ---------------------------------------------------------------------- fixed defects


def _axes_of(fig_fn, run_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> list:
    """The axes of the figure ``fig_fn`` draws (captured before the figure is saved)."""
    from bioplaus.record import open_run
    from bioplaus.report import kit as report

    seen: list = []

    def keep(fig, out_dir, name):  # noqa: ANN001, ANN202
        seen.extend(fig.axes)
        return [out_dir / name]

    monkeypatch.setattr(report, "save_figure", keep)
    out.mkdir(parents=True, exist_ok=True)
    with open_run(run_path) as run:
        assert fig_fn(run, out)
    return seen


def test_one_point_series_has_a_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bioplaus.report import kit as report

    path = tmp_path / "short.h5"
    with Recorder(path, {"name": "short"}, seed=0) as rec:
        rec.log_metrics(20, **{"layer0/alignment": 0.1, "layer1/alignment": 0.2}, lr=0.1)
    for fn in (report.layer_metrics, report.learning_curves):
        axes = _axes_of(fn, path, tmp_path / "figs", monkeypatch)
        lines = [ln for ax in axes for ln in ax.get_lines()]
        assert lines and all(ln.get_marker() not in (None, "", "None") for ln in lines), fn.__name__


def test_no_two_lines_of_a_panel_look_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from bioplaus.metrics import Metric
    from bioplaus.report import kit as report

    # as ccl_ae declares them: the local loss in the loss panel
    declared = [Metric(n, "min", panel="loss").to_json()
                for n in ("train_loss", "train_local_loss", "train_loss_epoch", "val_loss")]
    path = tmp_path / "losses.h5"
    with Recorder(path, {"name": "losses"}, seed=0, meta={"declared_metrics": json.dumps(declared)}) as rec:
        for step in range(0, 200, 5):
            rec.log_metrics(step, train_loss=1.0 / (step + 1), train_local_loss=2.0 / (step + 1))
            if step % 50 == 0:
                rec.log_metrics(step, train_loss_epoch=1.0 / (step + 2), val_loss=1.5 / (step + 2))
    axes = _axes_of(report.learning_curves, path, tmp_path / "figs", monkeypatch)
    (loss,) = [ax for ax in axes if ax.get_title() == "loss"]
    looks = [(ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in loss.get_lines()]
    assert len(looks) == 4 and len(set(looks)) == 4, looks
    # a family shares its colour: the train split is one colour, val another
    colors = {ln.get_label(): ln.get_color() for ln in loss.get_lines()}
    assert colors["train_loss"] == colors["train_loss_epoch"] == colors["train_local_loss"] != colors["val_loss"]


def test_membrane_shows_threshold_and_spikes(run_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bioplaus.report import kit as report

    (ax,) = _axes_of(report.membrane, run_file, tmp_path / "figs", monkeypatch)
    lines = ax.get_lines()
    flat = [ln for ln in lines if len(set(np.asarray(ln.get_ydata(), dtype=float))) == 1 and ln.get_linestyle() == "--"]
    assert any(float(ln.get_ydata()[0]) == THRESHOLD for ln in flat), "no threshold line"
    spikes = [ln for ln in lines if ln.get_marker() == "^" and ln.get_linestyle() == "None" and len(ln.get_xdata())]
    assert spikes, "no spike marks"
    assert any("spike" in t.get_text() for t in ax.get_legend().get_texts())


def test_raster_rows_name_the_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bioplaus.report import kit as report

    path = tmp_path / "labels.h5"
    rng = np.random.default_rng(0)
    with Recorder(path, {"name": "labels"}, seed=0, meta={"classes": ["cat", "dog", "2"]}) as rec:
        rec.log_spikes("hidden", 5, rng.random((10, 3, 8)) < 0.3, dt=DT)
        rec.set_attrs("/spikes/hidden", labels=np.array([1, 0, 2]))
    axes = _axes_of(report.spikes, path, tmp_path / "figs", monkeypatch)
    titles = [ax.get_title(loc="left") for ax in axes]
    assert titles == ["sample 0 (class 1: dog)", "sample 1 (class 0: cat)", "sample 2 (class 2)"]


def test_weights_titles_do_not_overlap(tmp_path: Path) -> None:
    """Six layers (CCL's MLP): the suptitle above every subplot title, tick labels apart."""
    from matplotlib.figure import Figure

    from bioplaus.report import kit as report

    run_file = tmp_path / "six.h5"
    rng = np.random.default_rng(0)
    with Recorder(run_file, {"name": "six_layers"}, seed=0) as rec:
        for k in range(6):
            for step in (0, 40):
                rec.log_weights(f"layer{k}", step, rng.uniform(-0.0834, 0.0834, size=(64, 64)) * (1 + step / 100))

    fig: list[Figure] = []
    real_save = report.save_figure

    def keep(f: Figure, out_dir: Path, name: str) -> list[Path]:
        fig.append(f)
        return real_save(f, out_dir, name)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "save_figure", keep)
        (tmp_path / "figs").mkdir()
        from bioplaus.record import open_run

        with open_run(run_file) as run:
            report.weights(run, tmp_path / "figs")
    (f,) = fig
    renderer = f.canvas.get_renderer()
    top = f._suptitle.get_window_extent(renderer)
    for ax in f.axes:
        title = ax.title.get_window_extent(renderer)
        assert title.y1 <= top.y0 + 1, (ax.get_title(), title, top)
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in labels]
        for a, b in zip(boxes, boxes[1:]):
            assert a.x1 < b.x0, "tick labels run together"


def test_hostile_names_and_rows_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "odd.h5"
    with Recorder(path, {"name": "odd", "kind": "continual"}, seed=0) as rec:
        rec.log_metrics(1, **{"layer" + "1" * 5000 + "/loss": 1.0, "task0/test_acc": float("nan")})
        rec.log_spikes("p" * 300, 1, np.ones((4, 1, 3), dtype=bool), dt=DT)
        rec.log_trace("x.mem", 1, np.float32(0.5), unit="1", dt=None, every=1, dims="record")
    names = [p.name for p in make_report(path, tmp_path / "figs")]
    assert "layer_metrics.png" not in names and "task_curves.png" not in names
    assert not any(n.startswith("membrane_") for n in names)
    (raster,) = [n for n in names if n.startswith("spikes_")]
    assert len(raster) < 100


def test_epoch_line_width() -> None:
    from bioplaus.config import load_config
    from bioplaus.context import Progress
    from bioplaus.registry import EXPERIMENTS

    cfg = load_config({"name": "w", "data": {"dataset": "digits", "evaluate_on": "test"}, "rule": {"name": "backprop"}})
    declared = EXPERIMENTS.get(cfg.kind).declared_metrics(cfg)
    values = {
        "train_loss_epoch": 0.012042318, "train_acc_epoch": 0.99923845,
        "val_loss": 0.19848412, "val_acc": 0.9375, "test_loss": 0.16086314, "test_acc": 0.95543175,
    }
    line = Progress(10, False, "w", declared).format_line("epoch 115", values, 1234.56)
    assert len(line) <= 100, line
    assert "test_acc=0.9554" in line  # the headline, 4 significant digits
    for split_loss in ("train_loss_epoch=", "val_loss=", "test_loss="):
        assert split_loss in line, line
