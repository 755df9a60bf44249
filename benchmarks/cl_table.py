"""Continual-learning table: HLOP against the baselines its paper and CL libraries compare with.

Methods (every one on the same stream, net, optimiser and seeds; one sweep per scenario
through `bioplaus.sweep`, ACC from `bioplaus.sweep.compare`):

  ft         fine-tuning, no protection (lower bound)
  joint      multitask training, the batches of all tasks interleaved (upper bound)
  ewc        online EWC, λ = 100 (sims/ewc_pfashion_spiking.toml)
  si         synaptic intelligence, c = 0.1, ξ = 1e-3
  lwf        learning without forgetting, λ = 1, T = 2
  replay_s   experience replay, reservoir buffer of --buffers[0] samples, one replayed sample per current one
  replay_l   the same with --buffers[1] samples
  agem       A-GEM, 250 samples per task, reference batch 256
  gpm        GPM, energy thresholds [0.95, 0.99, 0.99] (its permuted-MNIST setting), 300 samples
  proj       exact projection with HLOP's dimensions (sims/proj_pfashion_spiking.toml)
  hlop       HLOP with its defaults (sims/hlop_pfashion_*.toml)

Scenarios (``--scenarios``): ``permuted`` (domain-incremental: one head, no task id) and
``class`` (split Fashion-MNIST, 5 tasks x 2 classes, class-incremental: one head over the
10 classes, no task id).

The default is a REDUCED setting that runs in ~20 min on one shared CPU core: rate MLP
784-800-800-10 (ReLU, backprop, SGD lr 0.1, batch 64), 5 tasks, the first
``--limit-train`` (3000) training images per task, 1 epoch per task, 1000 test images per
task, seeds 0 and 1. ``--full`` runs the issue's setting instead: 10 permuted tasks on the
spiking 784-800-800-10 (BPTT, T = 6) and the rate MLP, all 60 000 training images per task,
2000 test images per task, split Fashion-MNIST 5 x 2 with all its images, seeds 0 and 1.

Run:  python benchmarks/cl_table.py                 # the reduced setting -> results/cl_table.{md,json}
      python benchmarks/cl_table.py --full          # the issue's setting (hours) -> results/cl_table_full.*
      python benchmarks/cl_table.py --quick         # 2 tasks of digits: a check of the script, nothing saved
      options: --methods a,b,... --scenarios permuted,class --seeds 0 1 --tasks N --limit-train N
               --limit-test N --epochs-per-task N --buffers S L --set key=value --workers K --out-dir DIR
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402
from benchmarks._sweep import add_sweep_args, method_table, methods_sweep, runs_by_label  # noqa: E402

HLOP = ('{name="hlop", neurons_first=[80, 200, 100], neurons_per_task=[70, 70, 70], decay_every=3, decay=20, '
        'lr=[0.001, 0.01, 0.01], momentum=0.9, iterations=5}')
PROJ = ('{name="projection", mode="dims", neurons_first=[80, 200, 100], neurons_per_task=[70, 70, 70], '
        'decay_every=3, decay=20, samples=300}')


def methods(buffers: tuple[int, int]) -> dict[str, tuple[str, list[str]]]:
    """``{method: (label, overrides)}`` on top of the base sim."""
    s, big = buffers
    return {
        "ft": ("fine-tuning", []),
        "joint": ("joint (multitask)", ["continual.mode=joint"]),
        "ewc": ("EWC", ['plugins=[{name="ewc", lam=100.0, samples=200}]']),
        "si": ("SI", ['plugins=[{name="si", c=0.1, xi=0.001}]']),
        "lwf": ("LwF", ['plugins=[{name="lwf", lam=1.0, temperature=2.0}]']),
        "replay_s": (f"replay, {s} samples", [f'plugins=[{{name="replay", size={s}, ratio=1.0}}]']),
        "replay_l": (f"replay, {big} samples", [f'plugins=[{{name="replay", size={big}, ratio=1.0}}]']),
        "agem": ("A-GEM", ['plugins=[{name="agem", per_task=250, sample_size=256}]']),
        "gpm": ("GPM", ['plugins=[{name="gpm", threshold=[0.95, 0.99, 0.99], samples=300}]']),
        "proj": ("exact projection", [f"plugins=[{PROJ}]"]),
        "hlop": ("HLOP", [f"plugins=[{HLOP}]"]),
    }


SCENARIOS = {
    "permuted": ("permuted Fashion-MNIST (domain-incremental)", ["continual.stream=permuted"]),
    "class": ("split Fashion-MNIST 5 x 2 (class-incremental)",
              ["continual.stream=split", "continual.n_tasks=5", "continual.classes_per_task=2",
               "continual.setting=class"]),
}
BASE = {"rate": ROOT / "sims" / "ft_pfashion_rate.toml", "spiking": ROOT / "sims" / "ft_pfashion_spiking.toml"}
QUICK = ["data.dataset=digits", "continual.n_tasks=2", "data.limit_train=256", "data.limit_test=100",
         "network.hidden=[32]"]


def pts(v: float) -> float:
    return 100.0 * v if math.isfinite(v) else float("nan")


def sd(xs: list[float]) -> float:
    v = np.asarray(xs, dtype=float)
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def row(method: str, label: str, runs: list[dict[str, Any]], acc: dict[str, Any] | None, out: Path) -> dict[str, Any]:
    """One table row: ACC from compare; BWT, FWT, forgetting (mean ± sd over seeds) from the index."""
    from bioplaus.record import open_run

    done = [r for r in runs if r["status"] == "done"]
    with open_run(out / done[0]["file"]) as run:
        R = np.asarray(run.array("/continual/acc_matrix"), dtype=float)
        attrs = run.attrs_of("/continual/acc_matrix")
    vals = {k: [pts(r[f"final_{k}"]) for r in done] for k in ("BWT", "FWT", "forgetting")}
    return {
        "method": method,
        "label": label,
        "seeds": len(done),
        "ACC": pts(acc["mean"]) if acc else float("nan"),
        "ACC_sd": pts(acc["std"]) if acc else float("nan"),
        **{k: float(np.mean(v)) if v else float("nan") for k, v in vals.items()},
        **{f"{k}_sd": sd(v) for k, v in vals.items()},
        "train_s": statistics.mean(r["final_train_seconds"] for r in done),
        "acc_matrix_seed0": (100 * R).round(2).tolist(),
        "forgetting_per_task_seed0": [None if not math.isfinite(v) else round(100 * v, 2)
                                      for v in np.asarray(attrs.get("forgetting_per_task", []), dtype=float)],
        "initial_seed0": (100 * np.asarray(attrs["initial"], dtype=float)).round(2).tolist(),
        "run_file": str(out / done[0]["file"]),
    }


def fmt_pm(m: float, s: float) -> str:
    return "–" if not math.isfinite(m) else f"{m:.2f} ± {s:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(methods((200, 1000))))
    ap.add_argument("--scenarios", default="permuted,class")
    ap.add_argument("--full", action="store_true", help="the issue's setting (10 permuted tasks, spiking and rate)")
    ap.add_argument("--backends", default="", help="rate,spiking (default: rate; --full: both)")
    ap.add_argument("--tasks", type=int, default=0, help="permuted tasks (default 5; --full 10)")
    ap.add_argument("--limit-train", type=int, default=-1, help="training images per task (default 3000; --full all)")
    ap.add_argument("--limit-test", type=int, default=-1, help="test images per task (default 1000; --full 2000)")
    ap.add_argument("--epochs-per-task", type=int, default=1)
    ap.add_argument("--buffers", type=int, nargs=2, default=[200, 1000], help="the two replay buffer sizes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    ap.add_argument("--quick", action="store_true", help="2 tasks of digits: a check of the script, nothing saved")
    add_sweep_args(ap, "runs/bench_cl_table")
    args = ap.parse_args()
    tasks = args.tasks or (10 if args.full else 5)
    limit_train = args.limit_train if args.limit_train >= 0 else (0 if args.full else 3000)
    limit_test = args.limit_test if args.limit_test >= 0 else (2000 if args.full else 1000)
    backends = [b for b in (args.backends or ("rate,spiking" if args.full else "rate")).split(",") if b]
    common = [f"train.threads={args.threads}", "train.report=false", "train.log_every=50",
              f"continual.n_tasks={tasks}", f"continual.epochs_per_task={args.epochs_per_task}",
              f"data.limit_train={limit_train}", f"data.limit_test={limit_test}", *args.set]
    if args.quick:
        common += QUICK
    table_methods = methods((args.buffers[0], args.buffers[1]))
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in chosen if m not in table_methods] + [b for b in backends if b not in BASE]
    bad += [s for s in args.scenarios.split(",") if s not in SCENARIOS]
    if bad:
        ap.error(f"unknown {bad}; methods: {', '.join(table_methods)}; backends: rate, spiking; "
                 f"scenarios: {', '.join(SCENARIOS)}")
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for scen in args.scenarios.split(","):
        title, scen_over = SCENARIOS[scen]
        for backend in backends:
            ms = {table_methods[m][0]: (BASE[backend], [*scen_over, *table_methods[m][1]]) for m in chosen}
            res = methods_sweep(ms, args.seeds, Path(args.out_dir) / f"{scen}_{backend}", common,
                                workers=args.workers, ray=args.ray)
            acc = method_table(res, "ACC")
            runs = runs_by_label(res)
            for m in chosen:
                label = table_methods[m][0]
                if any(r["status"] == "done" for r in runs.get(label, [])):
                    rows.append({"scenario": scen, "backend": backend,
                                 **row(m, label, runs[label], acc.get(label), res.out)})
    wall = time.perf_counter() - t0
    setting = (f"{tasks} permuted tasks / split 5 x 2, {args.epochs_per_task} epoch(s) per task, "
               f"{'all' if not limit_train else limit_train} training and {limit_test or 'all'} test images per task, "
               f"net 784-800-800-10 ({', '.join(backends)}), SGD lr 0.1, batch 64, seeds {args.seeds}")
    parts = [f"Continual-learning table ({'full' if args.full else 'REDUCED'} setting): {setting}. "
             f"ACC / BWT / FWT / forgetting in points, mean ± sd over seeds; FWT against the accuracy of the "
             f"untrained (random-init) net on each task. Wall time {wall / 60:.1f} min.\n"]
    for scen in args.scenarios.split(","):
        for backend in backends:
            sub = [r for r in rows if r["scenario"] == scen and r["backend"] == backend]
            if not sub:
                continue
            parts.append(f"\n### {SCENARIOS[scen][0]}, {backend}\n")
            lines = ["| method | seeds | ACC | BWT | FWT | forgetting | train s |", "|---|---|---|---|---|---|---|"]
            for r in sub:
                lines.append(f"| {r['label']} | {r['seeds']} | {fmt_pm(r['ACC'], r['ACC_sd'])} | "
                             f"{fmt_pm(r['BWT'], r['BWT_sd'])} | {fmt_pm(r['FWT'], r['FWT_sd'])} | "
                             f"{fmt_pm(r['forgetting'], r['forgetting_sd'])} | {r['train_s']:.0f} |")
            parts.append("\n".join(lines))
    text = "\n".join(parts)
    if args.quick:
        print(text + "\n\n(--quick: not saved to results/)")
        print(table(rows, ["scenario", "label", "ACC", "BWT"]))
        return
    name = "cl_table" + ("_full" if args.full else "") + (f"_{args.tag}" if args.tag else "")
    save(name, {"overrides": common, "full": args.full, "backends": backends, "rows": rows, "wall_s": wall}, text)


if __name__ == "__main__":
    main()
