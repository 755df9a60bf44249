"""Quickstart training time for ``train.threads`` choices, on a quiet machine and with one busy process.

Each cell runs ``bioplaus run sims/quickstart.toml --set train.threads=N --no-report`` in its
own process (``OMP_NUM_THREADS`` removed from its environment, so ``threads = 0`` means what
it means for a user who sets nothing) and reads the training seconds from the run file's
root attribute ``seconds`` (the summary's "N steps in X s"; the kernel compile is not in
it). "loaded" starts one competing busy process (``python -c "while True: pass"`` at nice 0)
two seconds before the cell and stops it after. The 1-minute load average (``uptime``) is
noted before each run. Runs are interleaved (repeat, then load, then variant), so a change of
the machine's load hits every variant alike. Variants are ``N`` (``train.threads = N``),
``N:ENV=VALUE`` (extra environment, e.g. ``2:OMP_WAIT_POLICY=PASSIVE``,
``2:BIOPLAUS_LIF_KERNEL=torch``), and ``...@DIR`` runs the bioplaus of another tree (e.g.
``0@/tmp/old`` for the code before a change, a ``git worktree`` of the old commit).

    python benchmarks/threads_quickstart.py [--repeats 2] [--variants 0 1 2 0@/tmp/old 2@/tmp/old]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import h5py

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import save, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "import sys; from bioplaus.cli import main; sys.exit(main())"]


def parse_variant(text: str) -> tuple[int, dict[str, str], Path]:
    """``"2:OMP_WAIT_POLICY=PASSIVE@/tmp/old"`` -> ``(2, {"OMP_WAIT_POLICY": "PASSIVE"}, Path("/tmp/old"))``."""
    text, _, root = text.partition("@")
    head, *envs = text.split(":")
    return int(head), dict(e.split("=", 1) for e in envs), Path(root) if root else ROOT


def load1() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def run_once(threads: int, env_extra: dict[str, str], root: Path, tmp: Path, args: argparse.Namespace) -> float:
    """Training seconds of one quickstart run (the run file's ``seconds``) with the bioplaus of ``root``."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(env_extra)
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp / "q.h5"
    argv = ["run", args.sim, "--out", str(out), "--overwrite", "--quiet", "--no-report",
            "--set", f"train.threads={threads}", *sum((["--set", s] for s in args.set), [])]
    r = subprocess.run(CLI + argv, env=env, capture_output=True, text=True, cwd=root)
    if r.returncode != 0:
        sys.exit(f"threads_quickstart: run failed ({r.returncode}): {r.stderr[-2000:]}")
    with h5py.File(out, "r") as f:
        return float(f.attrs["seconds"])


def start_busy() -> subprocess.Popen[bytes]:
    """One competing busy process (a pure-Python spin loop at nice 0)."""
    p = subprocess.Popen(["nice", "-n", "0", sys.executable, "-c", "while True: pass"])
    time.sleep(2.0)
    return p


def threads_used(threads: int, env_extra: dict[str, str], root: Path) -> str:
    """torch's thread count inside a run of ``root``'s bioplaus with ``train.threads = threads``
    (at the moment's load), and the OpenMP wait policy its process ends up with."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(env_extra)
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import os, bioplaus, torch\nfrom bioplaus.context import RunContext\n"
            f"with RunContext(None, threads={threads}):\n    n = torch.get_num_threads()\n"
            "print(n, os.environ.get('OMP_WAIT_POLICY', 'unset'))")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=root)
    return r.stdout.strip() or r.stderr.strip()[-200:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=["0", "1", "2", "2:OMP_WAIT_POLICY=PASSIVE"])
    ap.add_argument("--sim", default="sims/quickstart.toml")
    ap.add_argument("--set", action="append", default=[], help="extra --set for every run")
    ap.add_argument("--name", default="threads_quickstart", help="results/<name>.md and .json")
    ap.add_argument("--from-log", help="build the table from the [threads] lines of an earlier run's output")
    args = ap.parse_args()
    variants = [(v, *parse_variant(v)) for v in args.variants]
    cells: dict[tuple[str, str], list[dict[str, float]]] = {}
    if args.from_log:
        for m in re.finditer(r"^\[threads\] rep \d+ (\w+)\s+(\S+)\s+([\d.]+) s  \(load ([\d.]+)\)$",
                             Path(args.from_log).read_text(), re.M):
            cells.setdefault((m.group(2), m.group(1)), []).append(
                {"seconds": float(m.group(3)), "load1": float(m.group(4))})
        variants = [v for v in variants if (v[0], "quiet") in cells and (v[0], "loaded") in cells]
    else:
        measure(args, variants, cells)
    report(args, variants, cells)
    return 0


def measure(args: argparse.Namespace, variants: list[Any], cells: dict[tuple[str, str], list[dict[str, float]]]) -> None:
    """Run every cell ``args.repeats`` times, interleaved; fill ``cells``."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for root in sorted({v[3] for v in variants}):  # warm-up: each tree's kernel compiled, caches hot
            run_once(1, {}, root, tmp, args)
        for rep in range(args.repeats):
            for load in ("quiet", "loaded"):
                busy = start_busy() if load == "loaded" else None
                try:
                    for label, threads, env_extra, root in variants:
                        la = load1()
                        s = run_once(threads, env_extra, root, tmp, args)
                        cells.setdefault((label, load), []).append({"seconds": s, "load1": la})
                        print(f"[threads] rep {rep} {load:6s} {label:28s} {s:6.2f} s  (load {la:.2f})", flush=True)
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()


def report(args: argparse.Namespace, variants: list[Any], cells: dict[tuple[str, str], list[dict[str, float]]]) -> None:
    """The table (medians, ratio to the best variant per load) to results/<name>.md and .json."""
    rows: list[dict[str, Any]] = []
    best = {load: min(statistics.median(x["seconds"] for x in cells[(v[0], load)]) for v in variants)
            for load in ("quiet", "loaded")}
    for label, _threads, env_extra, _root in variants:  # noqa: B007
        row: dict[str, Any] = {"variant": f"threads={label}",
                               "threads, wait policy (now)": threads_used(_threads, env_extra, _root)}
        for load in ("quiet", "loaded"):
            xs = cells[(label, load)]
            med = statistics.median(x["seconds"] for x in xs)
            row[f"{load} s (runs)"] = " / ".join(f"{x['seconds']:.2f}" for x in xs)
            row[f"{load} median s"] = round(med, 2)
            row[f"{load} x best"] = round(med / best[load], 2)
            row[f"{load} load1"] = " / ".join(f"{x['load1']:.2f}" for x in xs)
        rows.append(row)
    cols = list(rows[0])
    info = (f"`python benchmarks/threads_quickstart.py --repeats {args.repeats} --variants {' '.join(args.variants)}`"
            f"{' ' + ' '.join('--set ' + s for s in args.set) if args.set else ''}: {args.sim}, training seconds "
            "(run file `seconds`, compile excluded), each cell its own process, OMP_NUM_THREADS unset; "
            "'loaded' = one extra busy process (`python -c \"while True: pass\"`, nice 0); load1 = 1-minute "
            "load average before each run. The machine is shared with other work, so 'quiet' is not idle.")
    text = f"# Quickstart training time vs train.threads\n\n{info}\n\n{table(rows, cols)}"
    save(args.name, {"rows": rows, "cells": {f"{k[0]}|{k[1]}": v for k, v in cells.items()},
                     "variants": args.variants, "repeats": args.repeats, "sim": args.sim, "set": args.set}, text)


if __name__ == "__main__":
    raise SystemExit(main())
