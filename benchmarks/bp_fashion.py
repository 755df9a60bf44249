"""Backprop on Fashion-MNIST, rate and spiking 784-256x5-10 MLP (the CCL paper's baseline).

Runs sims/bp_fashion_mlp.toml and sims/bp_fashion_mlp_spiking.toml for the given seeds as
one sweep (`bioplaus.sweep`, resumable, in ``--out-dir``) and prints test accuracy
(mean ± std, by `bioplaus.sweep.compare`). Paper (Kao & Hariharan 2024, Table 1): BP 89.58 %.
Run: python benchmarks/bp_fashion.py [--seeds 0 1 2] [--threads 1] [--workers 2] [--ray ADDRESS]
     python benchmarks/bp_fashion.py --quick     # digits, 1 epoch: checks the script in seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402
from benchmarks._sweep import add_sweep_args, method_table, methods_sweep, runs_by_label  # noqa: E402

SIMS = {"rate": ROOT / "sims/bp_fashion_mlp.toml", "spiking": ROOT / "sims/bp_fashion_mlp_spiking.toml"}
QUICK = ["data.dataset=digits", "train.epochs=1", "data.batch_size=64"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backends", nargs="+", default=["rate", "spiking"])
    ap.add_argument("--quick", action="store_true", help="digits, 1 epoch (a check of the script, not a result)")
    add_sweep_args(ap, str(ROOT / "runs" / "bench" / "bp_fashion"))
    args = ap.parse_args()
    common = [f"train.threads={args.threads}", *(QUICK if args.quick else [])]
    res = methods_sweep({b: (SIMS[b], []) for b in args.backends}, args.seeds, args.out_dir, common,
                        workers=args.workers, ray=args.ray)
    acc = method_table(res, "test_acc")
    runs = runs_by_label(res)
    rows, payload = [], {}
    for backend in args.backends:
        done = [r for r in runs[backend] if r["status"] == "done"]
        secs = [r["wall_s"] for r in done]
        a = acc.get(backend, {"mean": float("nan"), "std": float("nan"), "n": 0})
        epochs = 1 if args.quick else None
        rows.append({"backend": backend, "test acc %": f"{100 * a['mean']:.2f} ± {100 * a['std']:.2f}",
                     "seeds": a["n"], "epochs": epochs or "sim's", "s/run": statistics.mean(secs) if secs else "",
                     "config": SIMS[backend].name})
        payload[backend] = {"acc": [100 * r["final_test_acc"] for r in done], "seconds": secs,
                            "files": [r["file"] for r in done]}
    text = ("## Backprop, Fashion-MNIST, MLP 784-256x5-10 (paper BP: 89.58 %)\n\n"
            + table(rows, ["backend", "test acc %", "seeds", "epochs", "s/run", "config"]))
    if args.quick:
        print(text)
        print("(--quick: not saved to results/)")
        return
    save("bp_fashion", {**payload, "sweep": str(res.out)}, text)


if __name__ == "__main__":
    main()
