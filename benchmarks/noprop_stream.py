"""NoProp-DT on a 5-task split stream: fine-tuning vs HLOP vs EWC (ACC and BWT).

    python benchmarks/noprop_stream.py [--dataset digits] [--epochs-per-task 6] [--seeds 0]

Task-incremental split stream (5 tasks x 2 classes; logits and the blocks' softmax masked
to each task's classes), NoProp-DT with T = 3 small blocks (channels 8/16/16, width 48),
Adam lr 5e-3. HLOP and EWC act on the layers the rule declares (each block's convs and
dense layers, and p_out); HLOP projects Adam's step (``adaptive = "project_step"``) with
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

# per protected layer of a block: conv1, conv2, conv3, img_fc, z_fc, res_a, res_b, fuse1, fuse2, out
FIRST = [2, 10, 15, 10, 2, 8, 8, 12, 8, 4]
PER_TASK = [1, 5, 8, 5, 2, 4, 4, 6, 4, 2]


def config(plugin: str, dataset: str, epochs: int, seed: int, T: int) -> dict:
    cfg = {
        "kind": "continual", "seed": seed,
        "data": {"dataset": dataset, "batch_size": 32, "val_fraction": 0.0, "normalize": "unit"},
        "rule": {"name": "noprop", "optimizer": "adam", "lr": 5e-3, "channels": [8, 16, 16], "width": 48, "T": T},
        "continual": {"stream": "split", "n_tasks": 5, "classes_per_task": 2, "setting": "task",
                      "epochs_per_task": epochs},
        "train": {"threads": 1, "report": False}, "record": {"weights_every": 0},
    }
    if plugin == "hlop":
        cfg["plugins"] = [{"name": "hlop", "protect_output": True, "neurons_first": FIRST * T + [2],
                           "neurons_per_task": PER_TASK * T + [2], "decay_every": 0, "lr": [0.01],
                           "adaptive": "project_step", "angles": False, "record_lateral": False}]
    elif plugin == "ewc":
        cfg["plugins"] = [{"name": "ewc"}]
    return cfg


def main() -> None:
    import bioplaus

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--epochs-per-task", type=int, default=6)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--T", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "noprop"))
    a = ap.parse_args()
    load = os.getloadavg()[0]
    rows, payload = [], {}
    for plugin in ("finetune", "hlop", "ewc"):
        accs, bwts = [], []
        for seed in a.seeds:
            res = bioplaus.run(config(plugin, a.dataset, a.epochs_per_task, seed, a.T),
                               out=Path(a.out) / f"stream_{a.dataset}_{plugin}_s{seed}.h5", progress=False,
                               overwrite=True)
            accs.append(100 * res.metrics["ACC"])
            bwts.append(100 * res.metrics["BWT"])
            print(f"{plugin} seed {seed}: ACC {accs[-1]:.2f} BWT {bwts[-1]:.2f}", flush=True)
        rows.append({"method": f"NoProp-DT + {plugin}" if plugin != "finetune" else "NoProp-DT fine-tuning",
                     "ACC %": statistics.mean(accs), "BWT %": statistics.mean(bwts)})
        payload[plugin] = {"ACC": accs, "BWT": bwts}
    text = (f"## NoProp-DT on split {a.dataset} (5 tasks x 2 classes, task-incremental, "
            f"{a.epochs_per_task} epochs per task, T = {a.T}, seeds {a.seeds})\n\n"
            + table(rows, ["method", "ACC %", "BWT %"])
            + f"\n\nLoad average at start: {load:.2f} on {os.cpu_count()} cores.\n")
    save(f"noprop_stream_{a.dataset}", {"rows": rows, "runs": payload, "args": vars(a), "load": load}, text)


if __name__ == "__main__":
    main()
