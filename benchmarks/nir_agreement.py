"""Agreement of NIR readers with bioplaus on the NIR-exact models (issue 21's table).

For each net (Fashion-MNIST: MLP 784-256-256-10, a small CNN, a CubaLIF MLP, an IF MLP, and
the LIF MLP trained with r = 1) and each integration rule (exact, euler):

1. train it (short budget, cached: ``--work``/<case>_<rule>.h5; ``bioplaus run``, nice 5,
   one thread, one at a time),
2. export it with ``bioplaus export RUN --nir G.nir``, and write ``G_stripped.nir``: the
   same graph with every metadata key removed (graph and nodes) except the graph's ``dt``,
3. run the first ``--samples`` test samples through bioplaus (the trained net: the
   reference), and through each reader of G.nir and of G_stripped.nir:
   bioplaus ``from_nir`` (given only the file, resp. the file and ``dt``), Brian2
   (``bioplaus simulate GRAPH --backend brian2``, its run file read back), and each raw
   peer importer that installs here (benchmarks/nir_raw_peers.py: dt passed, nothing
   else; "+ readout" rows add only the read-out node the importer lacks).

Each cell: class agreement % (the reader's argmax of its output summed over time against
bioplaus's class) / equal spike counts % over the (sample, neuron) pairs of every spiking
node (LIF, IF, CubaLIF), with the per-node numbers in the JSON. A reader that refuses the
graph or fails prints its one line.

Run (re-runnable: trained runs and graphs are reused from --work):
    python benchmarks/nir_agreement.py [--samples 200] [--work runs/bench/nir_agreement]
Writes benchmarks/results/nir_agreement.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import nir_raw_peers as raw  # noqa: E402
from benchmarks._common import save  # noqa: E402

CLI = [sys.executable, "-c", "import sys; from bioplaus.cli import main; sys.exit(main())"]
NETS = ROOT / "benchmarks" / "nets"
# case -> (config, backend, extra overrides, what it is)
CASES: dict[str, tuple[str, str, list[str], str]] = {
    "mlp_lif_nir": ("nir_agreement_mlp.toml", "lif_nir", [], "LIF MLP 784-256-256-10"),
    "mlp_cuba_lif": ("nir_agreement_mlp.toml", "cuba_lif", [], "CubaLIF MLP 784-256-256-10"),
    "mlp_if_nir": ("nir_agreement_mlp.toml", "if_nir", [], "IF MLP 784-256-256-10"),
    "cnn_lif_nir": ("nir_agreement_cnn.toml", "lif_nir", ["data.limit_train=5000", "data.limit_test=2000"],
                    "LIF CNN 2 x [conv3x3, max-pool 2] (8, 16 ch), 5k training samples"),
    "mlp_lif_nir_r1": ("nir_agreement_mlp.toml", "lif_nir", ["network.neuron.r=1.0"],
                       "LIF MLP 784-256-256-10 with r = 1 (the default is r = tau/dt)"),
}
RULES = ("exact", "euler")
SPIKING = ("LIF", "IF", "CubaLIF")


BRIAN2_TIMEOUT = 1200.0  # s; --brian2-timeout
BRIAN2_SAMPLES: int | None = None  # --brian2-samples: the first N of the samples (None: all)


def cli(*args: str, nice: bool = False, timeout: float | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = (["nice", "-n", "5"] if nice else []) + CLI + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


def last_line(p: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (p.stderr or p.stdout).strip().splitlines() if ln.strip()]
    return lines[-1].removeprefix("bioplaus: error: ") if lines else f"exit {p.returncode}"


def train(case: str, rule: str, work: Path) -> Path:
    """The run file of ``case`` with ``rule`` (trained once, then reused)."""
    from bioplaus.record import open_run

    run = work / f"{case}_{rule}.h5"
    if run.exists():
        with open_run(run) as r:
            if r.status == "done":
                return run
    cfg, backend, extra, _ = CASES[case]
    sets = [f"network.backend={backend}", f"network.neuron.integration={rule}", *extra]
    args = ["run", str(NETS / cfg), "--out", str(run), "--overwrite"]
    for s in sets:
        args += ["--set", s]
    print(f"train {run.name}: {' '.join(sets)}", flush=True)
    p = cli(*args, nice=True)
    if p.returncode != 0:
        raise RuntimeError(f"training {run.name} failed: {last_line(p)}")
    return run


def export(run: Path) -> tuple[Path, Path, list[str]]:
    """``bioplaus export RUN --nir G.nir`` and the stripped copy (metadata: dt only)."""
    import nir

    g_path = run.with_suffix(".nir")
    p = cli("export", str(run), "--nir", str(g_path), "--overwrite")
    if p.returncode != 0:
        raise RuntimeError(f"export {run.name}: {last_line(p)}")
    g = nir.read(g_path)
    stripped = strip(g)
    s_path = run.with_name(run.stem + "_stripped.nir")
    nir.write(s_path, stripped)
    return g_path, s_path, p.stdout.strip().splitlines()


def strip(graph: Any) -> Any:
    """A copy of ``graph`` with every metadata key removed except the graph's ``dt``."""
    g = copy.deepcopy(graph)
    dt = g.metadata.get("dt") if isinstance(g.metadata, dict) else None
    g.metadata = {"dt": float(np.asarray(dt).item())} if dt is not None else {}
    for node in g.nodes.values():
        if hasattr(node, "metadata"):
            node.metadata = {}
    return g


