"""Issue 26's twelve failure classes, one representative reproducer each, against a bioplaus tree.

Each case runs in a subprocess (PYTHONPATH = ``--repo``) with a timeout and its address space
capped (RLIMIT_AS, ``--mem-gb``, default 3 GB: a case that would allocate tens of GB fails or
is killed at the cap instead). Printed per class: exit code, seconds, and what the user saw:
``one-line`` (exit 2, one ``bioplaus: error:`` line, no other error line), ``works`` (exit 0), ``traceback``,
``hang`` (no exit within the timeout, or within ``--term-s`` of SIGTERM for class 10),
``crash`` (killed by a signal: segfault, or the memory cap), and whether that is the goal of
the class (``ok``) or not (``FAIL``).

    python benchmarks/hardening_table.py --repo PATH [--label after] [--timeout 40]
    python benchmarks/hardening_table.py --combine before.json after.json   # the md table

Writes ``benchmarks/results/hardening_ii_<label>.json``; ``--combine`` writes
``benchmarks/results/hardening_ii_table.md``. Small sizes only: no case fills a real disk
(class 5 uses a 1012 kB tmpfs as root, else a 300 kB file size limit).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "results"
CLI = "import sys; from bioplaus.cli import main; sys.exit(main(sys.argv[1:]))"
# The Python API's error boundary: the project's own error in one line, anything else a traceback.
API = ("import sys\nfrom bioplaus.errors import BioplausError\ntry:\n    exec(sys.argv[1])\n"
       "except BioplausError as exc:\n    print(f'bioplaus: error: {exc}', file=sys.stderr)\n    sys.exit(2)\n")
QUICK = ["--set", "train.epochs=1", "--set", "data.limit_train=64", "--set", "data.limit_test=32", "--quiet"]

# A run file written by the Recorder of the tree under test: SWMR, epochs, a model, closed;
# with ``pause`` it stops (prints READY) inside start_swmr before SWMR mode is on.
WRITER = r"""
import sys, time
import numpy as np
from bioplaus.record import writer as w
path, pause = sys.argv[1], sys.argv[2] == "1"
calls = {"n": 0}
orig = w.Recorder._write_all
def hooked(self, f):
    orig(self, f)
    calls["n"] += 1
    if pause and calls["n"] == 2:
        print("READY", flush=True)
        time.sleep(300)
w.Recorder._write_all = hooked
rng = np.random.default_rng(0)
big = rng.standard_normal((400, 800)).astype(np.float32)
with w.Recorder(path, {"x": 1}, seed=0, meta={"kind": "simulate"}) as rec:
    rec.declare_metrics("loss")
    rec.log_weights("w0", 0, big)
    for step in range(4):
        rec.log_spikes("layer0", step, rng.random((20, 16, 200)) < 0.1, dt=1e-3)
        rec.log_trace("layer0.mem", step, rng.standard_normal((20, 16, 200)), unit="V", dt=1e-3, every=1,
                      dims="time,sample,neuron")
    rec.log_metrics(0, loss=1.0)
    rec.flush()
    rec.start_swmr()
    for e in range(1, 30):
        rec.log_metrics(e, loss=1.0 / e)
        rec.flush()
    rec.log_array("model/w0", big)
