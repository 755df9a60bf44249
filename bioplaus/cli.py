"""Command line: ``bioplaus run | inspect | report | list``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bioplaus import __version__
from bioplaus.errors import BioplausError, ConfigError, RunInterrupted
from bioplaus.procs import catch_signals


def _cmd_run(args: argparse.Namespace) -> int:
    from bioplaus.api import run

    progress = False if args.quiet else None
    try:
        res = run(args.config, args.set, out=args.out, progress=progress,
                  report=False if args.no_report else None, overwrite=True if args.overwrite else None)
    except RunInterrupted as exc:
        if exc.path is None:
            print("bioplaus: interrupted before the run file was created; nothing written", file=sys.stderr)
        else:
            print(f"bioplaus: interrupted; {exc.path} holds everything up to the last flush "
                  "(status 'interrupted')", file=sys.stderr)
        return 130
    print(res.summary())
    if res.figures:
        print(f"figures: {res.figures[0].parent}/ ({len(res.figures)} PNG)")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from bioplaus.report import summary_text

    _need_file(args.file)
    if _is_nir(args.file):
        if args.neurobench or args.samples is not None:
            raise ConfigError("--neurobench: takes a run file (RUN.h5), not a NIR graph")
        from bioplaus.export.nir import describe_nir

        print(describe_nir(args.file))
        return 0
    if args.neurobench:
        from bioplaus.analysis.neurobench import neurobench_metrics, neurobench_table

        print(neurobench_table(neurobench_metrics(args.file, samples=100 if args.samples is None else args.samples)))
        return 0
    if args.samples is not None:
        raise ConfigError("--samples: only with --neurobench")
    print(summary_text(args.file))
    return 0


def _is_nir(path: str) -> bool:
    """A NIR graph is named ``*.nir`` (a NIR file under another name stays a bad run file)."""
    return Path(path).suffix.lower() == ".nir"


def _cmd_report(args: argparse.Namespace) -> int:
    from bioplaus.report import make_report

    _need_file(args.file)
    p = Path(args.file)
    out = Path(args.out) if args.out else p.with_name(p.stem + "_figures")
    files = make_report(p, out)
    for f in files:
        print(f)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from bioplaus.registry import GROUPS
    from bioplaus.sims import sim_names

    width = max(len(g) for g in GROUPS) + 1
    for group, reg in GROUPS.items():
        print(f"{group + ':':<{width}} " + ", ".join(reg.names()))
    print(f"{'sims:':<{width}} " + ", ".join(sim_names()) + "   (bioplaus run NAME)")
    return 0


def _cmd_build_kernel(args: argparse.Namespace) -> int:
    from bioplaus.neurons.kernel import build_kernel

    info = build_kernel()
    what = f"compiled in {info['seconds']:.1f} s" if info["compiled"] else f"already built, loaded in {info['seconds']:.1f} s"
    print(f"LIF kernel {what}: {info['dir']} (one build per user, torch version and kernel source)")
    return 0


def _need_file(path: str) -> None:
    if not Path(path).is_file():
        what = "not a regular file" if Path(path).exists() else "no such run file"
        raise BioplausError(f"{path}: {what}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="bioplaus",
        description="Biologically plausible and spiking learning rules; every run recorded to HDF5.",
    )
    ap.add_argument("--version", action="version", version=f"bioplaus {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the experiment described by a TOML file")
    r.add_argument("config", help="experiment TOML file, or the name of a packaged sim "
                   "(e.g. quickstart; see bioplaus list)")
    r.add_argument("--out", help="run file to write (default runs/<name>.h5, or the next free "
                   "runs/<name>-<k>.h5); an existing file is refused without --overwrite")
    r.add_argument("--overwrite", action="store_true",
                   help="replace an existing run file (other files are never replaced)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set rule.lr=0.05 (repeatable)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--no-report", action="store_true", help="do not write figures at the end")
    r.set_defaults(func=_cmd_run)
    i = sub.add_parser("inspect", help="what is in a run file, its status and final metrics; or a NIR graph: "
                       "its nodes and what a reader of the spec would get wrong")
    i.add_argument("file")
    i.add_argument("--neurobench", action="store_true",
                   help="NeuroBench metrics of the trained net on the run's test data (synaptic "
                   "operations, activation and connection sparsity, footprint; extra 'neurobench')")
    i.add_argument("--samples", type=int, default=None, metavar="N",
                   help="test samples for --neurobench (default 100)")
    i.set_defaults(func=_cmd_inspect)
    p = sub.add_parser("report", help="PNG figures from a run file")
    p.add_argument("file")
    p.add_argument("--out", help="directory for the figures (default <run>_figures/)")
    p.set_defaults(func=_cmd_report)
    sub.add_parser("list", help="registered experiment kinds, rules, plugins, neuron models, data sets, figures; sims").set_defaults(func=_cmd_list)
    sub.add_parser("build-kernel", help="compile the fused C++ LIF kernel now (the first spiking run "
                   "would), and say where it is cached and how long it took").set_defaults(func=_cmd_build_kernel)
    _add_optional_commands(sub)
    return ap


def _add_optional_commands(sub: argparse._SubParsersAction) -> None:
    """Commands that live in their own modules (export, sweep, simulate) register here if present."""
    import importlib

    for mod in ("bioplaus.export.cli", "bioplaus.sweep.cli", "bioplaus.simulators.cli"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        m.add_parser(sub)


def main(argv: list[str] | None = None) -> int:
    # SIGINT / SIGTERM raise KeyboardInterrupt (exit 130) from the start, not only once a run
    # is set up; a run replaces these with handlers that stop at the next step (RunContext).
    restore = catch_signals()
    try:
        return _main(argv)
    except KeyboardInterrupt:  # a signal between _main's handlers and here
        print("bioplaus: interrupted", file=sys.stderr)
        return 130
    finally:
        restore()


def _main(argv: list[str] | None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except BioplausError as e:
        print(f"bioplaus: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"bioplaus: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bioplaus: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
