"""Truncated run files and paths that are not regular files never hang a reader (issue 26).

Each reader runs in a subprocess with a timeout: before the fix an SWMR-read open of a cut
file sat in HDF5's retry loop for good, and a FIFO named ``*.h5`` blocked the open.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, tiny_config

import bioplaus

BOUND_S = 20.0  # the goal is well under a second; the machine is shared and loaded


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("real") / "rate.h5"
    bioplaus.run(tiny_config(train__epochs=1, data__limit_train=256), out=path)
    return path


def _py(code: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + str(ROOT / "tests")}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=BOUND_S + 30, env=env, cwd=ROOT)
    return proc, time.monotonic() - t0


_OPEN = """
import sys, time
from bioplaus.errors import RunFileError
from bioplaus.record import open_run
t0 = time.monotonic()
try:
    open_run(sys.argv[1])
except RunFileError as exc:
    print(f"{time.monotonic() - t0:.3f}")
    print(exc)
    sys.exit(3)
sys.exit(0)
"""
_CLI = "import sys; from bioplaus.cli import main; sys.exit(main(sys.argv[1:]))"


def _cut(src: Path, dest: Path, percent: int) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: len(data) * percent // 100])
    return dest


@pytest.mark.parametrize("percent", [5, 20, 50, 80])
def test_truncated_run_file_open_run(real_run: Path, tmp_path: Path, percent: int) -> None:
    cut = _cut(real_run, tmp_path / "t.h5", percent)
    proc, _ = _py(_OPEN, str(cut))
    assert proc.returncode == 3, proc.stderr
    seconds, message = proc.stdout.splitlines()[:2]
    assert float(seconds) < BOUND_S
    assert "truncated" in message and str(cut) in message


@pytest.mark.parametrize("percent", [5, 20, 50, 80])
def test_truncated_run_file_inspect_and_compare(real_run: Path, tmp_path: Path, percent: int) -> None:
    cut = _cut(real_run, tmp_path / "t.h5", percent)
    proc, took = _py(_CLI, "inspect", str(cut))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "truncated" in lines[0], proc.stderr
    assert took < BOUND_S
    # compare DIR: the cut file is excluded (and said so), the whole file is compared
    d = tmp_path / "dir"
    d.mkdir()
    (d / "whole.h5").write_bytes(real_run.read_bytes())
    cut.rename(d / "cut.h5")
    proc, took = _py(_CLI, "compare", str(d), "--out", str(tmp_path / "cmp"))
    assert proc.returncode == 0, proc.stderr
    assert "1 unreadable" in proc.stdout + proc.stderr
    assert took < BOUND_S + 10
    # compare naming the cut file: one line, exit 2
    proc, _ = _py(_CLI, "compare", str(d / "cut.h5"), str(d / "whole.h5"), "--out", str(tmp_path / "cmp2"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_fifo_is_refused_without_opening(real_run: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)
    proc, _ = _py(_OPEN, str(fifo))
    assert proc.returncode == 3, proc.stderr
    assert "not a regular file" in proc.stdout and "FIFO" in proc.stdout
    proc, _ = _py(_CLI, "inspect", str(fifo))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"bioplaus: error: {fifo}: not a regular file"]
    # a directory scan skips it, saying so
    d = tmp_path / "dir"
    d.mkdir()
    (d / "whole.h5").write_bytes(real_run.read_bytes())
    fifo.rename(d / "z.h5")
    proc, _ = _py(_CLI, "compare", str(d), "--out", str(tmp_path / "cmp"))
    assert proc.returncode == 0, proc.stderr
    assert "1 unreadable" in proc.stdout + proc.stderr
    # named one by one: one line, exit 2
    proc, _ = _py(_CLI, "compare", str(d / "z.h5"), str(d / "whole.h5"), "--out", str(tmp_path / "cmp2"))
    assert proc.returncode == 2, proc.stderr
    assert "not a regular file" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
