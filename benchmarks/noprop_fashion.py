"""NoProp on Fashion-MNIST, side by side: test accuracy of every variant and baseline.

    python benchmarks/noprop_fashion.py [--seeds 0 1] [--epochs 20] [--limit-train 0] [--workers 1] [--samples 10]

Runs, for each seed and the same epoch budget: backprop over the DT blocks
(sims/noprop_bp_blocks_fashion.toml), the plain backprop CNN with the same image path
(noprop_cnn_fashion), NoProp-DT with the one-hot, prototype and dim-20 embeddings
(stochastic inference, the deterministic z_t = û_t beside it), NoProp-CT, NoProp-FM and
the spiking DT (``--spiking``). All use CPU-sized blocks (channels 16/32/64, width 128).
``--limit-train`` / ``--epochs`` give a reduced setting, which the table's title states.
``--workers K`` runs the (method, seed) runs in K processes (one torch thread each), the
slowest first. ``--samples K`` (default 10) adds, for DT and CT, the accuracy of the trained
model with the class probabilities of K stochastic chains averaged (``rule.samples``; one
chain, the paper's inference, samples the predictive distribution: docs/noprop.md).
Writes results/<name>.{md,json} and the run files under runs/bench/noprop/.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402
from bioplaus.config import load_config  # noqa: E402
from bioplaus.experiments import run_experiment  # noqa: E402

SIMS = {
    "backprop over blocks": "noprop_bp_blocks_fashion",
    "backprop CNN (same image path)": "noprop_cnn_fashion",
    "NoProp-DT one-hot": "noprop_dt_fashion",
    "NoProp-DT prototype": "noprop_dt_fashion_prototype",
    "NoProp-DT dim-20": "noprop_dt_fashion_dim20",
    "NoProp-CT one-hot": "noprop_ct_fashion",
    "NoProp-FM one-hot": "noprop_fm_fashion",
}
SPIKING = {"NoProp-DT one-hot, spiking": "noprop_dt_fashion_spiking"}


def mean_std(v: list[float]) -> str:
    if not v:
        return ""
    return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" if len(v) > 1 else f"{v[0]:.2f}"


def sampled_accuracy(res: object, samples: int) -> float:
    """Test accuracy % of the trained model with the class probabilities averaged over
    ``samples`` stochastic chains per image (`NoPropModel.sampled_step_logits`)."""
    exp = res.experiment  # type: ignore[attr-defined]
    rule = exp.rule
    rule.opts.samples = samples
    rule._in_inner_eval = True  # the run file is closed: do not log the traces
    try:
        return 100 * rule.evaluate(exp.data.test)["acc"]
    finally:
        rule.opts.samples = 1
        rule._in_inner_eval = False


def one_run(label: str, sim: str, seed: int, over: list[str], out: str,
            samples: int = 0) -> tuple[str, int, float, float, float, float]:
    """One (method, seed) run: (label, seed, test acc %, deterministic %, seconds, accuracy %
    with ``samples`` chains averaged after training (NaN if not asked or not DT / CT))."""
    cfg = load_config(ROOT / "sims" / f"{sim}.toml", over)
    cfg.train.report = False
    res = run_experiment(cfg, out=Path(out), progress=False, overwrite=True)
    acc = 100 * res.metrics["test_acc"]
    det = 100 * res.metrics.get("test_acc_det", res.metrics["test_acc"])
    mc = float("nan")
    if samples > 1 and cfg.rule.options.get("variant") in ("dt", "ct"):
        mc = sampled_accuracy(res, samples)
    print(f"{label} seed {seed}: {acc:.2f} (det {det:.2f}, {samples} chains {mc:.2f}) in {res.seconds:.0f} s",
          flush=True)
    return label, seed, acc, det, res.seconds, mc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--limit-train", type=int, default=0)
    ap.add_argument("--limit-test", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="runs in parallel processes")
    ap.add_argument("--eval-steps", type=int, default=0, help="CT/FM inference steps (0 = the sims' 100)")
    ap.add_argument("--channels", type=int, nargs=3, default=None, help="override the blocks' conv widths")
    ap.add_argument("--width", type=int, default=0, help="override the blocks' dense width")
    ap.add_argument("--only", nargs="*", default=[], help="substrings of the row names to run")
    ap.add_argument("--spiking", action="store_true", help="add the spiking DT")
    ap.add_argument("--samples", type=int, default=10,
                    help="DT / CT: also the accuracy with K stochastic chains averaged (0: skip)")
    ap.add_argument("--name", default="noprop_fashion")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "noprop"))
    a = ap.parse_args()
    sims = {**SIMS, **(SPIKING if a.spiking else {})}
    if a.only:
        sims = {k: v for k, v in sims.items() if any(s.lower() in k.lower() for s in a.only)}
    load0 = os.getloadavg()[0]
    jobs = []
    for label, sim in sims.items():
        for seed in a.seeds:
            over = [f"seed={seed}", f"train.epochs={a.epochs}", f"train.threads={a.threads}",
                    f"data.limit_train={a.limit_train}", f"data.limit_test={a.limit_test}"]
            if a.channels:
                over.append(f"rule.channels=[{','.join(map(str, a.channels))}]")
            if a.width:
                over.append(f"rule.width={a.width}")
            if a.eval_steps and ("_ct_" in sim or "_fm_" in sim):
                over.append(f"rule.eval_steps={a.eval_steps}")
            jobs.append((label, sim, seed, over, str(Path(a.out) / f"{a.name}_{sim}_s{seed}.h5"), a.samples))
    if a.workers > 1:
        # the T-block runs (DT, backprop over blocks) first: they take ~10x the others
        jobs.sort(key=lambda j: not ("DT" in j[0] or "over blocks" in j[0]))
        with cf.ProcessPoolExecutor(a.workers, mp_context=mp.get_context("spawn")) as ex:
            done = list(ex.map(one_run, *zip(*jobs)))
    else:
        done = [one_run(*j) for j in jobs]
    rows, payload = [], {}
    for label, sim in sims.items():
        mine = sorted((d for d in done if d[0] == label), key=lambda d: d[1])
        accs, dets, secs, mcs = ([d[k] for d in mine] for k in (2, 3, 4, 5))
        stoch = "DT" in label or "CT" in label
        rows.append({"method": label, "test acc % (one chain)": mean_std(accs),
                     f"mean of {a.samples} chains %": mean_std(mcs) if stoch and a.samples > 1 else "",
                     "deterministic %": mean_std(dets) if stoch else "",
                     "seconds/run": statistics.mean(secs)})
        payload[sim] = {"acc": accs, "acc_det": dets, "seconds": secs, "acc_samples": mcs}
    setting = (f"{a.epochs} epochs, seeds {a.seeds}, "
               + (f"first {a.limit_train} training images" if a.limit_train else "all 60k training images")
               + (f", first {a.limit_test} test images" if a.limit_test else ", 10k test images"))
    blocks = f"{'/'.join(map(str, a.channels or [16, 32, 64]))} + {a.width or 128}"
    if a.eval_steps:
        setting += f", CT/FM {a.eval_steps} inference steps"
    text = (f"## NoProp on Fashion-MNIST ({setting}; CPU-sized blocks {blocks})\n\n"
            + table(rows, ["method", "test acc % (one chain)", f"mean of {a.samples} chains %", "deterministic %",
                           "seconds/run"])
            + f"\n\nLoad average at start: {load0:.2f} on {os.cpu_count()} cores.\n")
    save(a.name, {"rows": rows, "runs": payload, "args": vars(a), "load": load0}, text)


if __name__ == "__main__":
    main()
