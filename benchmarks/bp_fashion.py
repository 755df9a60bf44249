"""Backprop on Fashion-MNIST, rate and spiking 784-256x5-10 MLP (the CCL paper's baseline).

Runs sims/bp_fashion_mlp.toml and sims/bp_fashion_mlp_spiking.toml for the given seeds and
prints test accuracy (mean ± std). Paper (Kao & Hariharan 2024, Table 1): BP 89.58 %.
Run: python benchmarks/bp_fashion.py [--seeds 0 1 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402
from bioplaus.config import load_config  # noqa: E402
from bioplaus.experiments import run_experiment  # noqa: E402

SIMS = {"rate": ROOT / "sims/bp_fashion_mlp.toml", "spiking": ROOT / "sims/bp_fashion_mlp_spiking.toml"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backends", nargs="+", default=["rate", "spiking"])
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench"))
    args = ap.parse_args()
    rows, payload = [], {}
    for backend in args.backends:
        accs, secs = [], []
        for seed in args.seeds:
            cfg = load_config(SIMS[backend], [f"seed={seed}", f"train.threads={args.threads}"])
            cfg.train.report = False
            res = run_experiment(cfg, out=Path(args.out) / f"{cfg.name}_s{seed}.h5", progress=False)
            accs.append(100 * res.metrics["test_acc"])
            secs.append(res.seconds)
            print(f"{backend} seed {seed}: test acc {accs[-1]:.2f} % in {res.seconds:.0f} s", flush=True)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rows.append({"backend": backend, "test acc %": f"{statistics.mean(accs):.2f} ± {sd:.2f}",
                     "seeds": len(accs), "epochs": cfg.train.epochs, "s/run": statistics.mean(secs),
                     "config": SIMS[backend].name})
        payload[backend] = {"acc": accs, "seconds": secs, "epochs": cfg.train.epochs}
    text = ("## Backprop, Fashion-MNIST, MLP 784-256x5-10 (paper BP: 89.58 %)\n\n"
            + table(rows, ["backend", "test acc %", "seeds", "epochs", "s/run", "config"]))
    save("bp_fashion", payload, text)


if __name__ == "__main__":
    main()
