"""One command for the day a GPU is at hand: does everything that claims CUDA run there, agree
with the CPU, and how fast is it?

    python benchmarks/gpu_check.py [--quick] [--no-speed] [--no-pytest]

Without CUDA it says so in one line and exits 0. With CUDA, in this order (about 5-8 minutes
on one GPU; ``--quick`` skips the speed table's repeats):

1. ``pytest tests/test_device.py``: on a machine with a GPU its ``auto`` run goes to CUDA.
2. Every component that runs in a kind claiming ``cuda`` (`Experiment.devices`): each
   registered rule (its conformance example), each neuron model (backprop on it), each plugin
   (on a two-task stream), with ``train.device = "cuda"`` and, same seed, on the CPU: status,
   seconds, the headline metric on both, and whether they agree within ``--tol`` (float
   sums run in another order on a GPU, so not bit for bit).
3. The quickstart for ``--epochs`` epochs on both devices: the largest gap of test accuracy
   over the epochs (the same-seed CPU-vs-GPU agreement of a short run).
4. ``benchmarks/spiking_speed.py --devices cuda``: bioplaus vs snntorch, Norse and
   SpikingJelly (those installed) on the GPU, LIF MLP 784-800-800-10, T = 20, batch 128.

Prints one table and writes it to ``benchmarks/results/gpu_check.md`` (+ JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import OUT, save, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLS = ["part", "item", "status", "cuda s", "cpu", "cuda", "|diff|", "result"]


def cuda_line() -> str | None:
    """None when CUDA is usable, else the one line saying why not."""
    import torch

    if torch.cuda.is_available():
        return None
    build = torch.version.cuda or "none"
    return f"gpu_check: no CUDA device here (torch {torch.__version__}, CUDA build {build}); nothing to check"


def cases(workdir: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(part, item, config) for every component a CUDA-capable kind runs: each rule, each
    neuron model, each plugin (their conformance configs)."""
    from bioplaus import conformance as c
    from bioplaus.registry import EXPERIMENTS, NEURONS, PLUGINS, RULES

    gradient = [name for name, cls in EXPERIMENTS.items() if "cuda" in cls.devices]
    out: list[tuple[str, str, dict[str, Any]]] = []
    if not gradient:
        return out
    for name, cls in RULES.items():
        out.append(("rule", name, c.rule_config(cls)))
    for name, model in NEURONS.items():
        cfg = c.merge(c.merge(c.TINY, {"network": {"backend": name}}), c.example(model, workdir))
        out.append(("neuron model", name, cfg))
    for name, cls in PLUGINS.items():
        out.append(("plugin", name, c.plugin_config(cls)))
    return out


def headline(result: Any) -> tuple[str, float]:
    """(name, value) of a run's headline metric (its first final metric if none)."""
    h = result.headline
    if h is not None:
        return h
    name = next(iter(result.metrics))
    return name, result.metrics[name]


def run_on(config: dict[str, Any], device: str, out: Path) -> tuple[str, float, str, float]:
    """One run of ``config`` on ``device``: (status, seconds, headline name, value)."""
    from bioplaus import conformance as c
    from bioplaus.api import run

    cfg = c.merge(config, {"train": {"device": device}})
    t0 = time.perf_counter()
    try:
        res = run(cfg, out=out, progress=False, report=False, overwrite=True)
    except Exception as e:  # a failure on the GPU is a row of the table, not the end of the check
        return f"error: {type(e).__name__}: {str(e)[:120]}", time.perf_counter() - t0, "", math.nan
    name, value = headline(res)
    return res.status, time.perf_counter() - t0, name, value


def agreement_row(part: str, item: str, cpu: tuple[str, float, str, float],
                  gpu: tuple[str, float, str, float], tol: float) -> dict[str, Any]:
    """A table row from the two runs: agree when both are done and |cpu - cuda| <= tol."""
    diff = abs(cpu[3] - gpu[3]) if cpu[0] == gpu[0] == "done" else math.nan
    ok = cpu[0] == gpu[0] == "done" and diff <= tol
    return {"part": part, "item": item, "status": gpu[0] if gpu[0] != "done" else f"done ({gpu[2]})",
            "cuda s": round(gpu[1], 2), "cpu": cpu[3], "cuda": gpu[3], "|diff|": diff,
            "result": "ok" if ok else ("FAIL" if gpu[0] != "done" or cpu[0] != "done" else f"DIFF > {tol:g}")}


def curve_agreement(cpu: list[float], gpu: list[float], tol: float) -> dict[str, Any]:
    """Largest gap between two same-seed test-accuracy curves (one value per epoch)."""
    n = min(len(cpu), len(gpu))
    gap = max((abs(a - b) for a, b in zip(cpu[:n], gpu[:n], strict=True)), default=math.nan)
    ok = n > 0 and len(cpu) == len(gpu) and gap <= tol
    return {"part": "agreement", "item": f"quickstart, {n} epochs, test_acc per epoch", "status": "done",
            "cpu": cpu[-1] if cpu else math.nan, "cuda": gpu[-1] if gpu else math.nan,
            "|diff|": gap, "result": "ok" if ok else f"DIFF > {tol:g}"}


