"""The sweep figures of issue 12, measured: completion, resume after SIGKILL, Ray, throughput.

One 2 x 3 grid x 2 seeds sweep on the digits (sims/quickstart.toml, rule.lr x
network.hidden, spiking T = 10, 1 epoch, train.threads = 1), every sweep its own
``bioplaus sweep`` process, as a user would run it:

1. **reference**: the whole sweep with ``--workers 2``; the index must list 12 runs done.
2. **resume**: the same sweep in a new process group, SIGKILLed (the whole group) once
   half the runs are done; then the same command again. It must run only the runs that
   were not done, and its final index must equal the reference's metric columns exactly.
3. **ray**: a loopback Ray head (``ray start --head --node-ip-address=127.0.0.1
   --port=...``, 2 CPUs), then the same sweep with ``--ray 127.0.0.1:PORT``: the same
   final metrics per run as the reference, exactly (one thread per run).
4. **throughput**: runs per minute with ``--workers 1`` and ``--workers 2`` on the same
   grid, back to back (wall time of the whole command), 150 epochs per run (about 10 s a run
   on an idle core, against a one-time start-up of about 3-7 s per pool worker: with
   shorter runs the start-up alone caps the ratio below 1.7x)
   (``--throughput-epochs``); the ratio is printed on one line.

5. **overhead**: the same 3 runs in this process and in a 1-worker pool, alternating: what a
   pool worker costs per run, to tell a slow 2-worker figure from a slow pool.

Run: python benchmarks/sweep_demo.py [--only reference,resume,ray,throughput,overhead] [--epochs 1]
Writes results/sweep_demo.json and .md (``--only throughput[,overhead]``: results/sweep_throughput.*).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import save, table  # noqa: E402

GRID = ["--grid", "rule.lr=0.05,0.1", "--grid", "network.hidden=[32],[64],[128]"]
PARTS = ("reference", "resume", "ray", "throughput", "overhead")


def sweep_cmd(out: Path, epochs: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bioplaus.cli", "sweep", str(ROOT / "sims/quickstart.toml"), *GRID,
            "--seeds", "2", "--set", f"train.epochs={epochs}", "--set", "network.spiking.T=10",
            "--set", "train.threads=1", "--out", str(out), *extra]


def env() -> dict[str, str]:
    path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    return {**os.environ, "PYTHONPATH": path, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def run(cmd: list[str]) -> tuple[int, float]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    print(p.stdout.strip().splitlines()[-1] if p.stdout.strip() else "(no output)", flush=True)
    return p.returncode, wall


def rows(out: Path) -> list[dict[str, str]]:
    with (out / "index.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def metric_columns(rs: list[dict[str, str]]) -> list[str]:
    return [k for k in rs[0] if k.startswith("final_") or k in ("headline_value", "steps")]


def same_metrics(a: Path, b: Path) -> tuple[bool, int]:
    """(equal metric columns of every run, exactly as text; number of runs compared)."""
    ra = {r["file"]: r for r in rows(a)}
    rb = {r["file"]: r for r in rows(b)}
    if set(ra) != set(rb):
        return False, 0
    cols = metric_columns(list(ra.values()))
    return all(ra[f][c] == rb[f][c] and ra[f]["status"] == rb[f]["status"] for f in ra for c in cols), len(ra)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def part_reference(work: Path, epochs: int) -> dict[str, Any]:
    out = work / "reference"
    code, wall = run(sweep_cmd(out, epochs, "--workers", "2"))
    rs = rows(out)
    return {"exit": code, "wall_s": wall, "runs": len(rs), "done": sum(r["status"] == "done" for r in rs),
            "complete": code == 0 and len(rs) == 12 and all(r["status"] == "done" and r["final_test_acc"] for r in rs)}


def part_resume(work: Path, epochs: int) -> dict[str, Any]:
    out = work / "resume"
    cmd = sweep_cmd(out, epochs, "--workers", "2")
    p = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    done_at_kill: list[str] = []
    while p.poll() is None:
        time.sleep(0.5)
        try:
            rs = rows(out)
        except (OSError, KeyError):
            continue
        done_at_kill = [r["file"] for r in rs if r["status"] == "done"]
        if len(done_at_kill) >= 6:
            os.killpg(p.pid, signal.SIGKILL)  # the sweep and its pool workers
            break
    p.wait()
    time.sleep(2)  # let nothing of the killed group linger (workers exit with their parent)
    before = {r["file"]: r["status"] for r in rows(out)}
    files_before = {f: (out / f).stat().st_mtime_ns for f, s in before.items() if s == "done"}
    code, wall = run(cmd)
    after = rows(out)
    rerun = [r["file"] for r in after if r["file"] not in files_before or
             (out / r["file"]).stat().st_mtime_ns != files_before[r["file"]]]
    equal, n = same_metrics(work / "reference", out)
    return {"killed_with_done": len(files_before), "status_at_kill": before, "second_exit": code,
            "second_wall_s": wall, "rerun": len(rerun), "expected_rerun": 12 - len(files_before),
            "only_missing_rerun": len(rerun) == 12 - len(files_before),
            "moved_aside": sorted(p.name for p in (out / "previous").glob("*.h5")) if (out / "previous").exists() else [],
            "index_equals_reference": equal and n == 12}


def part_ray(work: Path, epochs: int) -> dict[str, Any]:
    from bioplaus.sweep.ray_executor import loopback_head

    out = work / "ray"
    listening: list[str] = []
    t0 = time.perf_counter()
    with loopback_head(num_cpus=2, temp_dir=work / "ray-tmp", env={"PYTHONPATH": env()["PYTHONPATH"]}) as address:
        head_s = time.perf_counter() - t0
        code, wall = run(sweep_cmd(out, epochs, "--ray", address))
        ss = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout.splitlines()[1:]
        listening = [line.split()[3] for line in ss if "ray" in line or "gcs_server" in line or "raylet" in line]
    equal, n = same_metrics(work / "reference", out)
    non_loopback = [a for a in listening if not (a.startswith("127.0.0.1:") or a.startswith("[::ffff:127.0.0.1]:"))]
    return {"address": address, "head_start_s": head_s, "exit": code, "wall_s": wall,
            "metrics_equal_reference": equal and n == 12, "ray_listening": listening,
            "non_loopback_listeners": non_loopback}


def part_throughput(work: Path, epochs: int) -> dict[str, Any]:
    res: dict[str, Any] = {"uptime_before": uptime(), "epochs": epochs}
    for k in (1, 2):
        out = work / f"throughput_w{k}"
        code, wall = run(sweep_cmd(out, epochs, "--workers", str(k)))
        res[f"w{k}"] = {"exit": code, "wall_s": wall, "runs_per_min": 12 / wall * 60}
    res["ratio"] = res["w2"]["runs_per_min"] / res["w1"]["runs_per_min"]
    res["uptime_after"] = uptime()
    print(f"throughput: {res['w1']['runs_per_min']:.2f} runs/min (1 worker) -> "
          f"{res['w2']['runs_per_min']:.2f} (2 workers): {res['ratio']:.2f}x "
          f"[load: {res['uptime_before'].split('load average:')[-1].strip()}]", flush=True)
    return res


def _timed_run(config: dict[str, Any], path: str) -> tuple[float, float]:
    """(wall s, CPU s of this process) of one run; module level so a pool worker can run it."""
    from bioplaus.sweep.executors import run_one

    t0, c0 = time.perf_counter(), time.process_time()
    run_one(config, path)
    return time.perf_counter() - t0, time.process_time() - c0


def part_overhead(work: Path, epochs: int) -> dict[str, Any]:
    """Per-run cost of a pool worker: the same 3 runs in this process and in a 1-worker pool,
    alternating, so a slow 2-worker figure can be told apart from a slow pool."""
    from concurrent.futures import ProcessPoolExecutor

    from bioplaus.procs import spawn_context
    from bioplaus.sweep.spec import build_runs

    specs = build_runs(ROOT / "sims/quickstart.toml", {"network.hidden": [[32], [64], [128]]},
                       overrides=[f"train.epochs={epochs}", "network.spiking.T=10", "train.threads=1"])
    res: dict[str, Any] = {"uptime_before": uptime(), "epochs": epochs, "in_process": [], "pool_1_worker": []}
    (work / "overhead").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(1, mp_context=spawn_context(forkserver=True)) as ex:
        ex.submit(time.sleep, 0).result()  # the worker is up before timing
        for k, spec in enumerate(specs):
            res["in_process"].append(_timed_run(spec.config, str(work / "overhead" / f"a{k}.h5")))
            res["pool_1_worker"].append(ex.submit(_timed_run, spec.config, str(work / "overhead" / f"b{k}.h5")).result())
    res["uptime_after"] = uptime()
    a = sum(w for w, _ in res["in_process"][1:])
    b = sum(w for w, _ in res["pool_1_worker"][1:])
    res["pool_over_in_process_warm"] = b / a
    print(f"overhead: a run in a 1-worker pool takes {res['pool_over_in_process_warm']:.2f}x its time in this "
          f"process (warm, runs 2-3; first runs: {res['pool_1_worker'][0][0]:.1f} s vs {res['in_process'][0][0]:.1f} s)",
          flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: " + ", ".join(PARTS))
    ap.add_argument("--epochs", type=int, default=1, help="epochs per run of the reference/resume/ray sweeps")
    ap.add_argument("--throughput-epochs", type=int, default=150,
                    help="epochs per run of the throughput sweeps (runs long enough that starting workers does not dominate)")
    ap.add_argument("--keep", help="directory for the sweeps (default: a temporary one, removed)")
    args = ap.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    for p in parts:
        if p not in PARTS:
            ap.error(f"--only: unknown part {p!r}")
    if ("resume" in parts or "ray" in parts) and "reference" not in parts:
        parts.insert(0, "reference")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sweep_demo_"))
    work.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"grid": "rule.lr=0.05,0.1 x network.hidden=[32],[64],[128] x 2 seeds",
                               "config": "sims/quickstart.toml, network.spiking.T=10, train.threads=1",
                               "epochs": args.epochs, "uptime_start": uptime()}
    try:
        for p in parts:
            print(f"== {p}", flush=True)
            epochs = args.throughput_epochs if p in ("throughput", "overhead") else args.epochs
            payload[p] = globals()[f"part_{p}"](work, epochs)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    payload["uptime_end"] = uptime()
    lines = [f"## Sweep figures (issue 12): {payload['grid']}", "",
             f"{payload['config']}, {args.epochs} epoch(s). Load at start: `{payload['uptime_start']}`; "
             f"at end: `{payload['uptime_end']}` (2 cores, shared).", ""]
    table_rows = []
    if "reference" in payload:
        r = payload["reference"]
        table_rows.append({"figure": "uninterrupted sweep (--workers 2)", "result":
                           f"{r['done']}/{r['runs']} done, index complete: {r['complete']}", "wall s": r["wall_s"]})
    if "resume" in payload:
        r = payload["resume"]
        table_rows.append({"figure": "SIGKILL of the process group half-way, then the same command", "result":
                           f"{r['killed_with_done']} done at the kill; second run ran {r['rerun']} "
                           f"(expected {r['expected_rerun']}); final metrics == reference: {r['index_equals_reference']}",
                           "wall s": r["second_wall_s"]})
    if "ray" in payload:
        r = payload["ray"]
        table_rows.append({"figure": "--ray 127.0.0.1:PORT (ray start --head on loopback, 2 CPUs)", "result":
                           f"final metrics == reference: {r['metrics_equal_reference']}; non-loopback listeners: "
                           f"{r['non_loopback_listeners'] or 'none'}; head start {r['head_start_s']:.1f} s",
                           "wall s": r["wall_s"]})
    if "throughput" in payload:
        r = payload["throughput"]
        table_rows.append({"figure": "throughput, --workers 1 vs 2", "result":
                           f"{r['epochs']} epochs per run: {r['w1']['runs_per_min']:.2f} -> {r['w2']['runs_per_min']:.2f} runs/min: "
                           f"**{r['ratio']:.2f}x** (load before: {r['uptime_before'].split('load average:')[-1].strip()})",
                           "wall s": r["w1"]["wall_s"] + r["w2"]["wall_s"]})
    if "overhead" in payload:
        r = payload["overhead"]
        table_rows.append({"figure": "per-run cost of a pool worker (same 3 runs, in process vs 1-worker pool)", "result":
                           f"{r['epochs']} epochs: warm runs {r['pool_over_in_process_warm']:.2f}x the in-process time; "
                           f"first run {r['pool_1_worker'][0][0]:.1f} s vs {r['in_process'][0][0]:.1f} s",
                           "wall s": sum(w for w, _ in r["in_process"] + r["pool_1_worker"])})
    text = "\n".join(lines) + table(table_rows, ["figure", "result", "wall s"])
    if "throughput" in payload:
        load1 = float(payload["throughput"]["uptime_before"].split("load average:")[-1].split(",")[0])
        payload["throughput"]["fair"] = load1 < 1.0
        if load1 >= 1.0:
            text += (f"\n\nThe throughput ratio is **not a fair figure**: the 1-minute load was {load1:.1f} on "
                     f"{os.cpu_count()} cores when it started (other jobs on the machine), so a second worker "
                     "had no idle core to use. Rerun `python benchmarks/sweep_demo.py --only throughput` on a quiet machine.")
    name = {("throughput",): "sweep_throughput", ("throughput", "overhead"): "sweep_throughput",
            ("overhead",): "sweep_overhead"}.get(tuple(parts), "sweep_demo")
    save(name, json.loads(json.dumps(payload, default=str)), text)


if __name__ == "__main__":
    main()
