"""A sweep output directory holding a FIFO or a truncated run file never hangs (issue 26)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

_SWEEP = """
import sys
from conftest import tiny_config
from bioplaus.errors import ConfigError
from bioplaus.sweep import sweep
cfg = tiny_config(train__epochs=1, data__limit_train=256)
try:
    res = sweep(cfg, grid={"rule.lr": [0.05]}, out=sys.argv[1], workers=1, progress=False)
except ConfigError as exc:
    print(exc)
    sys.exit(3)
print(res.counts())
"""
_NAME = """
from bioplaus.sweep import build_runs
from conftest import tiny_config
print(build_runs(tiny_config(train__epochs=1, data__limit_train=256), grid={"rule.lr": [0.05]})[0].file)
"""


def _py(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + str(ROOT / "tests")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def _run_name() -> str:
    proc = _py(_NAME)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_fifo_in_sweep_dir_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    out.mkdir()
    fifo = out / _run_name()
    os.mkfifo(fifo)
    proc = _py(_SWEEP, str(out), timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "not a regular file" in proc.stdout and str(fifo) in proc.stdout
    assert fifo.exists() and not fifo.is_file()  # left where it was, not opened or moved


def test_truncated_run_file_in_sweep_dir_is_run_again(tmp_path: Path) -> None:
    out = tmp_path / "sw"
    proc = _py(_SWEEP, str(out))
    assert proc.returncode == 0, proc.stderr
    name = _run_name()
    data = (out / name).read_bytes()
    (out / name).write_bytes(data[: len(data) // 2])
    proc = _py(_SWEEP, str(out))  # before the fix: the resume hung on the cut file
    assert proc.returncode == 0, proc.stderr
    assert "'done': 1" in proc.stdout
    assert len(list((out / "previous").glob("*.h5"))) == 1  # the cut file is moved aside
