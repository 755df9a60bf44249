"""Recording overhead: the same spiking training with and without spike + membrane probes.

Spiking MLP 784-256-256-10 (T = 10) trained by BPTT on Fashion-MNIST (or digits with
--dataset digits). Variants, run interleaved in one process (A B C A B C ...) so drift in
machine load hits all alike: no probes; probes on every layer (spikes + membrane) every 100
steps; the same every 10 steps. The ratio is the median wall time of the variant over the
median wall time without probes.
Run: python benchmarks/recording_overhead.py [--repeat 3] [--steps 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import save, table  # noqa: E402
from bioplaus.config import load_config  # noqa: E402
from bioplaus.data import prepare_data  # noqa: E402
from bioplaus.experiments import run_experiment  # noqa: E402

BASE = {
    "name": "overhead",
    "data": {"dataset": "fashion_mnist", "batch_size": 128, "val_fraction": 0.0, "limit_test": 1000},
    "network": {"backend": "spiking", "hidden": [256, 256], "spiking": {"T": 10}},
    "rule": {"name": "backprop", "optimizer": "adam", "lr": 1e-3},
    "train": {"epochs": 1, "report": False, "progress": False},
    "record": {"weights_every": 1},
}


def variant(every: int | None, steps: int, dataset: str) -> dict:
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    d["data"] = {**BASE["data"], "dataset": dataset}
    d["train"] = {**BASE["train"], "max_steps": steps}
    d["record"] = dict(BASE["record"])
    if every:
        d["record"]["probes"] = [
            {"layers": ["all"], "variables": ["spikes", "mem"], "every": every, "samples": 4}
        ]
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--name", default="recording_overhead", help="results file name")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    names = {"no probes": None, "probes every 100 steps": 100, "probes every 10 steps": 10}
    cfgs = {k: load_config(variant(v, args.steps, args.dataset)) for k, v in names.items()}
    data = prepare_data(next(iter(cfgs.values())))  # same data object for every variant
    times: dict[str, list[float]] = {k: [] for k in names}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat + 1):  # the first round warms caches and is dropped
            for k, cfg in cfgs.items():
                out = Path(tmp) / f"{r}_{k.replace(' ', '_')}.h5"
                t0 = time.perf_counter()
                run_experiment(cfg, out=out, progress=False, data=data)
                if r:
                    times[k].append(time.perf_counter() - t0)
                sizes[k] = out.stat().st_size
    base = statistics.median(times["no probes"])
    rows = [
        {"variant": k, "median s": statistics.median(v), "ratio": statistics.median(v) / base,
         "run file kB": sizes[k] / 1024}
        for k, v in times.items()
    ]
    text = (f"## Recording overhead: spiking 784-256-256-10, T=10, {args.steps} steps, "
            f"{args.dataset}, {args.repeat} interleaved repeats\n\n"
            + table(rows, ["variant", "median s", "ratio", "run file kB"]))
    save(args.name, {"times": times, "sizes": sizes, "steps": args.steps,
                                "ratios": {r["variant"]: r["ratio"] for r in rows}}, text)


if __name__ == "__main__":
    main()
