"""``bioplaus export RUN [--nir OUT.nir] [--nwb OUT.nwb]``: a trained net as NIR, a run as NWB."""

from __future__ import annotations

import argparse
from pathlib import Path

from bioplaus.errors import BioplausError


def run_metadata(run_path: str | Path) -> dict:
    """What a NIR graph exported from a run records of its data (data set, normalisation)."""
    from bioplaus.config import load_config
    from bioplaus.record import open_run

    with open_run(run_path) as run:
        try:
            cfg = load_config(run.config)
        except BioplausError:
            return {}
    if cfg.section("data") is None:  # a kind without [data]
        return {}
    return {"dataset": cfg.data.dataset, "normalize": cfg.data.normalize, "run": Path(run_path).name}


def _cmd_export(args: argparse.Namespace) -> int:
    if not Path(args.file).is_file():
        raise BioplausError(f"{args.file}: no such run file")
    nir_out = args.nir
    if args.format not in (None, "nir", "nwb"):
        raise BioplausError(f"--format: unknown format {args.format!r}; valid: nir, nwb")
    nwb_out = args.nwb
    if args.format == "nwb" and not nwb_out:
        nwb_out = args.out or str(Path(args.file).with_suffix(".nwb"))
    if not nwb_out and not nir_out:
        nir_out = args.out or str(Path(args.file).with_suffix(".nir"))
    if nir_out:
        from bioplaus.export.nir import (
            export_nir,
            load_net,
            read_nir,
            trained_integration,
            truth_line,
        )
        from bioplaus.record.writer import check_export_path

        check_export_path(nir_out, args.overwrite, "the NIR file", kind="nir", source=args.file)

        net = load_net(args.file)
        rule = args.integration or trained_integration(net)
        export_nir(net, nir_out, integration=rule, extra_metadata=run_metadata(args.file), fold_r=args.fold_r)
        own = getattr(net.layers[0].neuron.params, "integration", None)  # a NIR-exact model's rule
        how = "given" if args.integration else "the rule the net was trained with"
        what = f"NIR-exact nodes, the net's {own} rule" if own else f"{rule} parameters, {how}"
        print(f"{nir_out}: NIR graph of {net.describe()} ({what}; dt, T, "
              "the reset rule and the readout in its metadata)")
        graph = read_nir(nir_out)
        if isinstance(graph.metadata, dict) and graph.metadata.get("r_folded"):
            print(f"{nir_out}: r folded into the synapses (nodes r = 1; exact; --no-fold-r keeps r in the nodes)")
        print(f"{nir_out}: {truth_line(graph)}")
    if nwb_out:
        from bioplaus.export.nwb import export_nwb

        info = export_nwb(args.file, nwb_out, overwrite=args.overwrite)
        print(f"{nwb_out}: NWB file with {info['units']} units, {info['spikes']} spikes, "
              f"{info['series']} time series")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained spiking net (NIR graph) or a run's recordings (NWB)")
    p.add_argument("file", help="run file")
    p.add_argument("--nir", metavar="OUT.nir", help="write the trained net as a NIR graph")
    p.add_argument("--nwb", metavar="OUT.nwb", help="write spikes, membrane traces and input as NWB")
    p.add_argument("--integration", default=None, choices=["euler", "exact"],
                   help="rule the NIR LIF parameters are computed for (default: the rule the net was "
                   "trained with; euler for the discrete LIF; docs/export.md)")
    p.add_argument("--fold-r", default=None, action=argparse.BooleanOptionalAction,
                   help="write LIF/LI/CubaLIF nodes with r = 1 and r in the synapse weights (exact; default: on "
                   "for lif_nir and cuba_lif nets, so readers that ignore r read them right; docs/export.md)")
    p.add_argument("--format", default=None, help="nir | nwb (older form of --nir / --nwb, with --out)")
    p.add_argument("--out", help="output file for --format (default <run>.nir / <run>.nwb)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing NIR / NWB file")
    p.set_defaults(func=_cmd_export)
