"""Brian2 from the graph vs bioplaus (issue 21): agreement on trained nets' NIR graphs.

For each net: export its NIR graph, run bioplaus's reading (`simulate_bioplaus`: `from_nir`
and the torch backend, float32) and Brian2 built from the graph's nodes
(`simulate_brian2(reading="graph")`, float64) on the first N test samples, and compare
the spike count of every (sample, neuron) pair of every layer both record ("spike counts
equal"), the exact spike trains, and the predicted class. Nets: the quickstart run (the
default subtractive-reset LIF: Brian2 reads it as the spec says, so it differs, and the
note says why) and a digits 64-128-10 net of each NIR-exact model x rule trained for a few
epochs (`sims/lif_nir_digits.toml` with the model and rule swapped in), and a digits CNN
(8 channels 3x3, max-pool 2, 32, 10) of each.

Usage: python benchmarks/brian2_graph_agreement.py --quickstart RUN.h5 [--samples 200] [--epochs 5] [--archs mlp cnn]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save, table  # noqa: E402

from bioplaus.export.nir import load_net, to_nir  # noqa: E402
from bioplaus.export.samples import run_test_samples  # noqa: E402
from bioplaus.simulators.brian2 import simulate_bioplaus, simulate_brian2  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def compare(a, b) -> dict:
    """Spike counts / trains equal over the layers both record, class agreement."""
    eq = tot = same = 0
    for k in sorted(set(a.spikes) & set(b.spikes)):
        ca, cb = a.spikes[k].sum(0), b.spikes[k].sum(0)
        eq += int((ca == cb).sum())
        tot += ca.size
        same += int((a.spikes[k] == b.spikes[k]).all(0).sum())
    return {"counts_equal": 100.0 * eq / max(tot, 1), "trains_equal": 100.0 * same / max(tot, 1),
            "class_equal": 100.0 * float((a.predicted == b.predicted).mean())}


def train(model: str, rule: str, epochs: int, out: Path, arch: str = "mlp") -> Path:
    from bioplaus.api import run

    cfg = tomllib.loads((ROOT / "sims" / "lif_nir_digits.toml").read_text())
    cfg["name"] = f"{model}_{rule}_{arch}_digits"
    cfg["network"]["backend"] = model
    if arch == "cnn":  # 8x8 → 8 ch 3x3 (max-pool 2) → 32 → 10
        cfg["network"].update(arch="cnn", channels=[8], kernel=3, pool=2, hidden=[32])
    cfg["network"]["neuron"] = {"integration": rule}  # the model's default r
    cfg["train"].update(epochs=epochs, report=False, progress=False, threads=1)
    cfg["record"] = {"weights_every": 0}
    res = run(cfg, out=out / f"{model}_{rule}_{arch}.h5")
    return Path(res.path)


def measure(name: str, run_file: Path, n: int) -> dict:
    net = load_net(run_file)
    x, y, _ = run_test_samples(net, run_file, n)
    g = to_nir(net)
    ref = simulate_bioplaus(g, x)
    t0 = time.perf_counter()
    b2 = simulate_brian2(g, x, mode="numpy")
    wall = time.perf_counter() - t0
    row = {"net": name, "samples": int(x.shape[0]), **compare(ref, b2),
           "acc_bioplaus": 100.0 * float((ref.predicted == y).mean()),
           "acc_brian2": 100.0 * float((b2.predicted == y).mean()), "brian2_s": wall, "note": b2.note or "plain"}
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quickstart", help="a quickstart run file (sims/quickstart.toml)")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--models", nargs="*", default=["lif_nir", "if_nir", "cuba_lif"])
    ap.add_argument("--archs", nargs="*", default=["mlp", "cnn"])
    args = ap.parse_args()
    load0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = []
    if args.quickstart:
        rows.append(measure("quickstart (spiking, subtract, euler graph)", Path(args.quickstart), args.samples))
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            for model in args.models:
                for rule in ("exact", "euler"):
                    run_file = train(model, rule, args.epochs, Path(tmp), arch)
                    shape = "64-128-10" if arch == "mlp" else "CNN 8c3-p2-32-10"
                    rows.append(measure(f"{model} {rule} {shape}", run_file, args.samples))
    load1 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    cols = ["net", "samples", "counts_equal", "trains_equal", "class_equal", "acc_bioplaus", "acc_brian2", "brian2_s"]
    text = (f"# Brian2 from the graph vs bioplaus\n\n{args.samples} digits test samples; NIR-exact nets trained "
            f"{args.epochs} epochs (sims/lif_nir_digits.toml, model and rule swapped in; the CNN: 8 channels 3x3, "
            "max-pool 2, 32, 10); Brian2 numpy mode, "
            "float64; bioplaus float32. counts/trains equal: % of (sample, neuron) pairs over the layers both "
            "record (Brian2 records no spikes for an LI readout).\n\n" + table(rows, cols)
            + "\n\nNotes (what bioplaus reads differently):\n\n"
            + "\n".join(f"- {r['net']}: {r['note']}" for r in rows)
            + f"\n\nLoad: start `{load0}`, end `{load1}`; AMD EPYC, 2 cores shared by 8 helpers (timings noisy).\n")
    save("brian2_graph_agreement", {"rows": rows, "load": [load0, load1], "epochs": args.epochs}, text)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
