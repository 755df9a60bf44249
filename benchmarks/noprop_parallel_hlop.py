"""Parallel NoProp-DT blocks with HLOP on a 2-task stream, beside the sequential mode.

    python benchmarks/noprop_parallel_hlop.py [--dataset digits] [--T 4] [--epochs 5] [--lr 5e-3]

Split digits (2 tasks x 2 classes, task-incremental), NoProp-DT with CPU-sized blocks and
Adam, HLOP on every block's layers but their outputs (HLOP projects Adam's step). The same
config runs with ``mode = "sequential"`` (this process) and ``mode = "parallel"`` (2 worker
processes, each holding its blocks and their HLOP copies), one thread each, and parallel
without HLOP (fine-tuning) for scale. Reports ACC and BWT, the wall time of each run, and
whether the block parameters and HLOP's lateral weights of the two HLOP runs are
bit-identical. Writes results/noprop_parallel_hlop.{md,json}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import save, table  # noqa: E402


def config(a: argparse.Namespace, mode: str, hlop: bool = True) -> dict:
    plugins = [{"name": "hlop", "protect_output": False, "neurons_first": [8], "neurons_per_task": [4],
                "lr": [0.01], "adaptive": "project_step", "angles": False}] if hlop else []
    return {
        "kind": "continual",
        "seed": 0,
        "data": {"dataset": a.dataset, "batch_size": 32, "val_fraction": 0.0, "limit_test": a.limit_test},
        "rule": {"name": "noprop", "variant": "dt", "optimizer": "adam", "lr": a.lr, "T": a.T,
                 "channels": [8, 16, 16], "width": 32, "mode": mode, "workers": 2},
        "continual": {"stream": "split", "n_tasks": 2, "classes_per_task": a.classes, "setting": "task",
                      "epochs_per_task": a.epochs, "freeze_norm": True},
        "train": {"threads": 1, "report": False, "log_every": 50},
        "record": {"weights_every": 0},
        "plugins": plugins,
    }


def arrays(path: Path, prefix: str) -> dict[str, np.ndarray]:
    import h5py

    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        if prefix.strip("/") in f:
            f[prefix.strip("/")].visititems(
                lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def main() -> None:
    import bioplaus
    from bioplaus.record.reader import open_run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--limit-test", type=int, default=200)
    ap.add_argument("--name", default="noprop_parallel_hlop")
    a = ap.parse_args()
    rows, files = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, hlop in (("sequential", True), ("parallel", True), ("parallel", False)):
            t0 = time.perf_counter()
            res = bioplaus.run(config(a, mode, hlop), out=Path(tmp) / f"{mode}{hlop}.h5", progress=False)
            wall = time.perf_counter() - t0
            with open_run(res.path) as r:
                attrs = r.attrs_of("/continual/acc_matrix")
                R = np.asarray(r.array("/continual/acc_matrix"))
            if hlop:
                files[mode] = {"blocks": arrays(res.path, "/model/net"), "hlop": arrays(res.path, "/hlop")}
            rows.append({"mode": mode, "plugin": "hlop" if hlop else "none (fine-tuning)", "workers": 2 if mode == "parallel" else 1, "ACC": float(attrs["ACC"]),
                         "BWT": float(attrs["BWT"]), "wall_s": wall, "steps": res.steps,
                         "acc_matrix": R.round(4).tolist()})
    same_blocks = all(np.array_equal(v, files["parallel"]["blocks"][k]) for k, v in files["sequential"]["blocks"].items()
                      if k.startswith("blocks."))
    same_hlop = files["sequential"]["hlop"].keys() == files["parallel"]["hlop"].keys() and all(
        np.array_equal(v, files["parallel"]["hlop"][k]) for k, v in files["sequential"]["hlop"].items())
    n_hlop = len(files["sequential"]["hlop"])
    text = (
        f"## NoProp-DT + HLOP on split {a.dataset} (2 tasks x {a.classes} classes, task-incremental), "
        f"T = {a.T}, channels 8/16/16, width 32, Adam lr {a.lr:g}, {a.epochs} epochs per task, 1 thread per process\n\n"
        + table(rows, ["mode", "plugin", "workers", "ACC", "BWT", "wall_s", "steps"])
        + f"\n\nblock parameters bit-identical (sequential vs parallel): {same_blocks}; "
        f"HLOP lateral weights ({n_hlop} arrays) bit-identical: {same_hlop}\n"
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end\n"
    )
    save(a.name, {"rows": rows, "identical_blocks": same_blocks, "identical_hlop": same_hlop, "args": vars(a)}, text)


if __name__ == "__main__":
    main()
