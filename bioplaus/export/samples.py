"""The test samples a run was evaluated on, and the reference run of a net on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def test_samples(dataset: str, n: int, normalize: str = "unit", config: Any = None) -> tuple[torch.Tensor, np.ndarray]:
    """The first ``n`` test samples of ``dataset`` (float32, normalised as in training) and labels.

    ``config`` (an `ExperimentConfig`) gives the data table of a run (path, scale, split);
    otherwise the data set's defaults with ``normalize``.
    """
    import neuro_data
    from bioplaus.config import load_config
    from bioplaus.data import load_data

    cfg = config if config is not None else load_config({"data": {"dataset": dataset, "normalize": normalize}})
    ds = load_data(cfg)
    norm = neuro_data.Normalizer.fit(ds.x_train, cfg.data.normalize)
    x = norm(np.asarray(ds.x_test[:n], dtype=np.float32))
    return torch.from_numpy(np.array(x, dtype=np.float32)), np.array(ds.y_test[:n])


def run_test_samples(net: Any, run_path: str | Path, n: int) -> tuple[torch.Tensor, np.ndarray, dict[str, Any]]:
    """Run ``net`` on the first ``n`` test samples of the data set of ``run_path``'s config."""
    from bioplaus.config import load_config
    from bioplaus.record import open_run

    with open_run(run_path) as run:
        cfg = load_config(run.config)
    x, y = test_samples(cfg.data.dataset, n, cfg.data.normalize, cfg)
    net.eval()
    with torch.no_grad():
        logits = net(x)
    return x, y, {"logits": logits}
