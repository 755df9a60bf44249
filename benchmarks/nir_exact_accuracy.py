"""Accuracy of the NIR-exact LIF (``lif_nir``) against the subtractive-reset ``spiking`` LIF.

The quickstart MLP (64-128-10 on sklearn digits, T = 20, dt = 1 ms, τ = 5 ms, SGD lr 0.1, the
same epochs and seeds for every variant); the variants differ only in the neuron model:

- ``spiking``: sims/quickstart.toml as it is (reset by subtraction one step late, firing output);
- ``spiking_li``: the same with ``output_spikes = false`` (an LI output layer);
- ``lif_nir_exact`` / ``lif_nir_euler``: sims/lif_nir_digits.toml (reset to v_reset in the
  firing step, LI output) with ``integration`` exact / euler.

Runs them as one sweep (`bioplaus.sweep`, resumable, in ``--out-dir``) and writes
results/nir_exact_accuracy.md/.json: test accuracy mean ± std over the seeds and seconds per
run. Fashion-MNIST (MLP and CNN) at issue 21's budget is not run here.
Run: python benchmarks/nir_exact_accuracy.py [--seeds 0 1] [--epochs 15] [--threads 1]
     python benchmarks/nir_exact_accuracy.py --quick     # 1 epoch: checks the script
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
from benchmarks._sweep import add_sweep_args, method_table, methods_sweep, runs_by_label  # noqa: E402

QS, QN = ROOT / "sims/quickstart.toml", ROOT / "sims/lif_nir_digits.toml"
VARIANTS = {
    "spiking": (QS, []),
    "spiking_li": (QS, ["network.spiking.output_spikes=false"]),
    "lif_nir_exact": (QN, ["network.neuron.integration=exact"]),
    "lif_nir_euler": (QN, ["network.neuron.integration=euler"]),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=15, help="the quickstart's 15 by default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--quick", action="store_true", help="1 epoch (a check of the script, not a result)")
    add_sweep_args(ap, str(ROOT / "runs" / "bench" / "nir_exact_accuracy"))
    args = ap.parse_args()
    epochs = 1 if args.quick else args.epochs
    # no probes, weights or report: the runs are compared by accuracy only
    common = [f"train.threads={args.threads}", f"train.epochs={epochs}", "record.weights_every=0",
              "record.probes=[]"]
    res = methods_sweep({v: VARIANTS[v] for v in args.variants}, args.seeds, args.out_dir, common,
                        workers=args.workers, ray=args.ray)
    acc = method_table(res, "test_acc")
    runs = runs_by_label(res)
    rows, payload = [], {}
    for v in args.variants:
        done = [r for r in runs.get(v, []) if r["status"] == "done"]
        secs = [r["wall_s"] for r in done]
        a = acc.get(v, {"mean": float("nan"), "std": float("nan"), "n": 0})
        rows.append({"variant": v, "test acc %": f"{100 * a['mean']:.2f} ± {100 * a['std']:.2f}",
                     "per seed": ", ".join(f"{100 * r['final_test_acc']:.2f}" for r in done),
                     "seeds": a["n"], "s/run": statistics.mean(secs) if secs else "",
                     "config": f"{VARIANTS[v][0].name} {' '.join(VARIANTS[v][1])}".strip()})
        payload[v] = {"acc": [100 * r["final_test_acc"] for r in done], "seconds": secs,
                      "files": [r["file"] for r in done]}
    load = os.getloadavg()[0]
    text = (f"## NIR-exact LIF vs subtractive reset: digits MLP 64-128-10, {epochs} epochs, "
            f"seeds {' '.join(map(str, args.seeds))}\n\n"
            + table(rows, ["variant", "test acc %", "per seed", "seeds", "s/run", "config"])
            + f"\n\nLoad average (1 min) at the end: {load:.1f} on {os.cpu_count()} cores (s/run is wall "
              "time under that load). Fashion-MNIST (MLP and CNN) at issue 21's budget: not run here.\n")
    if args.quick:
        print(text)
        print("(--quick: not saved to results/)")
        return
    save("nir_exact_accuracy", {**payload, "epochs": epochs, "seeds": args.seeds, "load_1min": load,
                                "sweep": str(res.out)}, text)


if __name__ == "__main__":
    main()
