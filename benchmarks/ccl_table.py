"""Table 1 of the CCL paper for Fashion-MNIST, MLP 784-256x5-10: BP, FA, DFA, CCL, several seeds.

One command::

    nice -n 5 python benchmarks/ccl_table.py --epochs 30 --seeds 0 1 2

runs every method from its sim (``sims/<method>_fashion_mlp.toml``) with the given epochs
and seeds at one torch thread as one sweep (`bioplaus.sweep`; resumable in ``--out-dir``;
``--workers K`` / ``--ray ADDRESS`` to spread it), and prints / writes the mean ± std test
accuracy (last epoch, by `bioplaus.sweep.compare`) beside the paper's numbers.
``--spiking`` adds spiking CCL (``sims/ccl_fashion_mlp_spiking.toml``, its own epochs) as a
fifth row. ``--quick`` checks the script on the digits in seconds (nothing saved).
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

PAPER = {"BP": 89.58, "FA": 87.38, "DFA": 87.35, "CCL": 88.58}
SIMS = {
    "BP": "sims/bp_fashion_mlp.toml",
    "FA": "sims/fa_fashion_mlp.toml",
    "DFA": "sims/dfa_fashion_mlp.toml",
    "CCL": "sims/ccl_fashion_mlp.toml",
    "CCL (spiking)": "sims/ccl_fashion_mlp_spiking.toml",
}
QUICK = ["data.dataset=digits", "data.batch_size=64"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=0, help="epochs per run (0 = each sim's own)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["BP", "FA", "DFA", "CCL"], choices=list(SIMS))
    ap.add_argument("--spiking", action="store_true", help="add spiking CCL (its own epochs)")
    ap.add_argument("--name", default="ccl_table")
    ap.add_argument("--set", action="append", default=[], help="extra KEY=VALUE for every run")
    ap.add_argument("--quick", action="store_true", help="digits, 1 epoch: a check of the script, nothing saved")
    add_sweep_args(ap, str(ROOT / "runs" / "bench" / "ccl_table"))
    args = ap.parse_args(argv)
    methods = list(args.methods) + (["CCL (spiking)"] if args.spiking else [])
    common = ["train.threads=1", "record.weights_every=0", "record.save_model=false", *args.set]
    if args.quick:
        common += QUICK
        args.epochs = 1
    per_method = {}
    for m in methods:
        epochs = 1 if args.quick else (None if m == "CCL (spiking)" else (args.epochs or None))
        per_method[m] = (ROOT / SIMS[m], [f"train.epochs={epochs}"] if epochs else [])
    res = methods_sweep(per_method, args.seeds, args.out_dir, common, workers=args.workers, ray=args.ray)
    acc = method_table(res, "test_acc")
    runs = runs_by_label(res)
    rows, raw = [], {}
    for m in methods:
        done = [r for r in runs[m] if r["status"] == "done"]
        if m not in acc:
            continue
        a = acc[m]
        mean, sd = 100 * a["mean"], 100 * a["std"]
        paper = PAPER.get(m.split()[0])
        epochs = per_method[m][1][0].split("=")[1] if per_method[m][1] else "sim's"
        secs = [r["wall_s"] for r in done]
        rows.append({
            "method": m,
            "test acc % (mean ± std)": f"{mean:.2f} ± {sd:.2f}",
            "paper": f"{paper:.2f}" if paper else "",
            "diff": f"{mean - paper:+.2f}" if paper else "",
            "seeds": a["n"],
            "epochs": epochs,
            "s / run": f"{statistics.mean(secs):.0f}" if secs else "",
        })
        raw[m] = {"accs": [100 * r["final_test_acc"] for r in done], "mean": mean, "std": sd, "paper": paper,
                  "epochs": epochs, "seconds": secs, "sim": SIMS[m], "files": [r["file"] for r in done]}
    cols = ["method", "test acc % (mean ± std)", "paper", "diff", "seeds", "epochs", "s / run"]
    text = (f"## CCL paper Table 1, Fashion-MNIST, MLP 784-256x5-10 (seeds {args.seeds})\n\n"
            + table(rows, cols))
    if args.quick:
        print(text + "\n(--quick: not saved to results/)")
        return 0
    save(args.name, {"seeds": args.seeds, "results": raw, "sweep": str(res.out)}, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