"""


@dataclass
class Case:
    cls: int
    title: str
    argv: list[str]  # after the python executable
    goal: str  # "one-line" or "works"
    env: dict[str, str] = field(default_factory=dict)
    term_after: float | None = None  # class 10: SIGTERM after this many seconds
    check: Callable[[], str] | None = None  # extra check after the run: "" if fine, else why not


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _env(repo: Path, extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", **extra}


def _write_run(repo: Path, path: Path) -> None:
    subprocess.run([sys.executable, "-c", WRITER, str(path), "0"], check=True, env=_env(repo, {}), timeout=120,
                   capture_output=True, cwd=repo)


def _killed_at_start(repo: Path, path: Path) -> None:
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "1"], stdout=subprocess.PIPE, text=True,
                         env=_env(repo, {}), cwd=repo)
    assert p.stdout is not None
    if p.stdout.readline().strip() != "READY":
        raise SystemExit("class 3: the writer ended before the instant")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()


def _kernel_name(repo: Path) -> str:
    code = ("import sys\nfrom pathlib import Path\ntry:\n    from bioplaus.neurons import kernel as K\n"
            "except ImportError:\n    from bioplaus.backends import spiking as K\n"
            "src = Path(K.__file__).resolve().with_name('lif_kernel.cpp')\n"
            "print(K._kernel_build_name(src) + ('_omp' if sys.platform.startswith('linux') else ''))")
    return subprocess.run([sys.executable, "-c", code], env=_env(repo, {}), capture_output=True, text=True,
                          check=True, timeout=120, cwd=repo).stdout.strip()


def _mount_tmpfs(d: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    d.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                          capture_output=True).returncode == 0


def cases(repo: Path, d: Path) -> list[Case]:
    run = d / "run.h5"
    _write_run(repo, run)
    out: list[Case] = []
    # 1. a build lock held by a live owner (torch's lock + bioplaus's owner file: this process)
    ext = d / "ext"
    build = ext / _kernel_name(repo)
    build.mkdir(parents=True)
    (build / "lock").write_text("")
    (build / "bioplaus_build_owner").write_text(f"{os.getpid()}\n{os.uname().nodename}\n")
    out.append(Case(1, "spiking run while the kernel build is locked", ["-c", CLI, "run", "sims/quickstart.toml",
                    *QUICK, "--out", str(d / "k1.h5")], "one-line",
                    env={"TORCH_EXTENSIONS_DIR": str(ext), "BIOPLAUS_LIF_KERNEL": "cpp",
                         "BIOPLAUS_LIF_KERNEL_WAIT_S": "2"}))
    # 2. a run file cut at 5 % (the root's objects are cut off)
    cut = d / "cut.h5"
    data = run.read_bytes()
    cut.write_bytes(data[: len(data) * 5 // 100])
    out.append(Case(2, "inspect a run file cut at 5 %", ["-c", CLI, "inspect", str(cut)], "one-line"))
    # 3. writer killed inside start_swmr (the model written, SWMR not yet on)
    killed = d / "killed.h5"
    _killed_at_start(repo, killed)
    out.append(Case(3, "inspect a run killed while start_swmr writes the model", ["-c", CLI, "inspect",
                    str(killed)], "works"))
    # 4. export onto the run being exported
    src4 = d / "spk4.h5"
    src4.write_bytes(run.read_bytes())
    before4 = _sha(src4)
    out.append(Case(4, "export spk.h5 --nwb spk.h5 --overwrite", ["-c", CLI, "export", str(src4), "--nwb", str(src4),
                    "--overwrite"], "one-line",
                    check=lambda: "" if src4.exists() and _sha(src4) == before4 else "the run file was replaced"))
    # 5. NWB export onto a full disk (a 1012 kB tmpfs; else a 300 kB file size limit)
    fs = d / "fs"
    if _mount_tmpfs(fs, "1012k"):
        target5, pre = fs / "o.nwb", []
    else:
        target5 = d / "o5.nwb"
        pre = ["-c", "import resource, signal, sys, runpy; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (300000, 300000)); " + CLI.split("; ", 1)[1]]
    before5 = _sha(run)
    out.append(Case(5, "NWB export onto a full disk", (pre or ["-c", CLI]) + ["export", str(run), "--nwb",
                    str(target5)], "one-line",
                    check=lambda: ("a partial NWB file was left" if target5.exists() else "")
                    or ("" if _sha(run) == before5 else "the run file changed")))
    # 6. a FIFO named *.h5
    fifo = d / "fifo.h5"
    os.mkfifo(fifo)
    out.append(Case(6, "open_run of a FIFO named fifo.h5", ["-c", API, "from bioplaus.record import open_run; "
                    f"open_run({str(fifo)!r})"], "one-line"))
    # 7. sweep --out under a regular file
    (d / "afile").write_text("x")
    out.append(Case(7, "sweep --out under a regular file", ["-c", CLI, "sweep", "sims/quickstart.toml", "--seeds",
                    "1", "--set", "train.epochs=1", "--quiet", "--out", str(d / "afile" / "sub")], "one-line"))
    # 8. NoProp with a model that cannot be allocated
    out.append(Case(8, "NoProp rule.width=10^9 (digits)", ["-c", CLI, "run", "sims/noprop_dt_fashion.toml",
                    "--set", "data.dataset=digits", "--set", "rule.width=1000000000", *QUICK, "--out", str(d / "k8.h5")],
                    "one-line"))
    # 9. sweep --seeds 1e9
    out.append(Case(9, "sweep --seeds 10^9", ["-c", CLI, "sweep", "sims/quickstart.toml", "--seeds", "1000000000",
                    "--quiet", "--out", str(d / "sw9")], "one-line"))
    # 10. Hopfield K=64: SIGTERM after 10 s
    out.append(Case(10, "Hopfield K=64, SIGTERM after 10 s", ["-c", CLI, "run", "sims/hopfield_parallel.toml",
                    "--set", "hopfield.K=64", "--set", "hopfield.N=2000", "--quiet", "--out", str(d / "k10.h5")],
                    "stops", term_after=10.0))
    # 11. the Python API given None
    out.append(Case(11, "bioplaus.run(None)", ["-c", API, "import bioplaus; bioplaus.run(None)"], "one-line"))
    # 12. 300 floats in hopfield.values (400 are allowed)
    values = ", ".join(f"{0.001 * (k + 1):.3f}" for k in range(300))
    out.append(Case(12, "config with 300 hopfield.values", ["-c", API, "from bioplaus.config import load_config; "
                    f"load_config('sims/hopfield_parallel.toml', ['hopfield.values=[{values}]'])"], "works"))
    return out


def _limit(mem_gb: float) -> Callable[[], None]:
    def pre() -> None:
        cap = int(mem_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        os.setsid()

    return pre


def run_case(case: Case, repo: Path, timeout: float, term_s: float, mem_gb: float) -> dict[str, Any]:
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, *case.argv], cwd=repo, env=_env(repo, case.env), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=_limit(mem_gb))
    outcome = ""
    try:
        if case.term_after is not None:
            try:
                p.wait(timeout=case.term_after)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGTERM)
                t_term = time.monotonic()
                try:
                    p.wait(timeout=term_s)
                    outcome = f"stopped {time.monotonic() - t_term:.1f} s after SIGTERM"
                except subprocess.TimeoutExpired:
                    outcome = f"hang (no exit {term_s:g} s after SIGTERM)"
        stdout, stderr = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        stdout, stderr = p.communicate()
        outcome = outcome or f"hang (killed after {timeout:g} s)"
    seconds = time.monotonic() - t0
    rc = p.returncode
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    if not outcome:
        if rc is not None and rc < 0:
            outcome = f"crash (signal {-rc})"
        elif "Traceback" in stderr:
            last = lines[-1] if lines else ""
            outcome = f"traceback ({last[:80]})"
        elif rc == 2 and sum(ln.startswith("bioplaus: error:") for ln in lines) == 1 == sum(
                "error" in ln.lower() for ln in lines):  # one error line (a notice before it may say it waited)
            outcome = "one-line"
        elif rc == 0:
            outcome = "works"
        else:
            outcome = f"exit {rc}, {len(lines)} stderr lines"
    extra = case.check() if case.check else ""
    if case.goal == "stops":
        good = outcome.startswith("stopped") and float(outcome.split()[1]) <= 1.5 or outcome in ("one-line", "works")
    else:
        good = outcome == case.goal
    good = good and not extra
    return {"class": case.cls, "case": case.title, "exit": rc, "seconds": round(seconds, 1), "outcome": outcome,
            "note": extra, "verdict": "ok" if good else "FAIL",
            "message": (lines[-1][:160] if lines else (stdout.strip().splitlines() or [""])[0][:160])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, help="the bioplaus tree to test")
    ap.add_argument("--label", default="after")
    ap.add_argument("--timeout", type=float, default=40.0)
    ap.add_argument("--term-s", type=float, default=20.0)
    ap.add_argument("--mem-gb", type=float, default=3.0)
    ap.add_argument("--only", type=int, nargs="*", help="classes to run")
    ap.add_argument("--combine", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    ap.add_argument("--note", action="append", default=[], help="a line added under the combined table")
    args = ap.parse_args()
    if args.combine:
        return combine(*args.combine, notes=args.note)
    repo = args.repo.resolve()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hardening_") as tmp:
        d = Path(tmp)
        try:
            for case in cases(repo, d):
                if args.only and case.cls not in args.only:
                    continue
                row = run_case(case, repo, args.timeout, args.term_s, args.mem_gb)
                rows.append(row)
                print(f"{row['class']:>2} {row['verdict']:<4} exit {row['exit']!s:>4} {row['seconds']:>6.1f} s  "
                      f"{row['outcome']}  {row['note']}", flush=True)
        finally:
            fs = d / "fs"
            if fs.is_dir() and os.path.ismount(fs):
                subprocess.run(["umount", "-l", str(fs)], capture_output=True)
            for p in d.rglob("*"):  # FIFOs and read-only leftovers must not block the cleanup
                if p.is_fifo() or stat.S_ISFIFO(p.lstat().st_mode):
                    p.unlink()
    load = os.getloadavg()
    payload = {"label": args.label, "repo": str(repo), "timeout_s": args.timeout, "mem_gb": args.mem_gb,
               "load": load, "rows": rows}
    OUT.mkdir(exist_ok=True)
    path = OUT / f"hardening_ii_{args.label}.json"
    if args.only and path.exists():  # rerun of some classes: keep the others
        old = json.loads(path.read_text())
        rows = sorted([r for r in old["rows"] if r["class"] not in args.only] + rows, key=lambda r: r["class"])
        payload["rows"] = rows
    path.write_text(json.dumps(payload, indent=2))
    return 0


def combine(before: Path, after: Path, notes: list[str] | None = None) -> int:
    b, a = json.loads(before.read_text()), json.loads(after.read_text())
    rb = {r["class"]: r for r in b["rows"]}
    lines = [
        "# Hardening II: the twelve failure classes of issue 26, before / after",
        "",
        f"Before: {b['repo']}; after: {a['repo']}. Each case in a subprocess, timeout {a['timeout_s']:g} s, "
        f"address space capped at {a['mem_gb']:g} GB (RLIMIT_AS). Machine: AMD EPYC, 2 cores shared by "
        f"several processes (load before {b['load'][0]:.1f}, after {a['load'][0]:.1f}): seconds are noisy. "
        "Produced by `python benchmarks/hardening_table.py --repo PATH --label before|after` and "
        "`--combine`.",
        "",
        "| class | case | before: exit, s, outcome | after: exit, s, outcome | after |",
        "|---|---|---|---|---|",
    ]
    def cell(x: dict[str, Any]) -> str:
        return f"{x.get('exit')}, {x.get('seconds')} s, {x.get('outcome')}" + (f" ({x['note']})" if x.get("note") else "")

    for r in a["rows"]:
        o = rb.get(r["class"], {})
        lines.append(f"| {r['class']} | {r['case']} | {cell(o)} | {cell(r)} | {r['verdict']} |")
    lines += ["", "Goals: `one-line` (exit 2, one `bioplaus: error:` line) for classes 1, 2, 4-9, 11; the file "
              "opens (`works`) for 3 and the config is accepted for 12; class 10 stops within ~1 s of SIGTERM. "
              "Class 4 also checks that the run file is unchanged, class 5 that no partial file is left.",
              *(["", *notes] if notes else [])]
    (OUT / "hardening_ii_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
