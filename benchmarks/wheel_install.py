"""A wheel install runs the quickstart as fast as an editable install of the checkout.

Builds the wheel (``pip wheel --no-deps``) from a copy of the working tree, makes two fresh
venvs (no system site-packages) that each get ``torch==2.13.0`` first and then either the
wheel or an editable install of the same copy (the other dependencies from the index), and
runs ``bioplaus run quickstart --no-report`` from an empty directory with each, every run in
its own process, by the venv's script path (the venv is not activated).

Each install compiles the C++ LIF kernel into its own fresh ``TORCH_EXTENSIONS_DIR`` in one
warm-up run (about 30 s, not timed); ``BIOPLAUS_LIF_KERNEL=cpp`` makes a failed kernel build
an error, not a silent fall back to the pure-torch scan. Timed runs are interleaved
(wheel/editable, then editable/wheel, ...). Training seconds come from the run file's root
attribute ``seconds``; wall time is the whole process. Also checked: ``bioplaus.__file__``
lives in the venv (wheel) or the source copy (editable); both give the same test accuracy;
nothing is written into the installed package.

    python benchmarks/wheel_install.py [--repeats 3] [--threads 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import save, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"
TARGET = 1.2


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:  # noqa: ANN003
    """Run ``cmd``; on failure print its output and stop."""
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"wheel_install: {' '.join(map(str, cmd))} failed ({r.returncode}):\n"
                 f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return r


def copy_tree(dst: Path) -> Path:
    """The working tree (tracked and untracked, not ignored files) copied to ``dst``."""
    files = sh(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"]).stdout
    for rel in filter(None, files.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def make_venv(path: Path, target: list[str]) -> dict[str, float]:
    """A venv with the pinned CPU torch first, then ``pip install *target``; seconds taken."""
    t0 = time.perf_counter()
    sh([sys.executable, "-m", "venv", str(path)])
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q"]
    sh(pip + [TORCH])
    t1 = time.perf_counter()
    sh(pip + target)
    return {"venv_torch_s": t1 - t0, "install_s": time.perf_counter() - t1}


def run_env(venv: Path, ext_dir: Path) -> dict[str, str]:
    """Environment of a run: venv not activated, own kernel build dir, no fallback."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TORCH_EXTENSIONS_DIR")}
    env.update(TORCH_EXTENSIONS_DIR=str(ext_dir), BIOPLAUS_LIF_KERNEL="cpp",
               MPLBACKEND="Agg")
    return env


def module_file(venv: Path, env: dict[str, str], cwd: Path) -> Path:
    py = "import bioplaus, sys; sys.stdout.write(bioplaus.__file__)"
    return Path(sh([str(venv / "bin" / "python"), "-c", py], env=env, cwd=cwd).stdout)


def quickstart(venv: Path, env: dict[str, str], cwd: Path, threads: int) -> dict[str, float]:
    """One ``bioplaus run quickstart --no-report`` in the empty dir ``cwd``."""
    cwd.mkdir(parents=True)
    t0 = time.perf_counter()
    r = sh([str(venv / "bin" / "bioplaus"), "run", "quickstart", "--no-report", "--quiet",
            "--set", f"train.threads={threads}"], env=env, cwd=cwd)
    wall = time.perf_counter() - t0
    if "kernel unavailable" in r.stderr:
        sys.exit(f"wheel_install: {venv.name} ran without the LIF kernel:\n{r.stderr}")
    with h5py.File(cwd / "runs" / "quickstart.h5", "r") as f:
        assert f.attrs["status"] == "done", f.attrs["status"]
        return {"train_s": float(f.attrs["seconds"]), "wall_s": wall,
                "test_acc": float(f.attrs["final_test_acc"])}


