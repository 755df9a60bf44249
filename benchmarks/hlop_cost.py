"""Cost of HLOP: training time with HLOP / training time of plain fine-tuning, one process.

Both run sims/hlop_pfashion_spiking.toml (fine-tuning = the same file without its plugin)
on the whole 10-task stream, so the lateral subspaces grow as in the real run, but with
``--limit-train`` samples per task to keep it short. Training time excludes evaluation
and HLOP's diagnostics (principal angles, switched off here). Each repeat is one sweep
(`bioplaus.sweep`, ``--workers 1``: in this process, one run after another) over the time
steps x (fine-tuning, HLOP variants), so the runs alternate (ft, hlop variants, ft, ...);
``--repeat`` sweeps run and the fastest of each is kept, which damps the noise of a shared
machine. Run files and indexes stay in ``--out-dir/set_<hash>/repeat<k>``.

Variants: ``faithful`` = the sim's settings (5 Hebbian iterations on every row of every
batch); ``rows128`` = Hebbian updates on 128 rows sampled from the T x B presynaptic spike
vectors; ``rows128_every2`` = that, every second step; ``rate`` = Hebbian updates on the
time-averaged presynaptic activity (B rows instead of T x B); ``code`` = the public code's
``init = "orthogonal"`` and ``projector = "hebbian"`` instead of the defaults (``faithful``
has the defaults: new neurons started off the old subspace, orthonormal projector).

Run: python benchmarks/hlop_cost.py [--T 6,20] [--limit-train 3200] [--repeat 2] [--variants ...] [--tag ...]
     python benchmarks/hlop_cost.py --quick     # 2 permuted-digits tasks, T = 2: a check, nothing saved
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402
from benchmarks._sweep import LABEL, methods_sweep  # noqa: E402

SIM = ROOT / "sims" / "hlop_pfashion_spiking.toml"
VARIANTS: dict[str, list[str]] = {
    "ft": ["plugins=[]"],  # fine-tuning: the same sim without its plugin
    "faithful": [],
    "rows128": ["plugins.0.max_rows=128"],
    "rows128_every2": ["plugins.0.max_rows=128", "plugins.0.every=2"],
    "rate": ["plugins.0.activity=rate"],
    "code": ["plugins.0.init=orthogonal", "plugins.0.projector=hebbian"],
}


def hlop_seconds(path: Path) -> dict[str, float]:
    from bioplaus.record import open_run

    with open_run(path) as run:
        return {k.split("/")[1]: float(run.metric(k)[-1]) for k in ("hlop/hebb_seconds", "hlop/proj_seconds")
                if k in run.metrics}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", default="6,20", help="comma-separated time steps")
    ap.add_argument("--limit-train", type=int, default=3200)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--variants", default="faithful,rows128,rows128_every2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", default="",
                    help="where run files go (default: a new temporary directory; an existing "
                         "directory resumes its sweeps, i.e. reuses runs already timed there)")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    ap.add_argument("--quick", action="store_true", help="2 permuted-digits tasks, T = 2: a check, nothing saved")
    args = ap.parse_args()
    if args.quick:
        args.T, args.limit_train, args.tasks, args.repeat = "2", 128, 2, 1
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS or v == "ft"]
    if unknown:
        ap.error(f"unknown variants {unknown}; valid: {', '.join(v for v in VARIANTS if v != 'ft')}")
    Ts = [int(t) for t in args.T.split(",")]
    common = [
        f"continual.n_tasks={args.tasks}",
        f"data.limit_train={args.limit_train}",
        "data.limit_test=100",
        f"train.threads={args.threads}",
        "train.report=false",
        "record.save_model=false",
        "plugins.0.angles=false",
        "plugins.0.record_lateral=false",
        *(["data.dataset=digits"] if args.quick else []),
    ]
    methods = {name: (SIM, VARIANTS[name]) for name in ["ft", *variants]}
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="bioplaus_hlop_cost_"))
    best: dict[tuple[int, str], dict[str, Any]] = {}
    for k in range(args.repeat):
        res = methods_sweep(methods, [0], out_dir / f"repeat{k}", common, workers=1,
                            grid={"network.spiking.T": Ts})
        for row in res.rows:
            if row["status"] != "done":
                continue
            key = (int(row["network.spiking.T"]), row[LABEL])
            print(f"T={key[0]} {key[1]}: train {row['final_train_seconds']:.1f} s (wall {row['wall_s']:.1f} s)", flush=True)
            if key not in best or row["final_train_seconds"] < best[key]["final_train_seconds"]:
                best[key] = {**row, "path": res.out / row["file"]}
    rows: list[dict[str, Any]] = []
    for T in Ts:
        ft = best[(T, "ft")]["final_train_seconds"]
        for name in ["ft", *variants]:
            r = best[(T, name)]
            extra = hlop_seconds(r["path"]) if name != "ft" else {}
            rows.append({
                "T": T,
                "method": "fine-tuning" if name == "ft" else f"HLOP {name}",
                "steps": int(r["steps"]),
                "train_s": r["final_train_seconds"],
                "ms_per_step": 1000 * r["final_train_seconds"] / max(r["steps"], 1),
                "hebbian_s": extra.get("hebb_seconds", 0.0),
                "projection_s": extra.get("proj_seconds", 0.0),
                "ratio_vs_ft": r["final_train_seconds"] / ft,
            })
    text = (
        f"HLOP cost, spiking 784-800-800-10, {args.tasks} permuted Fashion-MNIST tasks x "
        f"{args.limit_train} samples, batch 64, {args.threads} thread(s), best of {args.repeat}\n\n"
        + table(rows, ["T", "method", "steps", "train_s", "ms_per_step", "hebbian_s", "projection_s", "ratio_vs_ft"])
    )
    if args.quick:
        print(text + "\n(--quick: not saved to results/)")
        return
    save("hlop_cost" + (f"_{args.tag}" if args.tag else ""), {"args": vars(args), "rows": rows}, text)


if __name__ == "__main__":
    main()
