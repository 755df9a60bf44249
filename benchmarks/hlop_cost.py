"""Cost of HLOP: training time with HLOP / training time of plain fine-tuning, one process.

Both run sims/hlop_pfashion_spiking.toml (fine-tuning = the same file without its plugin)
on the whole 10-task stream, so the lateral subspaces grow as in the real run, but with
``--limit-train`` samples per task to keep it short. Training time excludes evaluation
and HLOP's diagnostics (principal angles, switched off here). Runs alternate
(ft, hlop variants, ft, ...) ``--repeat`` times and the fastest of each is kept, which
damps the noise of a shared machine.

Variants: ``faithful`` = the sim's settings (5 Hebbian iterations on every row of every
batch); ``rows128`` = Hebbian updates on 128 rows sampled from the T x B presynaptic spike
vectors; ``rows128_every2`` = that, every second step; ``rate`` = Hebbian updates on the
time-averaged presynaptic activity (B rows instead of T x B); ``code`` = the public code's
``init = "orthogonal"`` and ``projector = "hebbian"`` instead of the defaults (``faithful``
has the defaults: new neurons started off the old subspace, orthonormal projector).

Run: python benchmarks/hlop_cost.py [--T 6,20] [--limit-train 3200] [--repeat 2] [--variants ...] [--tag ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "faithful": [],
    "rows128": ["plugins.0.max_rows=128"],
    "rows128_every2": ["plugins.0.max_rows=128", "plugins.0.every=2"],
    "rate": ["plugins.0.activity=rate"],
    "code": ["plugins.0.init=orthogonal", "plugins.0.projector=hebbian"],
}


def run_once(overrides: list[str], with_hlop: bool, out: Path) -> dict[str, float]:
    from bioplaus.config import load_config
    from bioplaus.experiments import run_experiment
    from bioplaus.record import open_run

    cfg = load_config(ROOT / "sims" / "hlop_pfashion_spiking.toml", overrides)
    if not with_hlop:
        cfg.plugins = []
    res = run_experiment(cfg, out=out, progress=False)
    row: dict[str, float] = {"train_s": res.metrics["train_seconds"], "steps": float(res.steps)}
    if with_hlop:
        with open_run(out) as run:
            for k in ("hlop/hebb_seconds", "hlop/proj_seconds"):
                row[k.split("/")[1]] = float(run.metric(k)[-1])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", default="6,20", help="comma-separated time steps")
    ap.add_argument("--limit-train", type=int, default=3200)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--variants", default="faithful,rows128,rows128_every2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", default="/tmp/bioplaus_hlop_cost")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    variants = [v for v in args.variants.split(",") if v]
    rows: list[dict[str, Any]] = []
    for T in [int(t) for t in args.T.split(",")]:
        base = [
            f"network.spiking.T={T}",
            f"continual.n_tasks={args.tasks}",
            f"data.limit_train={args.limit_train}",
            "data.limit_test=100",
            f"train.threads={args.threads}",
            "train.report=false",
            "record.save_model=false",
            "plugins.0.angles=false",
            "plugins.0.record_lateral=false",
        ]
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.repeat):
            for name in ["ft", *variants]:
                t0 = time.perf_counter()
                r = run_once(base + VARIANTS.get(name, []), name != "ft", out_dir / f"{name}_T{T}.h5")
                print(f"T={T} {name}: train {r['train_s']:.1f} s (wall {time.perf_counter() - t0:.1f} s)", flush=True)
                if name not in best or r["train_s"] < best[name]["train_s"]:
                    best[name] = r
        ft = best["ft"]["train_s"]
        for name in ["ft", *variants]:
            r = best[name]
            rows.append(
                {
                    "T": T,
                    "method": "fine-tuning" if name == "ft" else f"HLOP {name}",
                    "steps": int(r["steps"]),
                    "train_s": r["train_s"],
                    "ms_per_step": 1000 * r["train_s"] / max(r["steps"], 1),
                    "hebbian_s": r.get("hebb_seconds", 0.0),
                    "projection_s": r.get("proj_seconds", 0.0),
                    "ratio_vs_ft": r["train_s"] / ft,
                }
            )
        text = (
            f"HLOP cost, spiking 784-800-800-10, {args.tasks} permuted Fashion-MNIST tasks x "
            f"{args.limit_train} samples, batch 64, {args.threads} thread(s), best of {args.repeat}\n\n"
            + table(rows, ["T", "method", "steps", "train_s", "ms_per_step", "hebbian_s", "projection_s", "ratio_vs_ft"])
        )
        save("hlop_cost" + (f"_{args.tag}" if args.tag else ""), {"args": vars(args), "rows": rows}, text)


if __name__ == "__main__":
    main()
