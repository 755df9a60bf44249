"""Peer agreement of bioplaus NIR graphs (issue 11): snntorch and Norse, raw and adapted.

For each trained run (the quickstart net and the Fashion-MNIST 784-256-256-10 net, trained
by ``bioplaus run``), on the first N test samples: bioplaus's class (argmax of the readout)
and every LIF neuron's spike count, against the same from the peer's module:

  raw      snntorch ``import_from_nir(graph)``; Norse ``from_nir(graph, dt=dt)``
  raw-LIF  the same on the graph exported with ``li_readout=False`` (output = LIF spikes,
           since neither raw importer reads an LI node); class = argmax of output spikes
  adapted  ``bioplaus.export.peers.snntorch_from_nir`` / ``norse_from_nir``

Usage: python benchmarks/nir_peers.py RUN.h5 [RUN.h5 ...] [--samples 100] [--out benchmarks/results/nir_peers]
Writes <out>.json and <out>.md. Single thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bioplaus.export.nir import load_net, to_nir
from bioplaus.export.peers import neuron_nodes, norse_from_nir, quiet, run_peer, snntorch_from_nir
from bioplaus.export.samples import run_test_samples


def _compare(ref_class, ref_counts, out, caught, names, spiking_names):
    """Class agreement and per-(sample, neuron) spike-count equality of a peer run."""
    peer_class = out.sum(0).argmax(-1).numpy()
    eq, total = 0, 0
    per_layer = {}
    for k in spiking_names:
        if k not in caught or k not in ref_counts:
            continue
        c = caught[k].sum(0).numpy()
        e = int((np.rint(c) == ref_counts[k]).sum())
        per_layer[k] = e / ref_counts[k].size
        eq += e
        total += ref_counts[k].size
    return {"class_agree": float((peer_class == ref_class).mean()),
            "spike_counts_equal": eq / total if total else None, "per_layer": per_layer}


def measure(run: str, n: int) -> dict:
    net = load_net(run)
    x, y, ref = run_test_samples(net, run, n)
    spk_ref = {f"lif{la.index}": la.state.out.sum(0).numpy() for la in net.layers}
    ref_class = ref["logits"].argmax(-1).numpy()
    xt = net.encode(x.reshape(len(x), -1))
    res = {"run": run, "net": f"{Path(run).stem}: {net.describe()}", "samples": len(x),
           "output_spikes": bool(net.cfg.spiking.output_spikes),
           "bioplaus_acc": float((ref_class == y).mean())}
    dt = float(net.dt)
    variants = (("li", True), ("lif", False)) if net.cfg.spiking.output_spikes else (("li", True),)
    for variant, li in variants:
        g = to_nir(net, li_readout=li)
        names = neuron_nodes(g)
        spiking = [k for k in names if k.startswith("lif")]
        for peer in ("snntorch", "norse"):
            for mode in ("raw", "adapted"):
                if mode == "adapted" and variant == "lif":
                    continue
                key = f"{peer}/{mode}" + ("" if variant == "li" else "-LIF-output")
                try:
                    g = to_nir(net, li_readout=li)  # importers may edit the graph
                    if peer == "snntorch":
                        from snntorch.import_nir import import_from_nir
                        mod = quiet(import_from_nir if mode == "raw" else snntorch_from_nir, g)
                    else:
                        import norse.torch as nt
                        mod = quiet(nt.from_nir, g, dt=dt) if mode == "raw" else norse_from_nir(g, dt=dt)
                    t0 = time.perf_counter()
                    out, caught = quiet(run_peer, mod, xt, names, peer)
                    r = _compare(ref_class, spk_ref, out, caught, names, spiking)
                    r["seconds"] = time.perf_counter() - t0
                except Exception as e:  # noqa: BLE001 - a peer's failure is a result
                    r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
                res[key] = r
                print(key, r, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--out", default="benchmarks/results/nir_peers")
    a = ap.parse_args()
    torch.set_num_threads(1)
    import nir
    import norse
    import snntorch

    out = {"load": os.getloadavg(), "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
           "versions": {"nir": nir.__version__ if hasattr(nir, "__version__") else "1.0.8",
                        "snntorch": snntorch.__version__, "norse": getattr(norse, "__version__", "?"),
                        "torch": torch.__version__},
           "results": [measure(r, a.samples) for r in a.runs]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out + ".json").write_text(json.dumps(out, indent=1, default=float))
    lines = [f"# NIR peer agreement ({out['uptime']})", "",
             "| net | reader | class agrees | spike counts equal (sample, neuron) | note |", "|---|---|---|---|---|"]
    for r in out["results"]:
        for k, v in r.items():
            if "/" not in k or not isinstance(v, dict):
                continue
            if "error" in v:
                lines.append(f"| {r['net']} | {k} | – | – | {v['error']} |")
            else:
                sc = v["spike_counts_equal"]
                lines.append(f"| {r['net']} | {k} | {100 * v['class_agree']:.1f} % | "
                             f"{'–' if sc is None else f'{100 * sc:.2f} %'} | |")
    Path(a.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
