"""A kernel build killed half-way does not block later runs (issue 26, class 1).

Each case runs in a subprocess with its own TORCH_EXTENSIONS_DIR, so the machine's built
kernel is neither touched nor rebuilt; only the `slow` test really compiles.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

# the name the kernel loads (OpenMP build on Linux), its build dir under the temp cache
_SETUP = """
import os, sys, time
from pathlib import Path
from bioplaus.neurons import kernel as K
src = Path(K.__file__).resolve().with_name("lif_kernel.cpp")
name = K._kernel_build_name(src) + ("_omp" if sys.platform.startswith("linux") else "")
build = Path(os.environ["TORCH_EXTENSIONS_DIR"]) / name
"""
_FAKE_LOAD = """
import torch.utils.cpp_extension as ce
calls = []
ce.load = lambda **kw: calls.append(kw["name"]) or "LOADED"
"""
_RUN = """
t0 = time.monotonic()
k = K.kernel()
print("took", round(time.monotonic() - t0, 2))
print("kernel", k if isinstance(k, str) else (k is not None))
print("lock", (build / "lock").exists())
"""


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _run(tmp_path: Path, code: str, timeout: float, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"), **env}
    full.pop("BIOPLAUS_LIF_KERNEL", None)
    full.update(env)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=full, cwd=ROOT)
    return proc, time.monotonic() - t0


def _lock(tmp_path: Path, owner_pid: int | None) -> str:
    """Code that leaves ``lock`` (and an owner file naming ``owner_pid``) in the build dir."""
    owner = "" if owner_pid is None else (
        f"(build / K.OWNER_FILE).write_text('{owner_pid}\\n' + __import__('socket').gethostname() + '\\n')\n")
    return _SETUP + "build.mkdir(parents=True, exist_ok=True)\n(build / 'lock').touch()\n" + owner


def test_stale_lock_of_a_dead_build_is_cleared(tmp_path: Path) -> None:
    proc, took = _run(tmp_path, _lock(tmp_path, _dead_pid()) + _FAKE_LOAD + _RUN, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "kernel LOADED" in proc.stdout and "lock False" in proc.stdout
    assert "waiting" not in proc.stderr
    assert took < 30


def test_old_lock_without_owner_is_cleared(tmp_path: Path) -> None:
    code = _lock(tmp_path, None) + "os.utime(build / 'lock', (time.time() - 3600,) * 2)\n" + _FAKE_LOAD + _RUN
    proc, _ = _run(tmp_path, code, timeout=60, BIOPLAUS_LIF_KERNEL_STALE_S="600")
    assert proc.returncode == 0, proc.stderr
    assert "kernel LOADED" in proc.stdout and "lock False" in proc.stdout


def test_live_lock_bounded_wait_then_fallback(tmp_path: Path) -> None:
    # the owner is this (live) test process: a build still running elsewhere
    proc, took = _run(tmp_path, _lock(tmp_path, os.getpid()) + _FAKE_LOAD + _RUN + "print('calls', calls)\n",
                      timeout=60, BIOPLAUS_LIF_KERNEL_WAIT_S="2")
    assert proc.returncode == 0, proc.stderr
    assert "kernel False" in proc.stdout and "calls []" in proc.stdout
    assert "lock True" in proc.stdout  # a live build's lock is not touched
    assert "waiting up to 2 s" in proc.stderr and "pure-torch scan" in proc.stderr
    assert took < 40


def test_live_lock_with_cpp_mode_is_one_line_error(tmp_path: Path) -> None:
    code = _lock(tmp_path, os.getpid()) + _FAKE_LOAD + """
try:
    K.kernel()
except K.KernelBuildBusy as exc:
    print("busy:", exc)
    sys.exit(3)
"""
    proc, _ = _run(tmp_path, code, timeout=60, BIOPLAUS_LIF_KERNEL_WAIT_S="1", BIOPLAUS_LIF_KERNEL="cpp")
    assert proc.returncode == 3, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1 and "locked by another build" in proc.stdout


def test_sigterm_during_wait_ends_at_once(tmp_path: Path) -> None:
    code = _lock(tmp_path, os.getpid()) + _FAKE_LOAD + "K.kernel()\n"
    full = {**os.environ, "PYTHONPATH": str(ROOT), "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext"),
            "BIOPLAUS_LIF_KERNEL_WAIT_S": "600"}
    full.pop("BIOPLAUS_LIF_KERNEL", None)
    p = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=full, cwd=ROOT)
    try:
        assert p.stderr is not None
        assert "waiting" in p.stderr.readline()
        t0 = time.monotonic()
        p.terminate()
        p.wait(timeout=20)
        assert time.monotonic() - t0 < 20
    finally:
        if p.poll() is None:
            p.kill()


@pytest.mark.slow
def test_killed_build_lock_then_a_real_spiking_run(tmp_path: Path) -> None:
    """The real thing: a lock left by a dead build, then a real compile in a temp cache."""
    proc, took = _run(tmp_path, _lock(tmp_path, _dead_pid()) + _RUN, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "kernel True" in proc.stdout and "lock False" in proc.stdout
