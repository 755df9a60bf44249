"""Same seed, same numbers: run a fixed set of experiments and fingerprint every run file.

A refactor that claims to change no behaviour is checked by running this script on the old
tree and on the new one, on the same machine, and comparing the fingerprints:

    git worktree add /tmp/old <old-commit>
    PYTHONPATH=/tmp/old python benchmarks/same_numbers.py run --out /tmp/sn_old
    python benchmarks/same_numbers.py run --out /tmp/sn_new
    python benchmarks/same_numbers.py compare /tmp/sn_old /tmp/sn_new

``run`` executes the set below (``BIOPLAUS_SPIKE_GEMM=fp32`` so that the spike synapses take
the float32 GEMM on every CPU) through the CLI of whichever ``bioplaus`` is first on the path,
and writes ``fingerprint.json``: for every run file, every HDF5 dataset's dtype, shape and
SHA-256 of its bytes, and every attribute's value. ``compare`` lists every difference,
leaving out what is wall-clock by nature (creation time, durations, versions, the run
directory), and prints the headline metrics of each run side by side.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np

# (run name, CLI arguments after `bioplaus`): the list, plus a few digits runs that
# reach the other rules, backends and plugins in seconds.
RUNS: list[tuple[str, list[str]]] = [
    ("quickstart", ["run", "sims/quickstart.toml"]),
    ("quickstart_rate", ["run", "sims/quickstart.toml", "--set", "network.backend=rate"]),
    ("bp_fashion_1ep", ["run", "sims/bp_fashion_mlp.toml", "--set", "train.epochs=1"]),
    ("ccl_fashion_1ep", ["run", "sims/ccl_fashion_mlp.toml", "--set", "train.epochs=1"]),
    ("noprop_dt_1ep", ["run", "sims/noprop_dt_fashion.toml", "--set", "train.epochs=1",
                       "--set", "data.limit_train=12800", "--set", "data.limit_test=2000"]),
    ("hlop_2task", ["run", "sims/hlop_pfashion_spiking.toml", "--set", "continual.n_tasks=2",
                    "--set", "data.limit_train=6400", "--set", "data.limit_test=1000"]),
    ("hopfield_hierarchical", ["run", "sims/hopfield_hierarchical.toml"]),
    ("ccl_digits_spiking", ["run", "sims/quickstart.toml", "--set", "rule.name=ccl", "--set", "rule.lr=0.01",
                            "--set", "train.epochs=3"]),
    ("dfa_digits", ["run", "sims/quickstart.toml", "--set", "rule.name=dfa",
                    "--set", "network.backend=rate", "--set", "rule.optimizer=adam",
                    "--set", "rule.lr=0.001", "--set", "train.epochs=3"]),
]
SWEEP = ("sweep4", ["sweep", "sims/quickstart.toml", "--grid", "rule.lr=0.05,0.1", "--seeds", "2",
                    "--workers", "2", "--set", "train.epochs=3", "--quiet"])

# Attributes and datasets that hold wall-clock facts, not numbers a seed decides.
CLOCK = ("created", "finished", "updated", "versions", "duration", "elapsed", "wall", "time_s",
         "seconds", "hostname", "host", "pid", "out_dir", "path", "started", "_time", "cwd",
         "samples_per_s", "steps_per_s", "throughput")


def _is_clock(key: str) -> bool:
    k = key.lower()
    return any(c in k for c in CLOCK)


def _value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.ndarray):
        return hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16] + f"{v.dtype}{v.shape}"
    if isinstance(v, np.generic):
        return v.item()
    return v if isinstance(v, (int, float, str, bool)) or v is None else repr(v)


def fingerprint(path: Path) -> dict[str, Any]:
    """Every dataset (dtype, shape, SHA-256) and every attribute of one HDF5 file."""
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        def visit(name: str, obj: Any) -> None:
            for k, v in obj.attrs.items():
                out[f"{name}@{k}"] = _value(v)
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                raw = np.ascontiguousarray(data).tobytes() if isinstance(data, np.ndarray) else repr(data).encode()
                out[name] = f"{obj.dtype}{obj.shape}:{hashlib.sha256(raw).hexdigest()[:24]}"
        for k, v in f.attrs.items():
            out[f"/@{k}"] = _value(v)
        f.visititems(visit)
    return out


def _headline(path: Path) -> dict[str, float]:
    with h5py.File(path, "r") as f:
        g = f.get("metrics")
        if g is None:
            return {}
        return {k: float(g[k][-1]) for k in sorted(g) if not k.endswith("_step") and len(g[k])
                and any(s in k for s in ("acc", "loss", "ACC", "BWT", "mse", "m_"))}


def cmd_run(args: argparse.Namespace) -> None:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, BIOPLAUS_SPIKE_GEMM="fp32")
    cli = [sys.executable, "-c", "import sys; from bioplaus.cli import main; sys.exit(main())"]
    todo = [r for r in RUNS + [SWEEP] if not args.only or r[0] in args.only]
    for name, argv in todo:
        if argv[0] == "run":
            argv = argv + ["--out", str(out / f"{name}.h5"), "--quiet", "--no-report"]
        else:
            argv = argv + ["--out", str(out / name)]
        print(f"[same_numbers] {name}: bioplaus {' '.join(argv)}", flush=True)
        subprocess.run(cli + argv, env=env, check=True, cwd=args.repo)
    fp = {str(p.relative_to(out)): fingerprint(p) for p in sorted(out.rglob("*.h5"))
          if p.name != "index.h5"}
    (out / "fingerprint.json").write_text(json.dumps(fp, indent=1, sort_keys=True))
    print(f"[same_numbers] {len(fp)} run files fingerprinted -> {out / 'fingerprint.json'}")


def cmd_compare(args: argparse.Namespace) -> int:
    a_dir, b_dir = Path(args.a), Path(args.b)
    a = json.loads((a_dir / "fingerprint.json").read_text())
    b = json.loads((b_dir / "fingerprint.json").read_text())
    bad = 0
    n_items = 0
    for run in sorted(set(a) | set(b)):
        if run not in a or run not in b:
            print(f"{run}: only in {'new' if run in b else 'old'}")
            bad += not args.subset
            continue
        fa, fb = a[run], b[run]
        diffs = []
        for key in sorted(set(fa) | set(fb)):
            if _is_clock(key):
                continue
            n_items += 1
            if fa.get(key) != fb.get(key):
                diffs.append(f"  {key}: {str(fa.get(key))[:90]} -> {str(fb.get(key))[:90]}")
        head = _headline(b_dir / run) if (b_dir / run).exists() else {}
        status = "IDENTICAL" if not diffs else f"{len(diffs)} DIFFERENCES"
        print(f"{run}: {len(fa)} items, {status}  " + ", ".join(f"{k}={v:.4f}" for k, v in list(head.items())[:4]))
        for d in diffs[: args.show]:
            print(d)
        bad += bool(diffs)
    print(f"{len(a)} run files, {n_items} datasets/attributes compared (wall-clock keys aside): "
          f"{'all identical' if not bad else f'{bad} run files differ'}")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the set and fingerprint the run files")
    r.add_argument("--out", required=True)
    r.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]),
                   help="the directory the sims are read from (default: this checkout)")
    r.add_argument("--only", nargs="*", help="run only these names")
    c = sub.add_parser("compare", help="compare two fingerprinted directories")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--show", type=int, default=12)
    c.add_argument("--subset", action="store_true", help="compare only the run files both directories hold")
    args = ap.parse_args()
    if args.cmd == "run":
        cmd_run(args)
        return 0
    return cmd_compare(args)


if __name__ == "__main__":
    sys.exit(main())
