"""``bioplaus export RUN --format nir --out FILE``: a trained spiking net as a NIR graph."""

from __future__ import annotations

import argparse
from pathlib import Path

from bioplaus.errors import BioplausError


def _cmd_export(args: argparse.Namespace) -> int:
    from bioplaus.export.nir import export_nir, load_net

    if not Path(args.file).is_file():
        raise BioplausError(f"{args.file}: no such run file")
    if args.format != "nir":
        raise BioplausError(f"--format: unknown format {args.format!r}; valid: nir")
    net = load_net(args.file)
    out = Path(args.out) if args.out else Path(args.file).with_suffix(".nir")
    export_nir(net, out)
    print(f"{out}: NIR graph of {net.describe()} (dt, T and the reset rule in its metadata)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained spiking net (NIR graph)")
    p.add_argument("file", help="run file with a saved model")
    p.add_argument("--format", default="nir", help="nir (default)")
    p.add_argument("--out", help="output file (default <run>.nir)")
    p.set_defaults(func=_cmd_export)
