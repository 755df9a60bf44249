"""``bioplaus sweep`` and ``bioplaus compare`` (registered by bioplaus.cli)."""

from __future__ import annotations

import argparse
import sys


def _cmd_sweep(args: argparse.Namespace) -> int:
    from bioplaus.sweep.runner import sweep
    from bioplaus.sweep.spec import parse_axes

    grid = parse_axes(args.grid, "--grid")
    zipped = parse_axes(args.zip, "--zip")
    res = sweep(args.config, grid=grid, zip=zipped, seeds=args.seeds, out=args.out, workers=args.workers,
                overrides=args.set, progress=not args.quiet, report=args.report, ray=args.ray)
    print(res.summary())
    for row in res.failed:
        print(f"  failed: {row['file']}: {row.get('error') or 'no error recorded'}")
    if res.interrupted:
        print("bioplaus: sweep interrupted; run the same command again to finish it", file=sys.stderr)
        return 130
    return 0 if res.ok else 1


def _cmd_compare(args: argparse.Namespace) -> int:
    from bioplaus.sweep.compare import compare

    c = compare(args.paths, by=args.by or None, metric=args.metric, out=args.out, plot=args.plot)
    print(c.table())
    for f in c.files:
        print(f)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="run a config over a grid of settings x seeds, one run file each + an index")
    s.add_argument("config", help="experiment TOML file or packaged sim name")
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a cartesian axis, values as TOML, e.g. --grid rule.lr=0.01,0.1 (repeatable)")
    s.add_argument("--zip", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="axes that move together (same length), e.g. --zip rule.name=bp,ccl --zip rule.lr=0.1,0.05")
    s.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 per setting (default 1)")
    s.add_argument("--out", required=True, help="directory for the run files and index.csv / index.h5")
    s.add_argument("--workers", type=int, default=None,
                   help="1 = in this process; K = a pool of K processes (default: the cores)")
    s.add_argument("--ray", metavar="ADDRESS",
                   help="run every run as a Ray task: HOST:PORT of a Ray head, or 'local' to start one "
                        "in this process (needs the ray extra)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value for every run (repeatable)")
    s.add_argument("--report", action="store_true", help="write figures for every run")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    s.set_defaults(func=_cmd_sweep)
    c = sub.add_parser("compare", help="mean ± std over seeds of a final metric, grouped by the differing settings")
    c.add_argument("paths", nargs="+", metavar="DIR_OR_FILE", help="sweep directories or run files")
    c.add_argument("--by", action="append", default=[], metavar="KEY",
                   help="group by this config key (repeatable; default: the keys that differ)")
    c.add_argument("--metric", help="final metric to compare (default: the declared headline)")
    c.add_argument("--out", help="directory for compare_<metric>.csv/.md/.png (default: the first directory)")
    c.add_argument("--plot", action="store_true", help="also draw the metric against the first numeric key")
    c.set_defaults(func=_cmd_compare)
