"""Kill a run that writes a large model at random instants (SIGKILL); does every file open?

A `bioplaus run` of a rate MLP 64-1500-1500-10 on digits (weights snapshot at step 0 and
every epoch, the model at close: a 42 MB run file) is started N times and killed with
SIGKILL at a seeded uniform instant after it starts writing (its file, or the file's first
temporary version, appears), up to 1.05 x the writing time of an unkilled run (measured
first). Each left file is then opened with `open_run` in a fresh
process (timeout 60 s): opens or not, its status and note, the open time. The bioplaus under
test comes from ``--repo`` (PYTHONPATH), so the same figure can be made for an older tree.

    python benchmarks/kill_at_random.py [--n 40] [--seed 0] [--repo PATH] [--name kill_at_random]

Writes ``benchmarks/results/<name>.{md,json}``. Timings depend on the machine's load (shared
by several processes here); the instants are drawn per kill, so a slower start shifts them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import save, table  # noqa: E402

CONFIG = """name = "big"
seed = 0
[data]
dataset = "digits"
limit_train = 256
limit_test = 64
batch_size = 64
[network]
backend = "rate"
hidden = [1500, 1500]
[rule]
name = "backprop"
lr = 0.05
[train]
epochs = 3
report = false
[record]
weights_every = 1
"""
_RUN = "import sys; from bioplaus.cli import main; sys.exit(main(sys.argv[1:]))"
_OPEN = r"""
import json, sys, time
t0 = time.monotonic()
try:
    from bioplaus.record import open_run
    with open_run(sys.argv[1]) as run:
        out = {"opens": True, "status": run.status, "note": getattr(run, "note", None),
               "last_step": run.summary()["last_step"]}
except Exception as exc:
    out = {"opens": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]}
out["open_s"] = round(time.monotonic() - t0, 3)
print(json.dumps(out))
"""


def _start(repo: Path, cfg: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _RUN, "run", str(cfg), "--out", str(out), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=repo)


def _timeline(repo: Path, cfg: Path, d: Path) -> tuple[float, float]:
    """(seconds until the run file exists, seconds until the run ends) of one unkilled run."""
    out = d / "probe.h5"
    t0 = time.monotonic()
    p = _start(repo, cfg, out)
    t_file = None
    while p.poll() is None:
        if t_file is None and out.exists():
            t_file = time.monotonic() - t0
        time.sleep(0.01)
    t_end = time.monotonic() - t0
    if p.returncode != 0 or t_file is None:
        raise SystemExit(f"the unkilled run failed (exit {p.returncode})")
    return t_file, t_end


def _read(repo: Path, path: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    try:
        r = subprocess.run([sys.executable, "-c", _OPEN, str(path)], capture_output=True, text=True,
                           env=env, timeout=60, cwd=repo)
    except subprocess.TimeoutExpired:
        return {"opens": False, "error": "hang: no answer in 60 s", "open_s": 60.0}
    if r.returncode != 0 or not r.stdout.strip():
        return {"opens": False, "error": f"reader exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="number of kills (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                    help="the bioplaus tree to test (PYTHONPATH)")
    ap.add_argument("--name", default="kill_at_random", help="results file name")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kill_at_random_") as tmp:
        d = Path(tmp)
        cfg = d / "big.toml"
        cfg.write_text(CONFIG)
        t_file, t_end = _timeline(args.repo, cfg, d)
        size = (d / "probe.h5").stat().st_size
        print(f"unkilled run: file after {t_file:.1f} s, ends after {t_end:.1f} s, {size / 2**20:.0f} MiB", flush=True)
        # Instants counted from the moment the run starts writing (its first temporary
        # version, or the file, appears), so that the machine's load, which shifts the start
        # by seconds, does not push them out of the writing phase.
        lo, hi = 0.0, (t_end - t_file) * 1.05
        for k in range(args.n):
            at = rng.uniform(lo, hi)
            out = d / f"k{k}.h5"
            p = _start(args.repo, cfg, out)
            while p.poll() is None and not (out.exists() or any(d.glob(f".k{k}.h5.*"))):
                time.sleep(0.005)
            time.sleep(at)
            ended_first = p.poll() is not None
            if not ended_first:
                os.kill(p.pid, signal.SIGKILL)
            p.wait()
            row: dict[str, Any] = {"kill": k, "at_s": round(at, 2), "killed": not ended_first}
            if not out.exists():
                row.update({"file": "none (killed before it was created)"})
            else:
                row.update({"file": "yes", **_read(args.repo, out)})
            row["tmp_left"] = len(list(d.glob(f".k{k}.h5.*.tmp")))
            rows.append(row)
            print(json.dumps(row), flush=True)
            out.unlink(missing_ok=True)
    with_file = [r for r in rows if r["file"] == "yes"]
    opened = [r for r in with_file if r.get("opens")]
    statuses: dict[str, int] = {}
    for r in opened:
        key = r["status"] + (" (note: writer gone)" if r.get("note") else "")
        statuses[key] = statuses.get(key, 0) + 1
    load = os.getloadavg()
    head = (
        f"# Kill at random instants ({args.n} kills, seed {args.seed}, bioplaus from {args.repo})\n\n"
        f"Run: rate MLP 64-1500-1500-10, digits, 3 epochs, weights every epoch + model at close "
        f"({size / 2**20:.0f} MiB file); unkilled: file after {t_file:.1f} s, end after {t_end:.1f} s; "
        f"kills uniform in [{lo:.1f}, {hi:.1f}] s after the run starts writing.\n"
        f"Machine: AMD EPYC, 2 cores (shared by several processes; load {load[0]:.1f} {load[1]:.1f} "
        f"{load[2]:.1f} at the end), timings noisy.\n\n"
        f"- kills: {sum(r['killed'] for r in rows)} (runs that ended before their instant: "
        f"{sum(not r['killed'] for r in rows)})\n"
        f"- no file yet (killed before creation): {len(rows) - len(with_file)}\n"
        f"- files left: {len(with_file)}; open with open_run: **{len(opened)} / {len(with_file)}**\n"
        f"- status of the files that open: {json.dumps(statuses)}\n"
        f"- slowest open: {max((r.get('open_s', 0.0) for r in with_file), default=0.0):.2f} s\n"
        f"- temporary versions left beside the file: {sum(r['tmp_left'] for r in rows)}\n\n"
    )
    text = head + table(rows, ["kill", "at_s", "killed", "file", "opens", "status", "last_step", "open_s",
                               "tmp_left", "note", "error"])
    save(args.name, {"n": args.n, "seed": args.seed, "repo": str(args.repo), "t_file_s": t_file,
                     "t_end_s": t_end, "file_bytes": size, "opened": len(opened), "files": len(with_file),
                     "statuses": statuses, "rows": rows}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
