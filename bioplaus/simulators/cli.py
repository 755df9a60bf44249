"""``bioplaus simulate GRAPH.nir --backend brian2 --data DATASET --samples N --out RUN.h5``.

The command builds a ``kind = "simulate"`` config (`bioplaus.experiments.simulate`) and runs
it through the one run driver, so its run file gets the status, interrupt and overwrite
handling of every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bioplaus.errors import BioplausError


def _cmd_simulate(args: argparse.Namespace) -> int:
    from bioplaus.config import load_config
    from bioplaus.experiments.base import run_experiment
    from bioplaus.experiments.simulate import default_out

    if not Path(args.graph).is_file():
        raise BioplausError(f"{args.graph}: no such NIR file")
    cfg = load_config({
        "name": Path(args.graph).stem or "simulate",
        "kind": "simulate",
        "simulate": {"graph": str(args.graph), "backend": args.backend, "mode": args.mode,
                     "data": args.data or "", "samples": args.samples, "dt": args.dt or 0.0,
                     "integration": args.integration or "", "reading": args.reading},
        "train": {"progress": False, "report": False},
    })
    out = Path(args.out) if args.out else default_out(args.graph, args.backend)
    res = run_experiment(cfg, out=out, overwrite=args.overwrite)
    n = len(res.experiment.y)
    print(f"{res.path}: {args.backend} ({args.mode}) on {n} samples, test_acc={res.metrics['test_acc']:.4f}, "
          f"{res.metrics['wall_seconds']:.1f} s")
    if res.experiment.note:
        print(f"note: {res.experiment.note}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run a NIR graph in a simulator (brian2) and record a run file")
    p.add_argument("graph", help="NIR file (e.g. from bioplaus export RUN --nir OUT.nir)")
    p.add_argument("--backend", default="brian2", help="simulator: brian2 (default) | bioplaus")
    p.add_argument("--data", help="data set whose test samples to run (default: the one in the graph)")
    p.add_argument("--samples", type=int, default=100, help="first N test samples (default 100)")
    p.add_argument("--mode", default="runtime", help="brian2: runtime (Cython) | standalone (C++) | numpy")
    p.add_argument("--dt", type=float, help="time step in s (default: the graph's metadata dt, else 1 ms)")
    p.add_argument("--integration",
                   help="exact | euler: how each node's ODE is stepped (default: the graph's metadata, else exact)")
    p.add_argument("--reading", default="graph",
                   help="brian2: graph = the nodes as the NIR spec states them (default); bioplaus = replay "
                        "bioplaus's discrete LIF with the conventions the metadata names")
    p.add_argument("--out", help="run file (default <graph>_<backend>.h5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    p.set_defaults(func=_cmd_simulate)
