"""HLOP's defaults on longer streams: a grid of HLOP variants on a short permuted-digits stream.

The stream is ``benchmarks/configs/hlop_pdigits_spiking.toml`` (the spiking HLOP sim of
permuted Fashion-MNIST on scikit-learn's 8x8 digits: 64-800-800-10, BPTT T = 6, 10 permuted
tasks); every variant runs at each ``--epochs`` value (epochs per task) and each ``--seeds``
value. Every variant sets ``init`` and ``projector`` explicitly, so the grid does not depend
on the plugin's defaults. A digits run takes ~25 s per epoch per task-stream at one thread.

Variants (``--variants``, comma separated):
  code        init = "orthogonal", projector = "hebbian"     (the public code; old defaults)
  ortho       init = "orthogonal", projector = "orthonormal"
  residual    init = "residual",   projector = "hebbian"
  res_ortho   init = "residual",   projector = "orthonormal"  (new defaults)
  res_ortho_rate  res_ortho with activity = "rate"            (cheaper Hebbian input)
  exact       the exact projection plugin (GPM-style SVD of stored activity) with HLOP's
              dimensions: what the subspace sizes allow, without the Hebbian approximation

The grid is one sweep (`bioplaus.sweep`: seeds x epochs per task x variants, the variants'
plugin settings as zipped axes; resumable in ``--out-dir``, ``--workers K`` / ``--ray
ADDRESS`` to spread it); ACC and BWT mean ± sd per variant and epochs by
`bioplaus.sweep.compare`.

Run:  python benchmarks/hlop_defaults.py                      # code,ortho,residual,res_ortho; epochs 2,3,5; seeds 0,1
      python benchmarks/hlop_defaults.py --quick              # 2 tasks, 1 epoch, 256 samples: a check, nothing saved
      python benchmarks/hlop_defaults.py --variants code,res_ortho --epochs 2 --seeds 0
      options: --threads N, --set key=value (any config override, repeatable), --tag
Writes results/hlop_defaults_digits[_<tag>].{md,json}.

      python benchmarks/hlop_defaults.py --collect
gathers the digits grids (results/hlop_defaults_digits*.json) and the permuted Fashion-MNIST
runs with the defaults (results/hlop_pfashion_defaults_e{1,2}.json, made by the FASHION
commands below) into results/hlop_defaults.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402
from benchmarks._sweep import LABEL, add_sweep_args, methods_sweep  # noqa: E402

CONFIG = ROOT / "benchmarks" / "configs" / "hlop_pdigits_spiking.toml"
RESULTS = ROOT / "benchmarks" / "results"
PY = "PYTHONPATH=. python"
OLD = "--set plugins.0.init=orthogonal --set plugins.0.projector=hebbian"
FASHION = [  # (results file stem, HLOP settings, the command that makes it now, from the repository root)
    (
        "hlop_pfashion_defaults_e2",
        "defaults (residual, orthonormal)",
        f"{PY} benchmarks/hlop_pfashion.py --methods hlop --epochs-per-task 2 --limit-test 2000 --threads 1 "
        "--tag defaults_e2 --out-dir runs/bench_hlop_defaults",
    ),
    (
        "hlop_pfashion_defaults_e1",
        "defaults (residual, orthonormal)",
        f"{PY} benchmarks/hlop_pfashion.py --methods hlop --limit-test 2000 --threads 1 --tag defaults_e1 "
        "--out-dir runs/bench_hlop_defaults_e1",
    ),
    (
        "hlop_pfashion",
        "earlier run: orthogonal, hebbian (the old defaults)",
        f"{PY} benchmarks/hlop_pfashion.py --methods hlop --limit-test 2000 {OLD}",
    ),
    (
        "hlop_pfashion_hlop_improved",
        "earlier run: residual, orthonormal (older code, float rounding)",
        f"{PY} benchmarks/hlop_pfashion.py --methods hlop --limit-test 2000 --tag hlop_improved",
    ),
]
DIGITS = {  # results file stem -> command
    "hlop_defaults_digits": f"{PY} benchmarks/hlop_defaults.py",
    "hlop_defaults_digits_exact": f"{PY} benchmarks/hlop_defaults.py --variants exact --tag exact",
    "hlop_defaults_digits_b16": f"{PY} benchmarks/hlop_defaults.py --variants code,res_ortho,exact --epochs 2,5 "
    "--seeds 0 --set data.batch_size=16 --tag b16 --out-dir runs/bench_hlop_defaults_b16",
    "hlop_defaults_digits_after": f"{PY} benchmarks/hlop_defaults.py --variants res_ortho --epochs 3,5 "
    "--set plugins.0.after_task_batches=23 --tag after --out-dir runs/bench_hlop_defaults_after",
}
VARIANTS = {
    "code": ["plugins.0.init=orthogonal", "plugins.0.projector=hebbian"],
    "ortho": ["plugins.0.init=orthogonal", "plugins.0.projector=orthonormal"],
    "residual": ["plugins.0.init=residual", "plugins.0.projector=hebbian"],
    "res_ortho": ["plugins.0.init=residual", "plugins.0.projector=orthonormal"],
    "res_ortho_rate": ["plugins.0.init=residual", "plugins.0.projector=orthonormal", "plugins.0.activity=rate"],
    "exact": ["plugins.0.name=projection", "plugins.0.mode=dims"],
}


def run_info(path: Path) -> dict[str, Any]:
    """What the table keeps of one run file besides its final metrics: the accuracy matrix
    and the last orthogonality error of each layer's lateral subspace."""
    from bioplaus.record import open_run

    with open_run(path) as run:
        R = np.asarray(run.array("/continual/acc_matrix"), dtype=float)
        orth = {name.split("/")[0]: float(run.metric(name)[-1]) for name in run.metrics
                if name.endswith("/hlop_orth_err")}
    return {"orth_err_last": orth, "acc_matrix": (100 * R).round(2).tolist()}


