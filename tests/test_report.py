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
    with Recorder(path, {"name": "synthetic", "rule": {"name": "ccl"}}, seed=seed) as rec:
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
    with Recorder(path, {"name": "cl"}, seed=0) as rec:
        for i in range(3):
            step = 100 * i
            rec.log_metrics(step, task=float(i), **{f"task{j}/test_acc": (0.9 if j <= i else 0.1) for j in range(3)})
    files = make_report(path, tmp_path / "figs")
    names = [p.name for p in files]
    assert "task_curves.png" in names
    assert (tmp_path / "figs" / "task_curves.png").stat().st_size > 5_000
