"""Table 1 of the CCL paper for Fashion-MNIST, MLP 784-256x5-10: BP, FA, DFA, CCL, several seeds.

One command::

    nice -n 5 python benchmarks/ccl_table.py --epochs 30 --seeds 0 1 2

runs every method from its sim (``sims/<method>_fashion_mlp.toml``) with the given epochs
and seeds at one torch thread, and prints / writes the mean ± std test accuracy (last
epoch) beside the paper's numbers. ``--spiking`` adds spiking CCL
(``sims/ccl_fashion_mlp_spiking.toml``) as a fifth row.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402
from bioplaus.config import load_config  # noqa: E402
from bioplaus.experiments import run_experiment  # noqa: E402

PAPER = {"BP": 89.58, "FA": 87.38, "DFA": 87.35, "CCL": 88.58}
SIMS = {
    "BP": "sims/bp_fashion_mlp.toml",
    "FA": "sims/fa_fashion_mlp.toml",
    "DFA": "sims/dfa_fashion_mlp.toml",
    "CCL": "sims/ccl_fashion_mlp.toml",
    "CCL (spiking)": "sims/ccl_fashion_mlp_spiking.toml",
}


def run_one(sim: str, seed: int, epochs: int | None, out_dir: Path, extra: list[str]) -> dict:
    """Train one sim with one seed; return its final test accuracy and wall time."""
    over = [f"seed={seed}", "train.report=false", "train.progress=false", "train.threads=1",
            "record.weights_every=0", "record.save_model=false", *extra]
    if epochs:
        over.append(f"train.epochs={epochs}")
    cfg = load_config(ROOT / sim, over)
    t0 = time.perf_counter()
    res = run_experiment(cfg, out=out_dir / f"{cfg.name}_s{seed}.h5", progress=False)
    return {"acc": 100.0 * res.metrics["test_acc"], "seconds": time.perf_counter() - t0,
            "epochs": cfg.train.epochs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=0, help="epochs per run (0 = each sim's own)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["BP", "FA", "DFA", "CCL"], choices=list(SIMS))
    ap.add_argument("--spiking", action="store_true", help="add spiking CCL (its own epochs)")
    ap.add_argument("--name", default="ccl_table")
    ap.add_argument("--set", action="append", default=[], help="extra KEY=VALUE for every run")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    methods = list(args.methods) + (["CCL (spiking)"] if args.spiking else [])
    rows, raw = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            epochs = None if m == "CCL (spiking)" else (args.epochs or None)
            runs = []
            for s in args.seeds:
                r = run_one(SIMS[m], s, epochs, Path(tmp), args.set)
                print(f"{m} seed {s}: {r['acc']:.2f} % ({r['epochs']} epochs, {r['seconds']:.0f} s)",
                      flush=True)
                runs.append(r)
            accs = [r["acc"] for r in runs]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            mean = statistics.mean(accs)
            paper = PAPER.get(m.split()[0])
            rows.append({
                "method": m,
                "test acc % (mean ± std)": f"{mean:.2f} ± {sd:.2f}",
                "paper": f"{paper:.2f}" if paper else "",
                "diff": f"{mean - paper:+.2f}" if paper else "",
                "seeds": len(accs),
                "epochs": runs[0]["epochs"],
                "s / run": f"{statistics.mean(r['seconds'] for r in runs):.0f}",
            })
            raw[m] = {"accs": accs, "mean": mean, "std": sd, "paper": paper,
                      "epochs": runs[0]["epochs"], "seconds": [r["seconds"] for r in runs],
                      "sim": SIMS[m]}
    cols = ["method", "test acc % (mean ± std)", "paper", "diff", "seeds", "epochs", "s / run"]
    text = (f"## CCL paper Table 1, Fashion-MNIST, MLP 784-256x5-10 (seeds {args.seeds})\n\n"
            + table(rows, cols))
    save(args.name, {"seeds": args.seeds, "results": raw}, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