def pts(v: Any) -> float:
    return 100.0 * float(v) if v is not None and math.isfinite(float(v)) else float("nan")


def summary(result: Any, variants: list[str]) -> list[dict[str, Any]]:
    """Mean and sd over seeds of ACC / BWT per variant and epochs per task (`compare`)."""
    from bioplaus.sweep import compare

    by = [LABEL, "continual.epochs_per_task"]
    stats = {}
    for metric in ("ACC", "BWT"):
        for r in compare([result.out], by=by, metric=metric).rows:
            stats.setdefault((r[LABEL], int(r["continual.epochs_per_task"])), {})[metric] = r
    out = []
    for (v, e), st in sorted(stats.items(), key=lambda kv: (variants.index(kv[0][0]), kv[0][1])):
        rows = [r for r in result.rows if r["status"] == "done" and r[LABEL] == v
                and int(r["continual.epochs_per_task"]) == e]
        n = st["ACC"]["n"]
        out.append({
            "variant": v,
            "epochs": e,
            "seeds": n,
            "ACC": pts(st["ACC"]["mean"]),
            "ACC_sd": pts(st["ACC"]["std"]) if n > 1 else float("nan"),
            "BWT": pts(st["BWT"]["mean"]),
            "BWT_sd": pts(st["BWT"]["std"]) if n > 1 else float("nan"),
            "BWT_worst": min(pts(r["final_BWT"]) for r in rows),
            "train_s": statistics.mean(r["final_train_seconds"] for r in rows),
        })
    return out


def matrix(R: list[list[float]]) -> str:
    """An accuracy matrix (points) as a markdown table: row i = after task i."""
    n = len(R[0])
    lines = ["| after \\ task | " + " | ".join(map(str, range(n))) + " |", "|" + "---|" * (n + 1)]
    for i, row in enumerate(R):
        lines.append(f"| {i} | " + " | ".join(f"{v:.2f}" if j <= i else "" for j, v in enumerate(row)) + " |")
    return "\n".join(lines)


