"""`spiking_speed.py` once per forced spike-synapse path and thread count, and one summary.

Each (path, threads) is a separate process (`BIOPLAUS_SPIKE_GEMM=<path> python
benchmarks/spiking_speed.py --threads N --no-scaling --no-wide --no-breakdown --peers ...`),
run one at a time, writing `results/<prefix>_<path>_t<N>.{md,json}`; this script then reads
them and writes `results/<prefix>.{md,json}`: per path and thread count, bioplaus's time and
its lead over snntorch and over the fastest of the peers, for constant and spike-train input,
with the issue's targets for the AVX2 path. Within each process the repeats of bioplaus and
the peers are interleaved, so their ratios hold under load; ratios across processes (paths)
move with the load of the moment.

Run: python benchmarks/spiking_speed_isa.py [--paths fp32,lutportable,lut256,lut512] [--threads 1,2]
     [--repeat 5] [--summary-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import OUT, save, table  # noqa: E402

PEERS = "snntorch,norse compiled step,spikingjelly multi-step"
CASES = ("constant", "spike train")
# the targets for the AVX2 path: (x snntorch, x the fastest peer) per input
TARGETS = {"constant": (2.5, 2.0), "spike train": (2.0, 1.6)}


def command(path: str, threads: int, repeat: int, name: str) -> list[str]:
    return [sys.executable, "benchmarks/spiking_speed.py", "--threads", str(threads), "--repeat", str(repeat),
            "--no-scaling", "--no-wide", "--no-breakdown", "--peers", PEERS, "--name", name]


def summary_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for key, res in results.items():
        base = res["base_cpu"]
        row: dict[str, Any] = {"path, threads": key}
        for case in CASES:
            t = {n: v["median_s"] for n, v in base[case].items()}
            peers = {n: v for n, v in t.items() if n != "bioplaus"}
            fastest = min(peers, key=peers.get) if peers else None
            row[f"{case}: bioplaus ms"] = 1e3 * t["bioplaus"]
            if "snntorch" in t:
                row[f"{case}: x snntorch"] = t["snntorch"] / t["bioplaus"]
            if fastest:
                row[f"{case}: x fastest peer"] = peers[fastest] / t["bioplaus"]
                row[f"{case}: fastest peer"] = fastest
        row["load before, after"] = res.get("load", "")
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--paths", default="fp32,lutportable,lut256,lut512",
                    help="BIOPLAUS_SPIKE_GEMM values, one process each (a path the CPU lacks is skipped)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--prefix", default="spiking_speed_isa")
    ap.add_argument("--summary-only", action="store_true", help="only rebuild the summary from the JSONs")
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    results: dict[str, dict[str, Any]] = {}
    commands = []
    for path in [p.strip() for p in args.paths.split(",") if p.strip()]:
        for nt in [int(t) for t in args.threads.split(",") if t.strip()]:
            name = f"{args.prefix}_{path}_t{nt}"
            cmd = command(path, nt, args.repeat, name)
            shown = f"BIOPLAUS_SPIKE_GEMM={path} python " + " ".join(
                f"'{c}'" if " " in c else c for c in cmd[1:])
            commands.append(shown)
            if not args.summary_only:
                print(f"== {shown}", flush=True)
                load = os.getloadavg()
                run = subprocess.run(cmd, cwd=root, env=dict(os.environ, BIOPLAUS_SPIKE_GEMM=path), check=False)
                if run.returncode != 0:
                    print(f"[skip] {path}, {nt} thread(s): exit {run.returncode}")
                    continue
                data = json.loads((OUT / f"{name}.json").read_text())
                data["load"] = f"{load[0]:.1f}, {os.getloadavg()[0]:.1f}"
                (OUT / f"{name}.json").write_text(json.dumps(data, indent=2))
            if (OUT / f"{name}.json").exists():
                results[f"{path}, {nt}"] = json.loads((OUT / f"{name}.json").read_text())
    rows = summary_rows(results)
    cols = ["path, threads"] + [f"{c}: {k}" for c in CASES for k in ("bioplaus ms", "x snntorch", "x fastest peer",
                                                                    "fastest peer")] + ["load before, after"]
    target = "; ".join(f"{c}: >= {s}x snntorch, >= {f}x the fastest peer" for c, (s, f) in TARGETS.items())
    any_res = next(iter(results.values()), {})
    m = any_res.get("machine", {})
    text = ("# spiking_speed.py per spike-synapse path (784-800-800-10, T = 20, batch 128, fwd+bwd)\n\n"
            + table(rows, cols)
            + f"\n\nPeers: {PEERS}. Targets (issue 25, AVX2 path lut256): {target}. Each row is one process; "
            "within it bioplaus and the peers are timed interleaved (medians), so the ratios in a row hold "
            "under load; rows were run one after another on a machine shared with other jobs (load average "
            "at the start and end of each row, 2 cores).\n\n"
            f"Machine: {m.get('cpu', '?')} ({m.get('cpus', '?')} cores), torch {m.get('torch', '?')}.\n\n"
            "Commands (one process each, from the repository root):\n\n```bash\n" + "\n".join(commands)
            + "\npython benchmarks/spiking_speed_isa.py --summary-only   # this table\n```\n")
    save(args.prefix, {"rows": rows, "commands": commands, "targets": TARGETS}, text)


if __name__ == "__main__":
    main()
