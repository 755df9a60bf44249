"""Peak training memory of NoProp-DT vs backprop over the same blocks, each in its own process.

    python benchmarks/noprop_memory.py [--batch 128] [--steps 5] [--channels 32 64 128] [--width 256]

Each variant runs in a fresh Python process: build the T = 10 blocks (the paper's widths
by default) for 28x28 images, then train ``steps`` batches of random images (memory does
not depend on the pixel values). Reported: the peak resident set size of the process
(``ru_maxrss``) and the part of it added by training (peak minus the RSS after the model
was built: activations, gradients, optimiser state). DT trains one block at a time
(interleaved mode), so only one block's activations are alive at once; backprop keeps all
T blocks' activations for its backward pass. Writes results/noprop_memory.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(variant: str, batch: int, steps: int, channels: list[int], width: int) -> None:
    import torch

    from bioplaus.config import RuleConfig
    from bioplaus.rules.base import RuleContext
    from bioplaus.rules.noprop import NoProp

    torch.set_num_threads(1)
    opts = {"variant": variant, "T": 10, "channels": channels, "width": width}
    rule = NoProp(RuleConfig(name="noprop", optimizer="adamw", lr=1e-3, weight_decay=1e-3, options=opts))
    ctx = RuleContext(n_classes=10, input_shape=(1, 28, 28), seed=0)
    rule.setup(rule.build_model(ctx), ctx)
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(batch, 1, 28, 28, generator=g) for _ in range(steps)]
    ys = [torch.randint(0, 10, (batch,), generator=g) for _ in range(steps)]
    base = rss_mb()
    for x, y in zip(xs, ys, strict=True):
        rule.train_step(x, y)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_params = sum(p.numel() for p in rule.net.parameters())
    print(json.dumps({"variant": variant, "base_mb": base, "peak_mb": peak, "train_mb": peak - base,
                      "params": n_params}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--channels", type=int, nargs=3, default=[32, 64, 128])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--child", default="")
    a = ap.parse_args()
    if a.child:
        child(a.child, a.batch, a.steps, a.channels, a.width)
        return
    from benchmarks._common import save, table

    rows = []
    load = os.getloadavg()[0]
    for variant in ("dt", "backprop"):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", variant, "--batch", str(a.batch),
               "--steps", str(a.steps), "--channels", *map(str, a.channels), "--width", str(a.width)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    dt, bp = rows
    ratio_peak = dt["peak_mb"] / bp["peak_mb"]
    ratio_train = dt["train_mb"] / bp["train_mb"]
    text = (
        f"## Peak training memory, NoProp-DT vs backprop over the same blocks (T = 10, channels "
        f"{a.channels}, width {a.width}, batch {a.batch}, 28x28 inputs, CPU, one process each)\n\n"
        + table(rows, ["variant", "params", "base_mb", "peak_mb", "train_mb"])
        + f"\n\nDT / backprop: peak RSS {ratio_peak:.2f}x, memory added by training {ratio_train:.2f}x "
        f"(paper, GPU: 0.49 / 0.87 GB = 0.56x). Load average {load:.2f} on {os.cpu_count()} cores.\n"
    )
    save("noprop_memory", {"rows": rows, "ratio_peak": ratio_peak, "ratio_train": ratio_train,
                           "load": load, "args": vars(a)}, text)


if __name__ == "__main__":
    main()
