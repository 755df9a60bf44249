"""Longer checks on the real Fashion-MNIST (``python -m pytest -m slow``; about 2 minutes; seeded, so the numbers repeat on CPU: 0.853, 0.819, 0.837 when written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bioplaus.config import load_config
from bioplaus.experiments import run_experiment

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.skipif(not FMNIST.exists(), reason="Fashion-MNIST not installed (dataset-fashion-mnist)"),
]


@pytest.mark.parametrize(
    "sim,over,floor",
    [
        ("bp_fashion_mlp.toml", ["train.epochs=3"], 0.84),
        ("bp_fashion_mlp_spiking.toml", ["train.epochs=2"], 0.80),
        ("ccl_fashion_mlp.toml", ["train.epochs=3"], 0.82),
    ],
)
def test_fashion_mnist_short_runs(tmp_path: Path, sim: str, over: list[str], floor: float) -> None:
    cfg = load_config(ROOT / "sims" / sim, [*over, "data.limit_train=30000", "train.report=false"])
    res = run_experiment(cfg, out=tmp_path / "r.h5", progress=False)
    assert res.status == "done"
    assert res.metrics["test_acc"] >= floor
