"""NoProp-DT blocks in worker processes: wall time per epoch with 2 workers vs 1.

    python benchmarks/noprop_parallel.py [--n-train 6000] [--epochs 3] [--dataset fashion_mnist]

Both settings train the same T = 10 CPU-sized blocks (channels 16/32/64, width 128,
batch 128) from the same seed, one torch thread per worker, side by side in this process
(the median of epochs 2..E; epoch 1 carries the workers' start-up). The blocks' parameters
after training are compared: they must be identical (so is the accuracy). Prints one line
``ratio 2w/1w: <x>`` last. Writes results/noprop_parallel.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import save, table  # noqa: E402


def load(dataset: str, n_train: int) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    from bioplaus.registry import DATASETS

    ds = DATASETS.get(dataset)()
    x = torch.as_tensor(np.asarray(ds.x_train[:n_train], dtype=np.float32))
    if x.max() > 1.5:
        x = x / 255.0
    return x, torch.as_tensor(np.asarray(ds.y_train[:n_train], dtype=np.int64)), tuple(ds.shape)


def train(workers: int, x: torch.Tensor, y: torch.Tensor, shape: tuple[int, ...], epochs: int) -> dict:
    from bioplaus.config import RuleConfig
    from bioplaus.rules.base import RuleContext
    from bioplaus.rules.noprop import NoProp
    from neuro_data.loader import ArrayLoader

    opts = {"mode": "parallel", "workers": workers, "T": 10, "channels": [16, 32, 64], "width": 128}
    rule = NoProp(RuleConfig(name="noprop", optimizer="adamw", lr=1e-3, weight_decay=1e-3, options=opts))
    ctx = RuleContext(n_classes=10, input_shape=shape, seed=0)
    rule.setup(rule.build_model(ctx), ctx)
    loader = ArrayLoader(x, y, 128, shuffle=True, seed=0)
    times = []
    try:
        for _ in range(epochs):
            t0 = time.perf_counter()
            n = sum(1 for _ in rule.train_epoch(loader))
            times.append(time.perf_counter() - t0)
    finally:
        rule.close()
    params = {k: v.detach().clone() for k, v in rule.net.blocks.state_dict().items()}
    return {"times": times, "steps": n, "params": params}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--name", default="noprop_parallel")
    a = ap.parse_args()
    x, y, shape = load(a.dataset, a.n_train)
    load_before = os.getloadavg()
    res = {w: train(w, x, y, shape, a.epochs) for w in (1, 2)}
    load_after = os.getloadavg()
    same = all(torch.equal(res[1]["params"][k], res[2]["params"][k]) for k in res[1]["params"])
    rows = []
    for w in (1, 2):
        ts = res[w]["times"]
        steady = ts[1:] if len(ts) > 1 else ts
        rows.append({"workers": w, "epoch_s": statistics.median(steady), "first_epoch_s": ts[0],
                     "steps_per_epoch": res[w]["steps"]})
    ratio = rows[0]["epoch_s"] / rows[1]["epoch_s"]
    text = (
        f"## NoProp-DT, blocks in worker processes ({a.dataset}, {a.n_train} training images, T = 10, "
        f"channels 16/32/64, width 128, batch 128, 1 thread per worker)\n\n"
        + table(rows, ["workers", "epoch_s", "first_epoch_s", "steps_per_epoch"])
        + f"\n\nspeed-up 2 workers vs 1: {ratio:.2f}x; block parameters identical: {same}\n"
        f"load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} cores\n"
    )
    save(a.name, {"rows": rows, "ratio": ratio, "identical": same, "load_before": load_before,
                  "load_after": load_after, "args": vars(a)}, text)
    print(f"ratio 2w/1w: {ratio:.2f} (identical blocks: {same}, load {load_before[0]:.2f})")


if __name__ == "__main__":
    main()
