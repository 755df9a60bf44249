"""Accuracy of the NIR-exact LIF (``lif_nir``) against the subtractive-reset ``spiking`` LIF.

The variants of one net differ only in the neuron model (same data, epochs, optimiser, lr,
T, dt, τ, seeds):

- ``spiking``: the sim as it is (reset by subtraction one step late, firing output read by
  its membrane);
- ``spiking_li`` (digits only): the same with ``output_spikes = false`` (an LI output layer);
- ``lif_nir_exact`` / ``lif_nir_euler``: its NIR-exact twin (reset to v_reset in the firing
  step, LI output) with ``integration`` exact / euler.

``--data digits``: the quickstart MLP 64-128-10 (sims/quickstart.toml against
sims/lif_nir_digits.toml; SGD lr 0.1, T = 20, 15 epochs). ``--data fashion``: issue 21's
Fashion-MNIST nets (sims/bp_fashion_mlp_spiking.toml against sims/bp_fashion_mlp_nir.toml;
Adam lr 1e-3, cosine schedule, T = 8, direct encoding, membrane read-out):

- ``--arch mlp``: 784-256x5-10 on the full training set (60,000), 4 epochs by default;
- ``--arch cnn``: 2 x [conv3x3 -> LIF -> max-pool 2] with 16, 32 channels, then Linear
  1568 -> 10, on the first 10,000 training images, 2 epochs by default.

(The default budgets are what let 2 seeds x 2 models x 2 nets finish in about an hour on
the shared 2-core machine at load ~10; each run evaluates the full test set once, at its
end.)

Each (arch, seed, variant) is its own sweep (`bioplaus.sweep`, in ``--out-dir``), run
seed by seed so that an interrupted benchmark has whole seeds; started again it skips every
run whose file is done (a new variant or seed runs only what is new). Writes
results/nir_exact_accuracy[_fashion].md/.json: test accuracy (full test set) mean ± std
over the seeds, each seed, wall seconds per run and the 1-min load average when each run
ended (the machine is shared; timings are noisy).
Run: python benchmarks/nir_exact_accuracy.py [--data digits|fashion] [--arch mlp cnn]
         [--seeds 0 1] [--epochs N] [--limit-train N] [--variants ...] [--threads 1] [--no-run]
     python benchmarks/nir_exact_accuracy.py --quick     # 1 epoch: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402
from benchmarks._sweep import LABEL, add_sweep_args, methods_sweep, runs_by_label, sweep_dir  # noqa: E402
from bioplaus.sweep import compare  # noqa: E402
from bioplaus.sweep.index import read_index_csv  # noqa: E402
from bioplaus.sweep.runner import SweepResult  # noqa: E402

SIMS = {
    "digits": (ROOT / "sims/quickstart.toml", ROOT / "sims/lif_nir_digits.toml"),
    "fashion": (ROOT / "sims/bp_fashion_mlp_spiking.toml", ROOT / "sims/bp_fashion_mlp_nir.toml"),
}
# (overrides of the net, default epochs, default limit_train) per data set and arch
NETS: dict[str, dict[str, tuple[list[str], int, int]]] = {
    "digits": {"mlp": ([], 15, 0)},
    "fashion": {
        "mlp": ([], 4, 0),
        # eval batches of 100: [T, B, 16, 28, 28] of B = 1000 thrash memory (2x slower, same numbers)
        "cnn": (['network.arch="cnn"', "network.channels=[16,32]", "network.hidden=[]",
                 "data.eval_batch_size=100"], 2, 10_000),
    },
}
DESCRIBE = {
    ("digits", "mlp"): "digits MLP 64-128-10 (SGD lr 0.1, T = 20)",
    ("fashion", "mlp"): "Fashion-MNIST MLP 784-256x5-10 (Adam lr 1e-3 cosine, T = 8)",
    ("fashion", "cnn"): "Fashion-MNIST CNN 2x[conv3x3 16, 32 + pool 2]-10 (Adam lr 1e-3 cosine, T = 8)",
}
LOADS = "loads.json"  # per sweep directory: the 1-min load average when each run of it ended


def variants(data: str) -> dict[str, tuple[Path, list[str]]]:
    """``{label: (sim, overrides)}`` of the neuron-model variants compared on ``data``."""
    sub, nir = SIMS[data]
    out = {"spiking": (sub, [])}
    if data == "digits":
        out["spiking_li"] = (sub, ["network.spiking.output_spikes=false"])
    out["lif_nir_exact"] = (nir, ["network.neuron.integration=exact"])
    out["lif_nir_euler"] = (nir, ["network.neuron.integration=euler"])
    return out


def run_arch(args: argparse.Namespace, arch: str, chosen: dict[str, tuple[Path, list[str]]],
             epochs: int, limit: int) -> tuple[list[Path], dict[str, list[dict[str, Any]]]]:
    """Run (or resume) every seed x variant of ``arch``: its sweep dirs and index rows per
    variant, each row with ``load_1min`` (the load when the run ended, None if unknown)."""
    net_over = NETS[args.data][arch][0]
    # no probes, weights or report: the runs are compared by accuracy only
    common = [f"train.threads={args.threads}", f"train.epochs={epochs}", "record.weights_every=0",
              *([] if args.data == "digits" else [f"train.eval_every={epochs}"]),
              "record.probes=[]", f"data.limit_train={limit}", *net_over]
    dirs: list[Path] = []
    runs: dict[str, list[dict[str, Any]]] = {}
    for seed in args.seeds:
        for v, (sim, over) in chosen.items():
            where = Path(args.out_dir) / f"{args.data}_{arch}" / f"seed{seed}"
            if args.no_run:  # the table of what is done, nothing run
                d = sweep_dir({v: (sim, over)}, where, common)
                done = [{**r, "wall_s": float(r["wall_s"]), "final_test_acc": float(r["final_test_acc"])}
                        for r in read_index_csv(d / "index.csv").values() if r["status"] == "done"]
                if not done:
                    continue
                res = SweepResult(d, done)
            else:
                res = methods_sweep({v: (sim, over)}, [seed], where, common, workers=args.workers, ray=args.ray)
            if res.interrupted:  # Ctrl-C / SIGTERM: stop here, not at the next run
                sys.exit(f"interrupted: {res.out}; started again, the benchmark resumes")
            dirs.append(res.out)
            seen = json.loads((res.out / LOADS).read_text()) if (res.out / LOADS).is_file() else {}
            for row in res.rows:
                if row["status"] == "done" and row["file"] not in seen:  # ran now
                    seen[row["file"]] = os.getloadavg()[0]
            (res.out / LOADS).write_text(json.dumps(seen))
            for label, rows in runs_by_label(res).items():
                runs.setdefault(label, []).extend({**r, "load_1min": seen.get(r["file"])} for r in rows)
    return dirs, runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="digits", choices=list(SIMS))
    ap.add_argument("--arch", nargs="+", default=None, help="mlp and/or cnn (fashion); default: every net of --data")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=None, help="default: the net's (digits 15, fashion MLP 4, CNN 2)")
    ap.add_argument("--limit-train", type=int, default=None,
                    help="first N training samples, the same for every variant (default: fashion CNN 10000, else all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=None, help="default: all of --data's")
    ap.add_argument("--quick", action="store_true", help="1 epoch (a check of the script, not a result)")
    ap.add_argument("--no-run", action="store_true", help="write the table of the runs already done; run nothing")
    add_sweep_args(ap, str(ROOT / "runs" / "bench" / "nir_exact_accuracy"))
    args = ap.parse_args()
    archs = args.arch or list(NETS[args.data])
    every = variants(args.data)
    names = args.variants or list(every)
    bad = [a for a in archs if a not in NETS[args.data]] + [v for v in names if v not in every]
    if bad:
        ap.error(f"--data {args.data}: no {' '.join(bad)} (archs {list(NETS[args.data])}, variants {list(every)})")
    chosen = {v: every[v] for v in names}

    sections, payload = [], {}
    for arch in archs:
        _, d_epochs, d_limit = NETS[args.data][arch]
        epochs = 1 if args.quick else (args.epochs if args.epochs is not None else d_epochs)
        limit = args.limit_train if args.limit_train is not None else d_limit
        dirs, runs = run_arch(args, arch, chosen, epochs, limit)
        acc = {r[LABEL]: r for r in compare(dirs, by=[LABEL], metric="test_acc", write=False).rows} if dirs else {}
        rows, per = [], {}
        base = {r["seed"]: r["final_test_acc"] for r in runs.get("spiking", []) if r["status"] == "done"}
        for v in names:
            done = [r for r in runs.get(v, []) if r["status"] == "done"]
            if not done:
                rows.append({"variant": v, "test acc %": "not run"})
                continue
            secs = [r["wall_s"] for r in done]
            ld = [r["load_1min"] for r in done]
            # paired by seed (same init, same batches): this variant's accuracy minus spiking's
            gap = [100 * (r["final_test_acc"] - base[r["seed"]]) for r in done if r["seed"] in base]
            a = acc.get(v, {"mean": float("nan"), "std": float("nan"), "n": 0})
            rows.append({"variant": v, "test acc %": f"{100 * a['mean']:.2f} ± {100 * a['std']:.2f}",
                         "− spiking (per seed)": "" if v == "spiking" or not gap else
                         f"{statistics.mean(gap):+.2f} ({', '.join(f'{g:+.2f}' for g in gap)})",
                         "per seed": ", ".join(f"{100 * r['final_test_acc']:.2f}" for r in done),
                         "seeds": a["n"], "s/run": statistics.mean(secs) if secs else "",
                         "load at end": ", ".join(f"{x:.1f}" for x in ld if x is not None),
                         "config": f"{chosen[v][0].name} {' '.join(chosen[v][1])}".strip()})
            per[v] = {"acc": [100 * r["final_test_acc"] for r in done], "minus_spiking": gap, "seconds": secs,
                      "files": [r["file"] for r in done], "load_1min": ld}
        budget = (f"{epochs} epochs on {'all' if not limit else f'the first {limit:,}'} training samples, "
                  f"full test set, seeds {' '.join(map(str, args.seeds))}")
        sections.append(f"### {DESCRIBE[(args.data, arch)]}\n\n{budget}; overrides: "
                        f"`{' '.join(NETS[args.data][arch][0]) or '(none)'}`\n\n"
                        + table(rows, ["variant", "test acc %", "per seed", "− spiking (per seed)", "seeds", "s/run",
                                      "load at end", "config"]))
        payload[arch] = {"variants": per, "epochs": epochs, "limit_train": limit,
                         "overrides": NETS[args.data][arch][0]}
    load = os.getloadavg()[0]
    text = ("## NIR-exact LIF vs subtractive reset\n\n" + "\n\n".join(sections)
            + f"\n\nLoad average (1 min) at the end: {load:.1f} on {os.cpu_count()} cores (AMD EPYC, shared by "
              "several jobs: s/run is wall time under that load, noisy). Mean ± sample std over the seeds.\n")
    if args.quick:
        print(text)
        print("(--quick: not saved to results/)")
        return
    name = "nir_exact_accuracy" + ("" if args.data == "digits" else f"_{args.data}")
    if args.data == "digits" and archs == ["mlp"]:  # the digits file keeps its flat layout
        payload = {**payload["mlp"]["variants"], "epochs": payload["mlp"]["epochs"]}
    save(name, {**payload, "seeds": args.seeds, "load_1min": load, "out_dir": args.out_dir}, text)


if __name__ == "__main__":
    main()