def speed_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of spiking_speed's ``base_cuda`` result: each implementation's ms and x bioplaus."""
    rows = []
    for case in ("constant", "spike train"):
        ours = res[case]["bioplaus"]["median_s"]
        for impl, r in res[case].items():
            rows.append({"part": "speed (cuda)", "item": f"{impl}, {case} input", "status": "done",
                         "cuda s": round(r["median_s"], 4),
                         "result": f"{r['median_s'] / ours:.2f}x bioplaus's time"})
    return rows


def render(rows: list[dict[str, Any]], header: str) -> str:
    """The one table (Markdown) with a header line and a verdict line."""
    bad = [r for r in rows if str(r.get("result", "")).startswith(("FAIL", "DIFF"))]
    verdict = "all ok" if not bad else f"{len(bad)} of {len(rows)} rows failed: " + ", ".join(
        f"{r['part']} {r['item']}" for r in bad)
    return f"# GPU check\n\n{header}\n\n{table(rows, COLS)}\n\nVerdict: {verdict}\n"


def pytest_row() -> dict[str, Any]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "tests/test_device.py", "-q", "-p", "no:cacheprovider"],
                       cwd=ROOT, capture_output=True, text=True)
    last = (r.stdout.strip().splitlines() or ["(no output)"])[-1]
    return {"part": "pytest", "item": "tests/test_device.py", "status": last[:80], "cuda s": round(time.perf_counter() - t0, 1),
            "result": "ok" if r.returncode == 0 else "FAIL"}


def quickstart_curve(device: str, epochs: int, out: Path) -> list[float]:
    from bioplaus.api import run
    from bioplaus.record import open_run

    res = run(str(ROOT / "sims" / "quickstart.toml"),
              [f"train.epochs={epochs}", f"train.device={device}", "train.threads=1"],
              out=out, progress=False, report=False, overwrite=True)
    with open_run(res.path) as rf:
        return [float(v) for v in rf.metrics["test_acc"]]


def speed(quick: bool) -> tuple[list[dict[str, Any]], str]:
    name = "gpu_spiking_speed"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "spiking_speed.py"), "--devices", "cuda", "--no-scaling",
           "--no-wide", "--no-breakdown", "--name", name] + (["--repeat", "2"] if quick else [])
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    path = OUT / f"{name}.json"
    if r.returncode != 0 or not path.exists():
        return [{"part": "speed (cuda)", "item": "spiking_speed.py", "status": f"exit {r.returncode}",
                 "result": "FAIL"}], (r.stderr.strip().splitlines() or [""])[-1]
    res = json.loads(path.read_text())
    if "base_cuda" not in res:
        return [{"part": "speed (cuda)", "item": "spiking_speed.py", "status": "no cuda figures",
                 "result": "FAIL"}], r.stdout[-300:]
    return speed_rows(res["base_cuda"]), ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tol", type=float, default=0.03, help="largest |cpu - cuda| of a headline metric")
    ap.add_argument("--epochs", type=int, default=3, help="quickstart epochs for the agreement curve")
    ap.add_argument("--quick", action="store_true", help="fewer speed repeats")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-pytest", action="store_true")
    args = ap.parse_args(argv)
    why = cuda_line()
    if why is not None:
        print(why)
        return 0
    import torch

    rows: list[dict[str, Any]] = []
    if not args.no_pytest:
        rows.append(pytest_row())
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for part, item, cfg in cases(tmp):
            cpu = run_on(cfg, "cpu", tmp / "cpu.h5")
            gpu = run_on(cfg, "cuda", tmp / "cuda.h5")
            rows.append(agreement_row(part, item, cpu, gpu, args.tol))
            print(f"[gpu_check] {part} {item}: {rows[-1]['result']}", flush=True)
        rows.append(curve_agreement(quickstart_curve("cpu", args.epochs, tmp / "qc.h5"),
                                    quickstart_curve("cuda", args.epochs, tmp / "qg.h5"), args.tol))
    note = ""
    if not args.no_speed:
        srows, note = speed(args.quick)
        rows += srows
    header = (f"`python benchmarks/gpu_check.py{' --quick' if args.quick else ''}` on {torch.cuda.get_device_name(0)}, "
              f"torch {torch.__version__} (CUDA {torch.version.cuda}); tolerance {args.tol:g} on headline metrics "
              "(same seed; a GPU sums in another order). cpu / cuda: the headline metric on each device."
              + (f" Speed: {note}" if note else ""))
    save("gpu_check", {"rows": rows, "tol": args.tol}, render(rows, header))
    return 0 if all(not str(r.get("result", "")).startswith(("FAIL", "DIFF")) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
