"""Is NoProp-DT's stochastic inference a sampler of p(y | x)? K chains per test image.

    python benchmarks/noprop_sampling.py [--epochs 2] [--chains 16] [--seed 0] [--limit-train 0]

Trains NoProp-DT (sims/noprop_dt_fashion.toml, CPU-sized blocks 8/16/32 + 64) and the plain
backprop CNN with the same image path (sims/noprop_cnn_fashion.toml) for the same epochs on
Fashion-MNIST, then runs K independent stochastic chains from fresh noise on each of the
10k test images and reports:

- the accuracy of one chain (the paper's inference) and its mean over the K chains;
- the accuracy of the chains' majority vote and of their averaged class probabilities
  (``rule.samples = K``), and of the deterministic chain z_t = û_t;
- the fraction of images on which all K chains agree;
- for the CNN: argmax accuracy and E[p(y_true | x)], the accuracy a classifier has when it
  *samples* its answer from its own softmax.

If one chain draws its class from the model's predictive distribution, its accuracy is
E[p(y_true | x)] (below the argmax accuracy wherever images are ambiguous), and the majority
of K chains climbs back towards the deterministic accuracy. Writes
results/noprop_sampling.{md,json}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402
from bioplaus.config import load_config  # noqa: E402
from bioplaus.device import generator  # noqa: E402
from bioplaus.experiments import run_experiment  # noqa: E402


def train(sim: str, a: argparse.Namespace) -> object:
    over = [f"seed={a.seed}", f"train.epochs={a.epochs}", "train.threads=1", f"train.eval_every={a.epochs}",
            "rule.channels=[8,16,32]", "rule.width=64", f"data.limit_train={a.limit_train}",
            f"data.limit_test={a.limit_test}"]
    cfg = load_config(ROOT / "sims" / f"{sim}.toml", over)
    cfg.train.report = False
    res = run_experiment(cfg, out=Path(a.out) / f"{sim}_s{a.seed}.h5", progress=False, overwrite=True)
    print(f"{sim}: {res.summary()}", flush=True)
    return res.experiment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--chains", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit-train", type=int, default=0, help="first n training images (0: all)")
    ap.add_argument("--limit-test", type=int, default=0, help="first n test images (0: all)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench" / "noprop_sampling"))
    a = ap.parse_args()
    torch.set_num_threads(1)

    dt = train("noprop_dt_fashion", a)
    cnn = train("noprop_cnn_fashion", a)
    torch.set_grad_enabled(False)
    m = dt.rule.net.eval()
    xs, ys = zip(*list(dt.data.test))
    y = torch.cat(ys)
    n, c = len(y), m.n_classes
    gen = generator(12345)
    counts = torch.zeros(n, c)
    probs = torch.zeros(n, c)
    single = []
    for _ in range(a.chains):
        logits = torch.cat([m.classify(m.chain(x, "stochastic", gen, m.opts.T)[-1]) for x in xs])
        pred = logits.argmax(1)
        counts[torch.arange(n), pred] += 1
        probs += F.softmax(logits, 1)
        single.append(float((pred == y).float().mean()))
    det = torch.cat([m.classify(m.chain(x, "direct", gen, m.opts.T)[-1]) for x in xs]).argmax(1)
    freq = counts / a.chains
    rows = [
        {"quantity": "DT: one chain (the paper's inference), first chain", "%": 100 * single[0]},
        {"quantity": f"DT: one chain, mean over the {a.chains} chains", "%": 100 * sum(single) / len(single)},
        {"quantity": f"DT: majority vote of {a.chains} chains", "%": 100 * float((freq.argmax(1) == y).float().mean())},
        {"quantity": f"DT: averaged probabilities of {a.chains} chains (rule.samples)",
         "%": 100 * float((probs.argmax(1) == y).float().mean())},
        {"quantity": "DT: deterministic chain z_t = û_t", "%": 100 * float((det == y).float().mean())},
        {"quantity": f"DT: images on which all {a.chains} chains agree",
         "%": 100 * float((freq.max(1).values == 1).float().mean())},
    ]
    net = cnn.rule.net.eval()
    p = torch.cat([F.softmax(net(x), 1) for x in xs])
    rows += [
        {"quantity": "CNN: argmax accuracy", "%": 100 * float((p.argmax(1) == y).float().mean())},
        {"quantity": "CNN: E[p(y_true | x)] (accuracy when sampling from its softmax)",
         "%": 100 * float(p[torch.arange(n), y].mean())},
    ]
    text = (f"## NoProp-DT's stochastic inference as a sampler (Fashion-MNIST, {a.epochs} epochs, seed {a.seed}, "
            f"blocks 8/16/32 + 64, T = 10, {a.chains} chains per test image)\n\n" + table(rows, ["quantity", "%"]) + "\n")
    save("noprop_sampling", {"rows": rows, "args": vars(a), "single": single}, text)


if __name__ == "__main__":
    main()