def collect() -> None:
    """results/hlop_defaults.{md,json} from the Fashion-MNIST runs and the digits grids."""
    fashion, digits = [], {}
    for stem, settings, cmd in FASHION:
        f = RESULTS / f"{stem}.json"
        if f.exists():
            row = [r for r in json.loads(f.read_text())["rows"] if r["method"] == "hlop"][0]
            row.setdefault("epochs_per_task", 1)
            fashion.append({"file": f"{stem}.md", "settings": settings, "command": cmd, **row})
    for stem, cmd in DIGITS.items():
        f = RESULTS / f"{stem}.json"
        if f.exists():
            d = json.loads(f.read_text())
            digits[stem] = {"command": cmd, "summary": d["summary"], "rows": d["rows"]}
    cols = ["settings", "epochs_per_task", "ACC", "BWT", "forgetting", "train_s", "file"]
    parts = [
        "# HLOP defaults on longer streams (issue 8)",
        "",
        "Defaults: `init = \"residual\"`, `projector = \"orthonormal\"` (see docs/continual.md, "
        "\"Defaults on long streams\"). Permuted Fashion-MNIST, spiking 784-800-800-10, BPTT T = 6, "
        "10 tasks, sims/hlop_pfashion_spiking.toml (which sets neither option), 2000 test images "
        "per task; ACC/BWT/forgetting in points; times in seconds at one thread on the shared machine.",
        "",
        table(fashion, cols),
    ]
    for r in fashion[:2]:
        parts += ["", f"`{r['command']}` ({r['file']}); accuracy matrix, points:", "", matrix(r["acc_matrix"])]
    for stem, d in digits.items():
        dcols = ["variant", "epochs", "seeds", "ACC", "ACC_sd", "BWT", "BWT_sd", "BWT_worst", "train_s"]
        parts += ["", f"## Permuted digits: `{d['command']}` ({stem}.md)", "", table(d["summary"], dcols)]
    text = "\n".join(parts)
    save("hlop_defaults", {"fashion": fashion, "digits": digits}, text)


def main() -> None:
    if "--collect" in sys.argv:
        collect()
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="code,ortho,residual,res_ortho")
    ap.add_argument("--epochs", default="2,3,5", help="epochs per task, comma separated")
    ap.add_argument("--seeds", default="0,1", help="seeds, comma separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    ap.add_argument("--quick", action="store_true", help="2 tasks, 1 epoch, 256 samples: a check, nothing saved")
    add_sweep_args(ap, "runs/bench_hlop_defaults")
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    if args.quick:
        args.epochs, args.seeds = "1", "0"
        args.set += ["continual.n_tasks=2", "data.limit_train=256", "data.limit_test=100"]
    epochs = [int(e) for e in args.epochs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    name = "hlop_defaults_digits" + (f"_{args.tag}" if args.tag else "")
    base = [f"train.threads={args.threads}", "train.report=false"] + args.set
    res = methods_sweep({v: (CONFIG, VARIANTS[v]) for v in variants}, seeds, args.out_dir, base,
                        workers=args.workers, ray=args.ray, grid={"continual.epochs_per_task": epochs})
    rows: list[dict[str, Any]] = []
    for r in res.rows:
        if r["status"] != "done":
            continue
        v, e = r[LABEL], int(r["continual.epochs_per_task"])
        ov = base + [f"seed={r['seed']}", f"continual.epochs_per_task={e}"] + VARIANTS[v]
        rows.append({"variant": v, "epochs": e, "seed": r["seed"], "overrides": ov,
                     "ACC": pts(r["final_ACC"]), "BWT": pts(r["final_BWT"]), "forgetting": pts(r["final_forgetting"]),
                     "train_s": r["final_train_seconds"], "wall_s": r["wall_s"], **run_info(res.out / r["file"])})
        print(f"{v:>15} epochs={e} seed={r['seed']}: ACC {rows[-1]['ACC']:.2f} BWT {rows[-1]['BWT']:+.2f} "
              f"({rows[-1]['train_s']:.0f} s)", flush=True)
    summ = summary(res, variants)
    cols = ["variant", "epochs", "seeds", "ACC", "ACC_sd", "BWT", "BWT_sd", "BWT_worst", "train_s"]
    text = (
        f"Permuted digits ({CONFIG.relative_to(ROOT)}), {len(rows[0]['acc_matrix'][0])} tasks; mean over seeds "
        f"{','.join(map(str, sorted({r['seed'] for r in rows})))}; ACC/BWT in points; "
        f"overrides: {' '.join(base)}\n\n" + table(summ, cols)
    )
    if args.quick:
        print(text + "\n(--quick: not saved to results/)")
        return
    save(name, {"config": str(CONFIG.relative_to(ROOT)), "summary": summ, "rows": rows, "sweep": str(res.out)}, text)


if __name__ == "__main__":
    main()
