"""Wall time per training epoch: CCL vs backprop on the same MLP 784-256x5-10, one process.

    nice -n 5 python benchmarks/ccl_cost.py --repeats 5
    python benchmarks/ccl_cost.py --quick      # 2 x 40 steps per rule: a check, nothing saved

Both rules are built from their sims (``sims/ccl_fashion_mlp.toml``,
``sims/bp_fashion_mlp.toml``) on Fashion-MNIST; epochs alternate BP, CCL, BP, CCL ... at one
torch thread so that machine noise hits both alike. Only training steps are timed (no
evaluation). The paper counts 2.55 (CCL) vs 2.39 (BP) MFLOPs per sample.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402
from bioplaus.config import load_config  # noqa: E402
from bioplaus.data import prepare_data  # noqa: E402
from bioplaus.nets import build_net  # noqa: E402
from bioplaus.registry import RULES  # noqa: E402
from bioplaus.rules.base import RuleContext  # noqa: E402


def make(sim: str, over: list[str]):  # noqa: ANN201
    cfg = load_config(ROOT / sim, over)
    data = prepare_data(cfg)
    net = build_net(cfg.network, data.input_shape, data.n_classes, seed=cfg.seed)
    rule = RULES.get(cfg.rule.name)(cfg.rule)
    steps = len(data.train)
    rule.setup(net, RuleContext.of(cfg, steps, steps * 100, data.n_classes))
    return rule, data


def macs_per_sample(widths: list[int], n_classes: int, batch: int) -> dict[str, float]:
    """Multiply-accumulates per training sample of each rule on an MLP (analytic count).

    BP: forward Σ n_in n_out, weight gradients the same, input gradients for every layer
    but the first. CCL: forward and weight gradients only (every input is detached), the
    feedback net on C rows shared by the batch (forward + weight gradients, / batch), and per
    pair the C-column similarity A·Bᵀ with its two gradients (3 C d).
    """
    pairs = list(zip(widths[:-1], widths[1:]))
    fwd = sum(a * b for a, b in pairs)
    igrad = sum(a * b for a, b in pairs[1:])
    bp = 2 * fwd + igrad
    feedback = 2 * fwd * n_classes / batch
    local = sum(3 * n_classes * d for d in widths[:-1])
    return {"BP": float(bp), "CCL": float(2 * fwd + feedback + local)}


def epoch(rule, loader, max_steps: int) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(loader):
        if max_steps and i >= max_steps:
            break
        rule.train_step(x, y)
        rule.after_step()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed epochs per rule")
    ap.add_argument("--max-steps", type=int, default=0, help="steps per 'epoch' (0 = full)")
    ap.add_argument("--spiking", action="store_true", help="both rules on the spiking backend")
    ap.add_argument("--batch", type=int, default=0, help="batch size (0 = the sims' 256)")
    ap.add_argument("--quick", action="store_true", help="2 repeats of 40 steps: a check, nothing saved")
    ap.add_argument("--name", default="", help="results file name (default ccl_cost[_spiking][_b<batch>])")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.max_steps = 2, 40
    torch.set_num_threads(1)
    over = ["network.backend=spiking", "network.spiking.T=6"] if args.spiking else []
    if args.batch:
        over.append(f"data.batch_size={args.batch}")
    bp, data = make("sims/bp_fashion_mlp.toml", over)
    ccl, _ = make("sims/ccl_fashion_mlp.toml", over)
    epoch(bp, data.train, 20)  # warm-up (allocator, kernels)
    epoch(ccl, data.train, 20)
    t_bp, t_ccl = [], []
    for _ in range(args.repeats):
        t_bp.append(epoch(bp, data.train, args.max_steps))
        t_ccl.append(epoch(ccl, data.train, args.max_steps))
    m_bp, m_ccl = statistics.median(t_bp), statistics.median(t_ccl)
    ratio = m_ccl / m_bp
    ratios = [c / b for b, c in zip(t_bp, t_ccl)]
    backend = "spiking T=6" if args.spiking else "rate"
    net = bp.net
    widths = [int(torch.tensor(net.input_shape).prod())] + [la.n_out for la in net.layers]
    macs = macs_per_sample(widths, net.n_classes, data.train.batch_size)
    rows = [
        {"rule": "BP", "s / epoch (median)": m_bp, "min": min(t_bp), "max": max(t_bp),
         "MFLOPs / sample (2 x MAC)": 2e-6 * macs["BP"]},
        {"rule": "CCL", "s / epoch (median)": m_ccl, "min": min(t_ccl), "max": max(t_ccl),
         "MFLOPs / sample (2 x MAC)": 2e-6 * macs["CCL"]},
    ]
    text = (
        f"## Cost per epoch, MLP 784-256x5-10, Fashion-MNIST, {backend}, batch "
        f"{data.train.batch_size}, 1 thread, {args.repeats} alternating epochs\n\n"
        + table(rows, ["rule", "s / epoch (median)", "min", "max", "MFLOPs / sample (2 x MAC)"])
        + f"\n\nCCL / BP = **{ratio:.3f}** (per-pair ratios {min(ratios):.3f} to "
        f"{max(ratios):.3f}); analytic FLOP ratio {macs['CCL'] / macs['BP']:.3f}; "
        "paper: 2.55 / 2.39 MFLOPs = 1.067."
    )
    if args.quick:
        print(text + "\n(--quick: not saved to results/)")
        return 0
    name = "ccl_cost_spiking" if args.spiking else "ccl_cost"
    if args.batch:
        name += f"_b{args.batch}"
    name = args.name or name
    save(name, {"bp_s": t_bp, "ccl_s": t_ccl, "ratio_median": ratio, "ratios": ratios, "macs_per_sample": macs,
                "backend": backend}, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
