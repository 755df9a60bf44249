"""A learning-rate x hidden-size sweep on the digits over 2 seeds, then mean ± std per setting.

    python examples/sweep_grid.py [OUT_DIR] [--ray ADDRESS]

Locally (a process pool sized to the cores) by default; ``--ray 127.0.0.1:6379`` runs every
run as a task on that Ray cluster, ``--ray local`` starts a Ray instance for the sweep. The
run files, ``index.csv`` / ``index.h5`` and ``compare_test_acc.*`` end up in
``OUT_DIR/lr_hidden`` either way. Started again, it skips the runs already done.
A few seconds per run on 2 cores (rate units, 2 epochs).
"""

import sys

from bioplaus.sweep import compare, sweep

CONFIG = {
    "name": "digits_mlp",
    "data": {"dataset": "digits", "batch_size": 64},
    "network": {"backend": "rate", "hidden": [32]},
    "rule": {"name": "backprop", "lr": 0.1},
    "train": {"epochs": 2},
}

if __name__ == "__main__":  # needed with a process pool: workers re-import this script
    args = sys.argv[1:]
    ray = None
    if "--ray" in args:
        i = args.index("--ray")
        ray = args[i + 1]
        del args[i : i + 2]
    out = (args[0] if args else "sweeps") + "/lr_hidden"

    res = sweep(
        CONFIG,
        grid={"rule.lr": [0.05, 0.2], "network.hidden": [[16], [64]]},
        seeds=2,
        out=out,
        overrides={"train.threads": 1},  # one thread per run: the same digits on every executor
        ray=ray,
        progress=False,
    )
    print(res.summary())  # sweep finished: 8 runs (done 8) -> .../lr_hidden/index.csv

    c = compare([out], plot=True)  # grouped by rule.lr and network.hidden, over the seeds
    print(c.table())
    best = max(c.rows, key=lambda r: r["mean"])
    print(f"best: rule.lr={best['rule.lr']}, network.hidden={best['network.hidden']}: "
          f"test_acc {best['mean']:.3f} ± {best['std']:.3f} (n={best['n']})")
