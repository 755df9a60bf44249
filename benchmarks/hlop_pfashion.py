"""Continual learning on permuted Fashion-MNIST: HLOP against its baselines, side by side.

Every method runs its sim file (``sims/<method>_pfashion_<backend>.toml``) with the same
overrides; the methods (x ``--seeds``) are one sweep (`bioplaus.sweep`: the keys on which
the sims differ are zipped axes), run one after another in this process by default
(``--workers 1``: the time ratios are measured side by side) and written to ``--out-dir``
(run files with the accuracy matrix and per-task curves, plus the index; a benchmark started
again resumes). The table gives ACC (mean over seeds, by `bioplaus.sweep.compare`), BWT
and forgetting in points (percent), the training time (evaluation excluded) and its ratio
to fine-tuning on the same backend and rule.

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
      python benchmarks/hlop_pfashion.py --quick              # 2 permuted-digits tasks: a check, nothing saved
      options: --limit-train N (samples per task) --limit-test N --tasks N --epochs-per-task N
               --T N --threads N --seeds N ... --workers K --ray ADDRESS --out-dir DIR
               --set key=value (any config override, repeatable)
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402
from benchmarks._sweep import add_sweep_args, method_table, methods_sweep, runs_by_label  # noqa: E402

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
QUICK = ["data.dataset=digits", "continual.n_tasks=2", "data.limit_train=256", "data.limit_test=100"]


def pts(v: float) -> float:
    return 100.0 * v if math.isfinite(v) else float("nan")


def method_row(method: str, runs: list[dict[str, Any]], acc: dict[str, Any] | None, out: Path) -> dict[str, Any]:
    """The table row of one method: ACC from compare, the rest from the index and the run files."""
    from bioplaus.neurons import neuron_model
    from bioplaus.record import open_run

    done = [r for r in runs if r["status"] == "done"]
    with open_run(out / done[0]["file"]) as run:
        cfg = run.config
        R = np.asarray(run.array("/continual/acc_matrix"), dtype=float)
    mean = lambda k: statistics.mean(r[k] for r in done)  # noqa: E731
    return {
        "method": method,
        "label": LABELS.get(method, method),
        "sim": f"sims/{SIMS[method]}.toml",
        "backend": cfg["network"]["backend"],
        "rule": cfg["rule"]["name"],
        "T": cfg["network"]["spiking"]["T"] if neuron_model(cfg["network"]["backend"]).temporal else None,
        "epochs_per_task": cfg["continual"]["epochs_per_task"],
        "seeds": len(done),
        "ACC": pts(acc["mean"]) if acc else float("nan"),
        "ACC_sd": pts(acc["std"]) if acc else float("nan"),
        "BWT": pts(mean("final_BWT")),
        "forgetting": pts(mean("final_forgetting")),
        "train_s": mean("final_train_seconds"),
        "eval_s": mean("final_eval_seconds"),
        "wall_s": mean("wall_s"),
        "acc_matrix": (100 * R).round(2).tolist(),  # the first seed's
        "run_file": str(out / done[0]["file"]),
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
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    ap.add_argument("--quick", action="store_true", help="2 permuted-digits tasks: a check of the script, nothing saved")
    add_sweep_args(ap, "runs/bench_hlop_pfashion")
    args = ap.parse_args()
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
    if args.quick:
        overrides += [*QUICK, "train.report=false"]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in SIMS]
    if unknown:
        ap.error(f"unknown methods {unknown}; valid: {', '.join(SIMS)}")
    name = "hlop_pfashion" + (f"_{args.tag}" if args.tag else "")
    res = methods_sweep({m: (ROOT / "sims" / f"{SIMS[m]}.toml", []) for m in methods}, args.seeds,
                        args.out_dir, overrides, workers=args.workers, ray=args.ray)
    acc = method_table(res, "ACC")
    runs = runs_by_label(res)
    rows = [method_row(m, runs[m], acc.get(m), res.out) for m in methods if any(r["status"] == "done" for r in runs[m])]
    ft = {r["backend"] + r["rule"]: r["train_s"] for r in rows if r["method"].startswith("ft")}
    for r in rows:
        base = ft.get(r["backend"] + r["rule"])
        r["time_vs_ft"] = r["train_s"] / base if base else float("nan")
    cols = ["label", "backend", "rule", "seeds", "ACC", "BWT", "forgetting", "train_s", "time_vs_ft"]
    text = (
        f"Permuted Fashion-MNIST, {len(rows[0]['acc_matrix'][0])} tasks x {rows[0]['epochs_per_task']} "
        f"epochs; ACC/BWT/forgetting in points (mean over seeds {args.seeds}); train_s excludes evaluation; "
        f"overrides: {' '.join(overrides)}\n\n" + table(rows, cols)
    )
    if args.quick:
        print(text + "\n(--quick: not saved to results/)")
        return
    save(name, {"overrides": overrides, "rows": rows, "sweep": str(res.out)}, text)


if __name__ == "__main__":
    main()
