"""Brian2 vs bioplaus on a trained net's NIR graph (issue 11).

For each run: export the net to NIR (time, file size), re-import it (time), run bioplaus
(torch backend) and Brian2 (runtime = Cython, then standalone = C++) on the first N test
samples, and compare per-neuron spike counts (all layers, every (sample, neuron) pair),
exact spike trains, and the predicted class. Wall times per sample: Brian2 runtime first
call (includes the Cython compile unless cached) and second call (cached), standalone first
and second call (the second reuses the compiled objects).

Usage: python benchmarks/brian2_agreement.py RUN.h5 [RUN.h5 ...] [--samples 100] [--out benchmarks/results/brian2_agreement]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bioplaus.export.cli import run_metadata
from bioplaus.export.nir import export_nir, from_nir, load_net
from bioplaus.export.samples import run_test_samples
from bioplaus.simulators.brian2 import simulate_bioplaus, simulate_brian2


def compare(a, b) -> dict:
    eq = tot = exact = 0
    per = {}
    for k in a.spikes:
        ca, cb = a.spikes[k].sum(0), b.spikes[k].sum(0)
        per[k] = float((ca == cb).mean())
        eq += int((ca == cb).sum())
        tot += ca.size
        exact += int((a.spikes[k] == b.spikes[k]).all(0).sum())
    return {"spike_counts_equal": eq / tot, "spike_trains_equal": exact / tot, "per_layer": per,
            "class_equal": float((a.predicted == b.predicted).mean()),
            "max_abs_mem_diff": float(np.abs(a.mem_out - b.mem_out).max())}


def measure(run: str, n: int, tmp: Path, cold: bool = False) -> dict:
    net = load_net(run)
    x, y, _ = run_test_samples(net, run, n)
    path = tmp / (Path(run).stem + ".nir")
    t0 = time.perf_counter()
    export_nir(net, path, extra_metadata=run_metadata(run))
    t_export = time.perf_counter() - t0
    t0 = time.perf_counter()
    from_nir(path)
    t_import = time.perf_counter() - t0
    ref = simulate_bioplaus(str(path), x)
    out = {"run": run, "net": f"{Path(run).stem}: {net.describe()}", "samples": len(y), "nir_bytes": path.stat().st_size,
           "export_s": t_export, "import_s": t_import, "bioplaus_s_per_sample": ref.seconds["run"] / len(y),
           "bioplaus_acc": float((ref.predicted == y).mean())}
    if cold:  # an empty Cython cache: the first runtime call compiles everything
        import brian2

        brian2.prefs.codegen.runtime.cython.cache_dir = str(tmp / f"cython_{Path(run).stem}")
    for mode in ("runtime", "standalone"):
        for call in (1, 2):
            t0 = time.perf_counter()
            res = simulate_brian2(str(path), x, mode=mode, reading="bioplaus", cache_dir=tmp / f"sa_{Path(run).stem}" if mode == "standalone" else None)
            wall = time.perf_counter() - t0
            r = compare(ref, res)
            r.update({"wall_s": wall, "wall_s_per_sample": wall / len(y), **{f"{k}_s": v for k, v in res.seconds.items()}})
            out[f"brian2_{mode}_call{call}"] = r
            print(mode, call, r, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--out", default="benchmarks/results/brian2_agreement")
    ap.add_argument("--cold", action="store_true", help="start from an empty Cython cache (the first runtime call compiles)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    import brian2

    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as d:
        results = [measure(r, a.samples, Path(d), a.cold) for r in a.runs]
    up_end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    out = {"uptime_start": up, "uptime_end": up_end, "cold_cython_cache": a.cold, "brian2": brian2.__version__, "torch": torch.__version__,
           "threads": 1, "results": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out + ".json").write_text(json.dumps(out, indent=1, default=float))
    lines = ["# Brian2 vs bioplaus on NIR graphs", "", f"Load: start `{up}`, end `{up_end}`; brian2 {brian2.__version__}, 1 thread; "
             f"{'empty Cython cache (the first net compiles in its runtime call 1; later nets reuse code compiled in this process)' if a.cold else 'warm Cython cache'}.", "",
             "| net | samples | NIR size | export | re-import | Brian2 mode, call | spike counts equal | spike trains equal | class equal | wall / sample | simulation only / sample |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for mode in ("runtime", "standalone"):
            for call in (1, 2):
                v = r[f"brian2_{mode}_call{call}"]
                lines.append(f"| {r['net']} | {r['samples']} | {r['nir_bytes'] / 1e6:.2f} MB | {1e3 * r['export_s']:.0f} ms | "
                             f"{1e3 * r['import_s']:.0f} ms | {mode}, {call} | {100 * v['spike_counts_equal']:.2f} % | "
                             f"{100 * v['spike_trains_equal']:.2f} % | {100 * v['class_equal']:.0f} % | "
                             f"{1e3 * v['wall_s_per_sample']:.1f} ms | {1e3 * v['sim_s'] / r['samples']:.2f} ms |")
        lines.append(f"| {r['net']} | bioplaus (torch, batch of {r['samples']}) | | | | | | | | {1e3 * r['bioplaus_s_per_sample']:.2f} ms | |")
    Path(a.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
