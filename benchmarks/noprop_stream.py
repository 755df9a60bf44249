"""NoProp-DT on a 5-task split stream: fine-tuning vs HLOP vs EWC (ACC and BWT).

    python benchmarks/noprop_stream.py [--dataset digits] [--epochs-per-task 6] [--seeds 0]

Task-incremental split stream (5 tasks x 2 classes; logits and the blocks' softmax masked
to each task's classes), NoProp-DT with T = 3 small blocks (channels 8/16/16, width 48),
Adam lr 5e-3. Every method runs with ``continual.freeze_norm`` (the blocks' BatchNorm
layers learn on task 0 only, as in GPM: no plugin protects them). HLOP and EWC act on the
layers the rule declares; HLOP leaves out the multi-head output layers (each block's class
layer and p_out, ``protect_output = false``: with masked logits a task's gradient reaches
only its own classes' rows) and projects Adam's step (``adaptive = "project_step"``) with
lateral neuron counts per layer chosen for these widths. Writes
results/noprop_stream_<dataset>.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402

# per protected layer of a block: conv1, conv2, conv3, img_fc, z_fc, res_a, res_b, fuse1, fuse2
# (input dims 9, 72, 144, 784, 10, 48, 48, 96, 48 for digits' blocks)
COUNTS = {
    "wide": ([4, 20, 30, 25, 2, 12, 12, 16, 12], [1, 8, 12, 10, 2, 6, 6, 8, 6]),
    "narrow": ([2, 10, 15, 10, 2, 8, 8, 12, 8], [1, 5, 8, 5, 2, 4, 4, 6, 4]),
}


def config(plugin: str, dataset: str, epochs: int, seed: int, T: int, counts: str = "wide",
           freeze_norm: bool = True) -> dict:
    cfg = {
        "kind": "continual", "seed": seed,
        "data": {"dataset": dataset, "batch_size": 32, "val_fraction": 0.0, "normalize": "unit"},
        "rule": {"name": "noprop", "optimizer": "adam", "lr": 5e-3, "channels": [8, 16, 16], "width": 48, "T": T},
        "continual": {"stream": "split", "n_tasks": 5, "classes_per_task": 2, "setting": "task",
                      "epochs_per_task": epochs, "freeze_norm": freeze_norm},
        "train": {"threads": 1, "report": False}, "record": {"weights_every": 0},
    }
    if plugin == "hlop":
        first, per_task = COUNTS[counts]
        cfg["plugins"] = [{"name": "hlop", "protect_output": False, "neurons_first": first * T,
                           "neurons_per_task": per_task * T, "decay_every": 0, "lr": [0.01],
                           "adaptive": "project_step", "angles": False, "record_lateral": False}]
    elif plugin == "ewc":
        cfg["plugins"] = [{"name": "ewc"}]
    return cfg


def mean_std(v: list[float]) -> str:
    return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"


def main() -> None:
    import bioplaus

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--epochs-per-task", type=int, default=6)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["finetune", "hlop", "ewc"],
                    help="finetune, hlop (wide counts), hlop-narrow, ewc")
    ap.add_argument("--T", type=int, default=3)
    ap.add_argument("--learn-norm", action="store_true", help="BatchNorm keeps learning on every task")
    ap.add_argument("--name", default="", help="results name (default noprop_stream_<dataset>)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "noprop"))
    a = ap.parse_args()
    load = os.getloadavg()[0]
    rows, payload = [], {}
    for method in a.methods:
        plugin, _, counts = method.partition("-")
        accs, bwts = [], []
        for seed in a.seeds:
            res = bioplaus.run(config(plugin, a.dataset, a.epochs_per_task, seed, a.T, counts or "wide", not a.learn_norm),
                               out=Path(a.out) / f"stream_{a.dataset}_{method}_s{seed}.h5", progress=False,
                               overwrite=True)
            accs.append(100 * res.metrics["ACC"])
            bwts.append(100 * res.metrics["BWT"])
            print(f"{method} seed {seed}: ACC {accs[-1]:.2f} BWT {bwts[-1]:.2f}", flush=True)
        rows.append({"method": f"NoProp-DT + {method}" if plugin != "finetune" else "NoProp-DT fine-tuning",
                     "ACC %": mean_std(accs), "BWT %": mean_std(bwts)})
        payload[method] = {"ACC": accs, "BWT": bwts}
    text = (f"## NoProp-DT on split {a.dataset} (5 tasks x 2 classes, task-incremental, "
            f"{a.epochs_per_task} epochs per task, T = {a.T}, seeds {a.seeds}, "
            f"BatchNorm {'learning on every task' if a.learn_norm else 'fixed after task 0'})\n\n"
            + table(rows, ["method", "ACC %", "BWT %"])
            + f"\n\nLoad average at start: {load:.2f} on {os.cpu_count()} cores.\n")
    save(a.name or f"noprop_stream_{a.dataset}", {"rows": rows, "runs": payload, "args": vars(a), "load": load}, text)


if __name__ == "__main__":
    main()
