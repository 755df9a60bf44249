"""Continual learning on permuted Fashion-MNIST: HLOP against its baselines, side by side.

Every method runs its sim file (``sims/<method>_pfashion_<backend>.toml``) in this one
process, in order, with the same overrides; each writes its run file (accuracy matrix,
per-task curves) under ``--out-dir``. The table gives ACC, BWT and forgetting in points
(percent), the training time (evaluation excluded) and its ratio to fine-tuning.

Methods (``--methods``, comma separated):
  ft     fine-tuning, no protection (lower bound)        sims/ft_pfashion_spiking.toml
  ewc    online EWC                                       sims/ewc_pfashion_spiking.toml
  proj   exact projection, SVD of stored activity         sims/proj_pfashion_spiking.toml
  hlop   HLOP (Hebbian lateral neurons)                   sims/hlop_pfashion_spiking.toml
  joint  joint multitask training (upper bound)           sims/joint_pfashion_spiking.toml
  hlop_rate, ft_rate, joint_rate    the rate-backend twins (sims/*_pfashion_rate.toml)
  hlop_fa, ft_fa                    HLOP / fine-tuning with feedback alignment (rate)

Run:  python benchmarks/hlop_pfashion.py                      # the five spiking methods
      python benchmarks/hlop_pfashion.py --methods hlop_rate,ft_rate,hlop_fa,ft_fa --tag local
      python benchmarks/hlop_pfashion.py --methods hlop --epochs-per-task 2 --limit-test 2000 --tag hlop_e2
      options: --limit-train N (samples per task) --limit-test N --tasks N --epochs-per-task N
               --T N --threads N
               --set key=value (any config override, repeatable)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402

SIMS = {
    "ft": "ft_pfashion_spiking",
    "ewc": "ewc_pfashion_spiking",
    "proj": "proj_pfashion_spiking",
    "hlop": "hlop_pfashion_spiking",
    "joint": "joint_pfashion_spiking",
    "hlop_rate": "hlop_pfashion_rate",
    "ft_rate": "ft_pfashion_rate",
    "joint_rate": "joint_pfashion_rate",
    "hlop_fa": "hlop_pfashion_fa",
    "ft_fa": "ft_pfashion_fa",
}
LABELS = {
    "ft": "fine-tuning",
    "ewc": "EWC",
    "proj": "exact projection",
    "hlop": "HLOP",
    "joint": "multitask (joint)",
}


def run_method(method: str, overrides: list[str], out_dir: Path) -> dict[str, Any]:
    from bioplaus.config import load_config
    from bioplaus.experiments import run_experiment
    from bioplaus.record import open_run

    sim = ROOT / "sims" / f"{SIMS[method]}.toml"
    cfg = load_config(sim, overrides)
    t0 = time.perf_counter()
    res = run_experiment(cfg, out=out_dir / f"{cfg.name}.h5", progress=True)
    wall = time.perf_counter() - t0
    with open_run(res.path) as run:
        R = np.asarray(run.array("/continual/acc_matrix"), dtype=float)
    m = res.metrics
    pts = lambda v: 100.0 * v if math.isfinite(v) else float("nan")  # noqa: E731
    return {
        "method": method,
        "label": LABELS.get(method, method),
        "sim": str(sim.relative_to(ROOT)),
        "backend": cfg.network.backend,
        "rule": cfg.rule.name,
        "T": cfg.network.spiking.T if cfg.network.backend == "spiking" else None,
        "epochs_per_task": cfg.continual.epochs_per_task,
        "ACC": pts(m["ACC"]),
        "BWT": pts(m["BWT"]),
        "forgetting": pts(m["forgetting"]),
        "train_s": m["train_seconds"],
        "eval_s": m["eval_seconds"],
        "wall_s": wall,
        "acc_matrix": (100 * R).round(2).tolist(),
        "run_file": str(res.path),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="ft,ewc,proj,hlop,joint")
    ap.add_argument("--tasks", type=int, default=0, help="number of tasks (0: the sim's)")
    ap.add_argument("--epochs-per-task", type=int, default=0, help="epochs per task (0: the sim's)")
    ap.add_argument("--limit-train", type=int, default=-1, help="training samples per task (-1: the sim's)")
    ap.add_argument("--limit-test", type=int, default=-1, help="test samples per task (-1: the sim's)")
    ap.add_argument("--T", type=int, default=0, help="time steps (0: the sim's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--out-dir", default="runs/bench_hlop_pfashion")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = [f"train.threads={args.threads}", "train.report=true"]
    if args.tasks:
        overrides.append(f"continual.n_tasks={args.tasks}")
    if args.epochs_per_task:
        overrides.append(f"continual.epochs_per_task={args.epochs_per_task}")
    if args.limit_train >= 0:
        overrides.append(f"data.limit_train={args.limit_train}")
    if args.limit_test >= 0:
        overrides.append(f"data.limit_test={args.limit_test}")
    if args.T:
        overrides.append(f"network.spiking.T={args.T}")
    overrides += args.set
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in SIMS]
    if unknown:
        ap.error(f"unknown methods {unknown}; valid: {', '.join(SIMS)}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "hlop_pfashion" + (f"_{args.tag}" if args.tag else "")
    rows: list[dict[str, Any]] = []
    for method in methods:
        print(f"== {method} ({SIMS[method]})", flush=True)
        rows.append(run_method(method, overrides, out_dir))
        ft = {r["backend"] + r["rule"]: r["train_s"] for r in rows if r["method"].startswith("ft")}
        for r in rows:
            base = ft.get(r["backend"] + r["rule"])
            r["time_vs_ft"] = r["train_s"] / base if base else float("nan")
        cols = ["label", "backend", "rule", "ACC", "BWT", "forgetting", "train_s", "time_vs_ft"]
        text = (
            f"Permuted Fashion-MNIST, {len(rows[0]['acc_matrix'][0])} tasks x {rows[0]['epochs_per_task']} "
            f"epochs; ACC/BWT/forgetting in "
            f"points; train_s excludes evaluation; overrides: {' '.join(overrides)}\n\n"
            + table(rows, cols)
        )
        # Written after every method so an interrupted benchmark keeps what it measured.
        save(name, {"overrides": overrides, "rows": rows}, text)


if __name__ == "__main__":
    main()