def spiking_nodes(graph: Any) -> list[str]:
    return [k for k in raw.neuron_nodes(graph) if type(graph.nodes[k]).__name__ in SPIKING]


def compare(ref_class: np.ndarray, ref_counts: dict[str, np.ndarray], cls: np.ndarray,
            counts: dict[str, np.ndarray]) -> dict[str, Any]:
    """Class agreement and equal spike counts per node and overall (fractions)."""
    per, eq, tot = {}, 0, 0
    for k, ref in ref_counts.items():
        if k not in counts:
            per[k] = None
            continue
        c = np.rint(counts[k]).reshape(ref.shape)
        e = int((c == ref).sum())
        per[k] = e / ref.size
        eq += e
        tot += ref.size
    missing = [k for k, v in per.items() if v is None]
    return {"class": float((cls == ref_class).mean()), "counts": eq / tot if tot and not missing else None,
            "per_node": per, **({"missing_nodes": missing} if missing else {})}


def reference(run: Path, n: int, graph: Any) -> dict[str, Any]:
    """bioplaus's own run of the trained net: class and spike counts per spiking node."""
    from bioplaus.export.nir import load_net
    from bioplaus.export.samples import run_test_samples

    net = load_net(run)
    x, y, ref = run_test_samples(net, run, n)
    names = raw.neuron_nodes(graph)
    counts = {k: la.state.out.sum(0).numpy() for k, la in zip(names, net.layers)
              if type(graph.nodes[k]).__name__ in SPIKING}
    cls = ref["logits"].argmax(-1).numpy()
    return {"x": x.reshape(len(x), *net.input_shape) if any(la.is_conv for la in net.layers) else x.reshape(len(x), -1),
            "y": y, "class": cls, "counts": counts, "acc": float((cls == y).mean()), "dt": float(net.dt),
            "T": int(net.T), "net": net.describe()}


def read_bioplaus(path: Path, ref: dict[str, Any], graph: Any, stripped: bool) -> dict[str, Any]:
    from bioplaus.export.nir import from_nir

    net = from_nir(str(path), dt=ref["dt"]) if stripped else from_nir(str(path))
    with torch.no_grad():
        logits = net(ref["x"])
    names = raw.neuron_nodes(graph)
    counts = {k: la.state.out.sum(0).numpy() for k, la in zip(names, net.layers)}
    return compare(ref["class"], ref["counts"], logits.argmax(-1).numpy(), counts)


