"""NeuroBench metrics of trained spiking runs, each layer's synaptic operations cross-checked by hand.

For each run file: `bioplaus.analysis.neurobench.neurobench_metrics` on its first
``--samples`` test samples (NeuroBench's own counts), and the same counts recomputed here
without NeuroBench or a convolution, from bioplaus's own forward pass (each layer's input:
the pixels for the first layer, the previous layer's pooled spikes after it):

    Linear:  effective = Σ_rows Σ_i [x_i ≠ 0] · #{o : W_oi ≠ 0}
    Conv2d (stride 1, padding p, k x k): for each kernel tap (a, b) and input channel c,
             effective = Σ_(a,b) Σ_c #{o : W_oc,ab ≠ 0} · Σ_rows Σ_(i,j) [x_c,i+a-p,j+b-p ≠ 0]
             (the input shifted by the tap, zero outside the map: one operation per in-bounds
             non-zero input per non-zero weight that reaches an output position)

rows = T·B (a direct encoder's constant input counted on every step), divided by B; the
dense count is the same with every input and weight set to 1. Writes
results/neurobench_check.md/.json: NeuroBench's table of each run and the hand counts
beside NeuroBench's (relative difference).
Run: python benchmarks/neurobench_check.py RUN.h5 [RUN.h5 ...] [--samples 200] [--name neurobench_check]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402


def synops_by_hand(x: torch.Tensor, synapse: nn.Module) -> tuple[float, float]:
    """(effective, dense) synaptic operations of ``synapse`` on the input rows ``x`` (summed over rows).

    ``x``: ``[rows, n_in]`` for a Linear, ``[rows, C, H, W]`` for a stride-1 Conv2d; see the
    module doc for the formulas (no convolution is called).
    """
    nz = (x != 0).double()
    w = (synapse.weight != 0).double()
    if isinstance(synapse, nn.Linear):
        fan = w.sum(0)  # [n_in]: non-zero weights leaving each input
        return float((nz * fan).sum()), float(x.shape[0] * w.numel())
    if not isinstance(synapse, nn.Conv2d) or synapse.stride != (1, 1) or synapse.dilation != (1, 1) \
            or synapse.groups != 1:
        raise TypeError(f"synops_by_hand: a Linear or a stride-1 Conv2d, got {synapse}")
    ph, pw = synapse.padding if isinstance(synapse.padding, tuple) else (synapse.padding,) * 2
    kh, kw = synapse.kernel_size
    rows, _, h, wd = x.shape
    ho, wo = h + 2 * ph - kh + 1, wd + 2 * pw - kw + 1
    pad = nn.functional.pad(nz, (pw, pw, ph, ph))
    ones = nn.functional.pad(torch.ones_like(nz[:1]), (pw, pw, ph, ph))
    eff = dense = 0.0
    for a in range(kh):
        for b in range(kw):
            seen = pad[:, :, a:a + ho, b:b + wo].sum((0, 2, 3))  # [C]: non-zero inputs this tap reads
            inb = float(ones[:, :, a:a + ho, b:b + wo].sum((0, 2, 3))[0])  # in-bounds positions of the tap
            eff += float((w[:, :, a, b].sum(0) * seen).sum())
            dense += rows * inb * w.shape[0] * w.shape[1]
    return eff, dense


def layer_inputs(net: Any, x: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's synaptic input on ``x``, rows = T·B (time-major flattened), from ``net``'s forward pass."""
    net.eval()
    with torch.no_grad():
        net(x)
    out = []
    for layer in net.layers:
        inp = layer.state.input  # [T, B, ...] (a direct encoder's input broadcast over T)
        if isinstance(layer.synapse, nn.Linear):
            inp = inp.reshape(-1, layer.synapse.in_features)
        else:
            inp = inp.reshape(-1, *inp.shape[-3:])
        out.append(inp)
    return out


def check_run(path: str, samples: int) -> dict[str, Any]:
    """NeuroBench's metrics of ``path`` and the hand counts of every layer."""
    from bioplaus.analysis.neurobench import _run_inputs, neurobench_metrics, neurobench_table

    m = neurobench_metrics(path, samples=samples)
    net, x, _, _ = _run_inputs(path, samples)
    hand = []
    for layer, inp, row in zip(net.layers, layer_inputs(net, x), m["layers"], strict=True):
        eff, dense = synops_by_hand(inp, layer.synapse)
        eff, dense = eff / len(x), dense / len(x)
        nb = row["effective_acs"] + row["effective_macs"]
        hand.append({"layer": row["name"], "synapse": row["synapse"],
                     "kind": "AC" if row["effective_acs"] else "MAC",
                     "NeuroBench effective": f"{nb:,.2f}", "by hand": f"{eff:,.2f}",
                     "rel. diff": f"{abs(eff - nb) / max(nb, 1e-12):.1e}",
                     "NeuroBench dense": f"{row['dense']:,.0f}", "dense by hand": f"{dense:,.0f}"})
    return {"metrics": m, "table": neurobench_table(m), "hand": hand}


def md_table(m: dict[str, Any]) -> str:
    """NeuroBench's per-layer metrics as a markdown table."""
    rows = [{"layer": r["name"], "synapse": r.get("synapse", ""), "dense": f"{r['dense']:,.0f}",
             "eff. MACs": f"{r['effective_macs']:,.1f}", "eff. ACs": f"{r['effective_acs']:,.1f}",
             "act. sparsity": f"{r['activation_sparsity']:.4f}", "conn. sparsity": f"{r['connection_sparsity']:.4f}",
             "footprint B": f"{r['footprint']:,}", "params": f"{r['params']:,}"}
            for r in [*m["layers"], {**m["total"], "name": "total"}]]
    return table(rows, list(rows[0]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--name", default="neurobench_check", help="results/<name>.md/.json")
    args = ap.parse_args()
    parts, payload = [], {}
    for path in args.runs:
        r = check_run(path, args.samples)
        m = r["metrics"]
        parts.append(f"### {Path(path).name}: {m['net']}\n\n{m['samples']} {m['dataset']} test samples, T = {m['T']}, "
                     f"accuracy on them {m['total']['accuracy']:.2f} %; operations per sample over the T steps\n\n"
                     + md_table(m) + "\n\nBy hand (no NeuroBench, no convolution; from bioplaus's forward pass):\n\n"
                     + table(r["hand"], list(r["hand"][0])))
        payload[Path(path).name] = {"metrics": m, "hand": r["hand"]}
        print(r["table"])
    load = os.getloadavg()[0]
    text = (f"## NeuroBench {payload[Path(args.runs[0]).name]['metrics']['neurobench']} metrics, "
            "cross-checked by hand\n\n" + "\n\n".join(parts) + f"\n\nLoad average (1 min) at the end: {load:.1f} "
            f"on {os.cpu_count()} cores.\n")
    save(args.name, {"runs": payload, "samples": args.samples, "load_1min": load}, text)


if __name__ == "__main__":
    main()
