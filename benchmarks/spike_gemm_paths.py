"""Per-product time of each spike-synapse path: float32 GEMM, bf16 split, table lookup
(AVX-512, AVX2, portable C++), side by side in one process.

The products of one spike-fed synapse of the 784-800-800-10 benchmark net (T = 20, batch 128):
2560 x 800 spikes (20 % density), 800 outputs. "forward" is the current s·Wᵀ, "weight grad"
the weight gradient gᵀ·s (g float32 [2560, 800]), each as `spike_linear` runs it (packing
or splitting included). Every path runs on the same operands; the repeats are interleaved
(one call of each path in turn), so load from other processes hits all of them alike.
The table-lookup paths are checked to give the same bits; every path is checked against
float64 within a float32 GEMM's error.

Run: python benchmarks/spike_gemm_paths.py [--repeat 15] [--threads 1,2] [--name spike_gemm_paths]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import machine, save, table  # noqa: E402
from benchmarks.spiking_speed import interleaved  # noqa: E402
from bioplaus.neurons import kernel as kmod  # noqa: E402
from bioplaus.neurons.synapses import lut_paths  # noqa: E402

WHAT = {"fp32": "float32 GEMM (torch)", "bf16x3": "exact bf16 split (oneDNN brgemm)",
        "lut512": "table lookup, AVX-512", "lut256": "table lookup, AVX2",
        "lutportable": "table lookup, portable C++ (x86: SSE2)"}


def products(k: Any, path: str, s: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> dict[str, Any]:
    """The forward and weight-gradient product of ``path`` as closures (packing included)."""
    m, kk = s.shape
    if path == "fp32":
        return {"forward": lambda: torch.nn.functional.linear(s, w), "weight grad": lambda: g.t() @ s}
    if path == "bf16x3":
        def fwd() -> torch.Tensor:
            return k.spike_mm(k.to_bf16_exact(s)[0], w)

        def wgrad() -> torch.Tensor:
            return k.spike_mm_wgrad(g, k.to_bf16_exact(s)[0])

        return {"forward": fwd, "weight grad": wgrad}

    def fwd_lut() -> torch.Tensor:
        return k.bin_mm(k.pack_binary(s, False, path)[0], m, kk, w.t(), path)

    def wgrad_lut() -> torch.Tensor:
        return k.bin_mm(k.pack_binary(s, True, path)[0], kk, m, g, path).t().contiguous()

    return {"forward": fwd_lut, "weight grad": wgrad_lut}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2560, help="spike rows (T x batch)")
    ap.add_argument("--inputs", type=int, default=800)
    ap.add_argument("--outputs", type=int, default=800)
    ap.add_argument("--density", type=float, default=0.2)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--name", default="spike_gemm_paths")
    args = ap.parse_args()
    k = kmod.kernel()
    if k is None:
        sys.exit("spike_gemm_paths: the compiled kernel is unavailable (see the warning above)")
    paths = ["fp32"] + (["bf16x3"] if kmod.kernel_flag(k, "bf16_units") else []) + list(lut_paths())
    gen = torch.Generator().manual_seed(0)
    M, K, N = args.rows, args.inputs, args.outputs
    s = (torch.rand(M, K, generator=gen) < args.density).float()
    w = torch.randn(N, K, generator=gen) * 0.05
    g = torch.randn(M, N, generator=gen) * 1e-3
    ref = {"forward": s.double() @ w.double().t(), "weight grad": g.double().t() @ s.double()}
    fns = {p: products(k, p, s, w, g) for p in paths}
    # exactness: every path within a float32 GEMM's error of float64; the lookups bit-equal
    check: dict[str, Any] = {}
    for prod in ("forward", "weight grad"):
        outs = {p: fns[p][prod]() for p in paths}
        err32 = float((outs["fp32"].double() - ref[prod]).abs().max())
        check[prod] = {p: float((o.double() - ref[prod]).abs().max()) / max(err32, 1e-30) for p, o in outs.items()}
        luts = [p for p in paths if p.startswith("lut")]
        check[prod]["luts bit-equal"] = all(torch.equal(outs[p], outs[luts[0]]) for p in luts)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    res: dict[str, Any] = {}
    old = torch.get_num_threads()
    for nt in [int(t) for t in args.threads.split(",") if t.strip()]:
        torch.set_num_threads(nt)
        for prod in ("forward", "weight grad"):
            t = interleaved({p: fns[p][prod] for p in paths}, args.repeat, warmup=2)
            res[f"{prod}, {nt} thread(s)"] = t
            base = t["fp32"]["median_s"]
            for p in paths:
                rows.append({"threads": nt, "product": prod, "path": p, "what": WHAT[p],
                             "ms (median)": 1e3 * t[p]["median_s"], "ms (min)": 1e3 * t[p]["min_s"],
                             "x faster than fp32": base / t[p]["median_s"]})
    torch.set_num_threads(old)
    load_after = os.getloadavg()
    m = machine()
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    isa = [f for f in ("avx512f", "avx2", "amx_tile") if f" {f}" in flags]
    cmd = "python benchmarks/spike_gemm_paths.py " + " ".join(sys.argv[1:])
    text = (f"# Spike-synapse products per path: {M} x {K} spikes ({args.density:.0%} density), {N} outputs\n\n"
            + table(rows, ["threads", "product", "path", "what", "ms (median)", "ms (min)", "x faster than fp32"])
            + "\n\nError vs float64 / the float32 GEMM's error (max abs), per path: "
            + "; ".join(f"{prod}: " + ", ".join(f"{p} {v:.2f}" if isinstance(v, float) else f"{p} {v}"
                                                for p, v in c.items()) for prod, c in check.items())
            + f"\n\nMachine: {m['cpu']} ({m['cpus']} cores; {', '.join(isa) or 'no AVX2'}), torch {m['torch']}; "
            f"load average (1, 5, 15 min) before {tuple(round(x, 2) for x in load_before)}, after "
            f"{tuple(round(x, 2) for x in load_after)}. Repeats interleaved ({args.repeat} each), medians; "
            f"on a shared machine the absolute times move with the load, the ratios much less.\n\n"
            f"Command: `{cmd.strip()}`\n")
    save(args.name, {"shape": [M, K, N], "density": args.density, "paths": paths, "times": res,
                     "rows": rows, "error_vs_fp32": check, "isa": isa, "load_before": load_before,
                     "load_after": load_after, "command": cmd.strip()}, text)


if __name__ == "__main__":
    main()