def read_brian2(path: Path, ref: dict[str, Any], graph: Any, work: Path) -> dict[str, Any]:
    from bioplaus.record import open_run

    out = work / (path.stem + "_brian2.h5")
    n = min(BRIAN2_SAMPLES or len(ref["y"]), len(ref["y"]))
    try:
        p = cli("simulate", str(path), "--backend", "brian2", "--data", "fashion_mnist", "--samples",
                str(n), "--out", str(out), "--overwrite", timeout=BRIAN2_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished in {BRIAN2_TIMEOUT:.0f} s (--brian2-timeout)"}
    if p.returncode != 0:
        return {"refused": last_line(p)}
    names = spiking_nodes(graph)
    counts = {}
    with open_run(out) as r:
        cls = r.array("/simulate/predicted")
        pops = sorted((k for k in r.populations if k.startswith("layer")), key=lambda s: int(s[5:]))
        for k, pop in zip(names, pops):
            ev = r.spikes(pop)
            c = np.zeros((n, ev.n_neurons))
            np.add.at(c, (ev.sample, ev.neuron), 1)
            counts[k] = c
    got = compare(ref["class"][:n], {k: v[:n] for k, v in ref["counts"].items()}, cls, counts)
    return {**got, "samples": n} if n < len(ref["y"]) else got


def read_peer(peer: str, path: Path, ref: dict[str, Any], readout: bool) -> dict[str, Any]:
    import nir

    g = nir.read(path)  # a fresh graph: importers may edit it
    res = raw.run(peer, g, ref["x"], ref["dt"], ref["T"], readout=readout)
    cls = res.out.sum(0).reshape(len(ref["y"]), -1).argmax(-1)
    counts = {k: v.sum(0) for k, v in res.spikes.items()}
    return compare(ref["class"], ref["counts"], cls, counts)


def guarded(fn: Any, *args: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        r = fn(*args)
    except Exception as e:  # noqa: BLE001 - a reader's failure is a result
        msg = str(e).strip().splitlines()
        r = {"error": f"{type(e).__name__}: {msg[0][:180] if msg else ''}"}
    r["seconds"] = round(time.perf_counter() - t0, 2)
    return r


def readers(peers: list[str]) -> list[tuple[str, str, bool]]:
    """(label, peer, readout) rows: bioplaus, Brian2, then each peer raw and, for the torch
    peers that stop at or drop the read-out node, with it added."""
    rows = [("bioplaus from_nir", "bioplaus", False), ("Brian2 (bioplaus simulate)", "brian2", False)]
    for p in peers:
        rows.append((f"{p} (raw)", p, False))
        if p in ("norse", "snntorch", "spikingjelly"):
            rows.append((f"{p} + readout", p, True))
    return rows


def measure(case: str, rule: str, work: Path, n: int, peers: list[str]) -> dict[str, Any]:
    import nir

    run = train(case, rule, work)
    g_path, s_path, lines = export(run)
    graph = nir.read(g_path)
    ref = reference(run, n, graph)
    out: dict[str, Any] = {"case": case, "rule": rule, "run": str(run), "graph": str(g_path), "export": lines,
                           "net": ref["net"], "samples": len(ref["y"]), "test_acc_samples": ref["acc"],
                           "spiking_nodes": list(ref["counts"]), "cells": {}}
    for label, who, readout in readers(peers):
        for variant, path in (("graph", g_path), ("stripped", s_path)):
            if who == "bioplaus":
                r = guarded(read_bioplaus, path, ref, graph, variant == "stripped")
            elif who == "brian2":
                r = guarded(read_brian2, path, ref, graph, work)
            else:
                r = guarded(read_peer, who, path, ref, readout)
            out["cells"][f"{label} | {variant}"] = r
            print(f"{case} {rule} {label} [{variant}]: {cell(r)}", flush=True)
    return out


def cell(r: dict[str, Any] | None, width: int = 0) -> str:
    """A table cell: "class % / counts %", or the reader's refusal / failure (cut to ``width``)."""
    def cut(text: str) -> str:
        if width:  # a short form of the importers' "no mapping" errors
            text = re.sub(r"(?:Unknown node type|Cannot convert) <class 'nir\.ir\.[\w.]*?\.(\w+)'>.*", r"no \1 node", text)
        return text if not width or len(text) <= width else text[: width - 1] + "…"

    if r is None:
        return "–"
    if "refused" in r:
        return cut(f"refused: {r['refused']}")
    if "error" in r:
        err = re.sub(r"/\S+/([^/\s]+\.nir)", r"\1", r["error"])  # the file's name, not its folder
        if err.startswith("NIRFileError: "):  # bioplaus's one-line refusal of a graph
            return cut("refused: " + err.removeprefix("NIRFileError: "))
        return cut(f"fails: {err}")
    c = "–" if r["counts"] is None else f"{100 * r['counts']:.2f} %"
    n = f" (n={r['samples']})" if r.get("samples") else ""  # a reader run on fewer samples (--brian2-samples)
    return f"{100 * r['class']:.1f} % / {c}{n}"


def summary(results: list[dict[str, Any]], peers: list[str]) -> str:
    """One row per reader, one column per (net, rule): the cells of the exported graph."""
    cols = [r for r in results if "cells" in r]
    head = ["reader"] + [f"{r['case']} {r['rule']}" for r in cols]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, _, _ in readers(peers):
        row = [label] + [cell(r["cells"].get(f"{label} | graph"), 40) for r in cols]
        out.append("| " + " | ".join(x.replace("|", "\\|") for x in row) + " |")
    return "\n".join(out)


def markdown(results: list[dict[str, Any]], meta: dict[str, Any], peers: list[str]) -> str:
    lines = ["# NIR readers against bioplaus on the NIR-exact models (issue 21)", "",
             f"{meta['samples']} Fashion-MNIST test samples per net; each cell: class agrees / equal spike counts "
             "over the (sample, neuron) pairs of every spiking node (LIF, IF, CubaLIF; per node in the JSON). "
             "'graph': the file `bioplaus export --nir` wrote; 'stripped': the same with every metadata key removed "
             "except dt. Raw peers get dt (where their API takes it) and nothing else; '+ readout' adds only the "
             "read-out node (LI / CubaLI) the importer lacks, from the peer's own leaky integrator. "
             "The lif_nir and cuba_lif graphs are exported with r folded into the synapses (nodes r = 1; "
             "`bioplaus export`'s default, exact; docs/export.md); the table before the fold (r = tau/dt in the "
             "nodes, Brian2 not yet reading these graphs) is results/nir_agreement_before_fold.md.", "",
             f"Budget: {meta['budget']}. Versions: {meta['versions']}.",
             f"Load: start `{meta['uptime_start']}`, end `{meta['uptime_end']}` (2 cores shared with other work). "
             f"Command: `{meta['command']}`.", ""]
    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        by_case.setdefault(r["case"], {})[r["rule"]] = r
    lines += ["## Summary (the exported graph; the stripped graph's cells follow per net)", "", summary(results, peers), ""]
    for case, rules in by_case.items():
        any_r = next(iter(rules.values()))
        accs = ", ".join(f"{rule}: {100 * r['test_acc_samples']:.1f} %" for rule, r in rules.items()
                         if "test_acc_samples" in r)
        lines += [f"## {CASES[case][3]} (`{case}`): {any_r.get('net', '')}", "",
                  f"bioplaus accuracy on these samples: {accs}.", ""]
        head = ["reader"] + [f"{rule} {v}" for rule in RULES if rule in rules for v in ("graph", "stripped")]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label, _, _ in readers(peers):
            row = [label]
            for rule in RULES:
                if rule not in rules:
                    continue
                for v in ("graph", "stripped"):
                    r = rules[rule]
                    row.append(cell(r.get("cells", {}).get(f"{label} | {v}"), 90) if "error" not in r
                               else f"fails: {r['error']}")
            lines.append("| " + " | ".join(x.replace("|", "\\|") for x in row) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    global BRIAN2_TIMEOUT, BRIAN2_SAMPLES  # noqa: PLW0603 - one setting for every Brian2 call of this run
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench" / "nir_agreement"))
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    ap.add_argument("--peers", nargs="+", default=list(raw.PEERS), choices=list(raw.PEERS))
    ap.add_argument("--train-only", action="store_true", help="train (and cache) the runs, nothing else")
    ap.add_argument("--render", action="store_true", help="only rewrite results/<name>.md from its JSON")
    ap.add_argument("--name", default="nir_agreement", help="results/<name>.{md,json}")
    ap.add_argument("--brian2-timeout", type=float, default=BRIAN2_TIMEOUT,
                    help="seconds one `bioplaus simulate --backend brian2` may take (then the cell says so)")
    ap.add_argument("--brian2-samples", type=int, default=None,
                    help="run Brian2 on the first N samples only (default: --samples); the cell says N")
    ap.add_argument("--merge", action="store_true",
                    help="keep the (case, rule) results of an earlier results/<name>.json that this run does not redo")
    a = ap.parse_args()
    BRIAN2_TIMEOUT = a.brian2_timeout
    BRIAN2_SAMPLES = a.brian2_samples
    torch.set_num_threads(1)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.render:
        prev = json.loads((ROOT / "benchmarks" / "results" / f"{a.name}.json").read_text())
        shown = [p for p in a.peers if p not in prev.get("peers_not_available", [])]
        text = markdown(prev["results"], prev, shown)
        (ROOT / "benchmarks" / "results" / f"{a.name}.md").write_text(text + "\n")
        print(text)
        return
    if a.train_only:
        for case in a.cases:
            for rule in a.rules:
                train(case, rule, work)
        return
    peers = [p for p in a.peers if raw.available(p)]
    up0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    results = []
    for case in a.cases:
        for rule in a.rules:
            try:
                results.append(measure(case, rule, work, a.samples, peers))
            except Exception as e:  # noqa: BLE001 - one failed case leaves the others
                results.append({"case": case, "rule": rule, "error": f"{type(e).__name__}: {e}"})
                print(case, rule, "failed:", e, flush=True)
    import brian2
    import nir

    old = ROOT / "benchmarks" / "results" / f"{a.name}.json"
    if a.merge and old.exists():
        done = {(r["case"], r["rule"]) for r in results}
        prev = json.loads(old.read_text())
        kept = [r for r in prev.get("results", []) if (r["case"], r["rule"]) not in done]
        order = {c: i for i, c in enumerate(CASES)}
        results = sorted(kept + results, key=lambda r: (order.get(r["case"], 99), RULES.index(r["rule"])))
        up0 = f"{prev.get('uptime_start', '?')} (earlier cases); {up0}"
    meta = {"samples": a.samples, "brian2_samples": a.brian2_samples or a.samples, "uptime_start": up0,
            "uptime_end": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            "versions": ", ".join([f"nir {nir.__version__ if hasattr(nir, '__version__') else '1.0.8'}",
                                   f"brian2 {brian2.__version__}", f"torch {torch.__version__}"]
                                  + [f"{p} {v}" for p, v in raw.versions().items() if v]),
            "budget": "MLPs: 1 epoch of the 60k training set (Adam 1e-3, batch 128, T = 20, dt = 1 ms, tau = 5 ms); "
                      "CNN: 1 epoch of the first 5k (test accuracy on the first 2k test samples) (benchmarks/nets/nir_agreement_{mlp,cnn}.toml)",
            "command": "python benchmarks/nir_agreement.py " + " ".join(sys.argv[1:]),
            "peers_not_available": [p for p in a.peers if p not in peers]}
    save(a.name, {**meta, "results": results}, markdown(results, meta, peers))


if __name__ == "__main__":
    main()