def package_files(pkg: Path) -> set[str]:
    return {str(p.relative_to(pkg)) for p in pkg.rglob("*")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of every run (1: steadier on a shared machine; 0: default)")
    ap.add_argument("--keep", help="work directory to use and keep (default: a temp dir)")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bioplaus-wheel-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        _bench(work, args.repeats, args.threads)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _bench(work: Path, repeats: int, threads: int) -> None:
    src = copy_tree(work / "src")
    t0 = time.perf_counter()
    sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"),
        str(src)])
    wheel_build_s = time.perf_counter() - t0
    (wheel,) = (work / "dist").glob("bioplaus-*.whl")
    shutil.rmtree(src / "build", ignore_errors=True)  # the editable install must not see it

    venvs = {"wheel": work / "venv-wheel", "editable": work / "venv-editable"}
    setup = {"wheel": make_venv(venvs["wheel"], [str(wheel)]),
             "editable": make_venv(venvs["editable"], ["-e", str(src)])}
    freeze = {k: sorted(line for line in sh([str(v / "bin" / "python"), "-m", "pip", "freeze",
                                             "--exclude", "bioplaus"]).stdout.splitlines()
                        if not line.startswith("-e "))
              for k, v in venvs.items()}
    same_deps = freeze["wheel"] == freeze["editable"]

    envs = {k: run_env(v, work / f"ext-{k}") for k, v in venvs.items()}
    empty = work / "empty"
    empty.mkdir()
    where = {k: module_file(v, envs[k], empty) for k, v in venvs.items()}
    assert where["wheel"].is_relative_to(venvs["wheel"]), where["wheel"]
    assert where["editable"].is_relative_to(src), where["editable"]
    pkg = where["wheel"].parent
    before = package_files(pkg)

    warm = {k: quickstart(v, envs[k], work / f"warmup-{k}", threads) for k, v in venvs.items()}
    load = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {"wheel": [], "editable": []}
    for i in range(repeats):
        for k in (("wheel", "editable") if i % 2 == 0 else ("editable", "wheel")):
            runs[k].append(quickstart(venvs[k], envs[k], work / f"run{i}-{k}", threads))
            print(f"repeat {i} {k}: train {runs[k][-1]['train_s']:.2f} s, "
                  f"wall {runs[k][-1]['wall_s']:.2f} s", flush=True)
    written = sorted(package_files(pkg) - before)

    rows, med, best = [], {}, {}
    for k in ("wheel", "editable"):
        tr = [r["train_s"] for r in runs[k]]
        wa = [r["wall_s"] for r in runs[k]]
        med[k] = (statistics.median(tr), statistics.median(wa))
        best[k] = min(tr)
        rows.append({"install": k, "train s (median)": med[k][0], "train s (min-max)":
                     f"{min(tr):.2f}-{max(tr):.2f}", "wall s (median)": med[k][1],
                     "warm-up wall s (kernel build)": warm[k]["wall_s"],
                     "test_acc": runs[k][0]["test_acc"], "bioplaus from": str(where[k])})
    ratio_train = med["wheel"][0] / med["editable"][0]
    ratio_wall = med["wheel"][1] / med["editable"][1]
    ratio_min = best["wheel"] / best["editable"]
    # each repeat's adjacent pair shares the machine's load of that moment
    ratio_pairs = statistics.median(w["train_s"] / e["train_s"]
                                    for w, e in zip(runs["wheel"], runs["editable"]))
    accs = {r["test_acc"] for k in runs for r in runs[k] + [warm[k]]}
    text = "\n".join([
        "## `bioplaus run quickstart --no-report`: wheel install vs editable install",
        "",
        table(rows, ["install", "train s (median)", "train s (min-max)", "wall s (median)",
                     "warm-up wall s (kernel build)", "test_acc"]),
        "",
        f"ratio wheel / editable: **{ratio_train:.3f}** training (medians; median of the "
        f"per-repeat pairs {ratio_pairs:.3f}, fastest runs {ratio_min:.3f}), {ratio_wall:.3f} "
        f"wall (target <= {TARGET}); "
        f"{repeats} interleaved runs each ({threads or 'default'} torch thread"
        f"{'s' if threads != 1 else ''}), every run its own process "
        "from an empty directory, after one untimed warm-up run per install that compiles the "
        "LIF kernel into that install's own TORCH_EXTENSIONS_DIR.",
        f"Fresh venvs without system site-packages, {TORCH} first; same dependency versions "
        f"in both: {same_deps}; same test_acc in every run: {len(accs) == 1}; files written "
        f"into the installed package by the runs: {len(written)}. Wheel built in "
        f"{wheel_build_s:.1f} s; venv + torch / rest of the install: "
        + ", ".join(f"{k} {s['venv_torch_s']:.0f} s / {s['install_s']:.0f} s"
                    for k, s in setup.items())
        + f". Load average (1 min) before / after the timed runs: {load[0]:.2f} / "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (a shared machine: the "
        "absolute seconds move with other processes; the interleaving keeps the ratio fair).",
    ])
    save("wheel_install", {
        "ratio_train": ratio_train, "ratio_wall": ratio_wall, "ratio_train_min": ratio_min,
        "ratio_train_pairs": ratio_pairs,
        "target": TARGET, "loadavg_before": load, "loadavg_after": os.getloadavg(),
        "repeats": repeats, "threads": threads, "runs": runs, "warmup": warm, "bioplaus_file": {
            k: str(v) for k, v in where.items()}, "same_dependency_versions": same_deps,
        "dependencies": freeze["wheel"], "files_written_into_package": written,
        "wheel": wheel.name, "wheel_build_s": wheel_build_s, "setup_s": setup,
    }, text)
    if not (same_deps and len(accs) == 1 and not written):
        sys.exit("wheel_install: a check failed (see the table notes)")


if __name__ == "__main__":
    main()
