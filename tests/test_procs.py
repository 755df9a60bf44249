"""bioplaus.procs: the start method, the raising and deferred signal handlers, the watchdog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from bioplaus import procs
from bioplaus.procs import (
    DeferredStop,
    auto_threads,
    catch_signals,
    parent_alive,
    raising_signals,
    spawn_context,
    watch_parent,
)


def test_spawn_context_never_forks() -> None:
    assert spawn_context().get_start_method() == "spawn"
    assert spawn_context(forkserver=True).get_start_method() in ("forkserver", "spawn")


def test_catch_signals_raises_and_restores() -> None:
    before = signal.getsignal(signal.SIGTERM)
    restore = catch_signals()
    try:
        with pytest.raises(KeyboardInterrupt, match=f"signal {int(signal.SIGTERM)}"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # let the handler run
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) is before
    with raising_signals(), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
    assert signal.getsignal(signal.SIGTERM) is before


def test_deferred_stop_sets_a_flag_then_stops_at_once() -> None:
    before = signal.getsignal(signal.SIGINT)
    stop = DeferredStop()
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        assert stop.requested  # the first signal only asks
        with pytest.raises(KeyboardInterrupt):  # the second one stops at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        with pytest.raises(KeyboardInterrupt, match="stop requested"):
            stop.check()
        assert not stop.requested
        stop.check()  # nothing pending: no-op
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is before and not stop.requested


def test_watch_parent_calls_back_once_the_parent_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not parent_alive(child.pid) and parent_alive(os.getpid())
    gone = threading.Event()
    watch_parent(child.pid, gone.set, every_s=0.05)
    assert gone.wait(5.0)
    alive = threading.Event()
    watch_parent(os.getpid(), alive.set, every_s=0.05)
    assert not alive.wait(0.3)


@pytest.mark.parametrize("cores,load,workers,want", [
    (2, 0.1, 1, 2),   # quiet: every core
    (2, 1.0, 1, 1),   # one busy process: the idle core
    (2, 8.0, 1, 1),   # overloaded: never below 1
    (8, 2.4, 1, 6),   # round(8 - 2.4)
    (8, 0.0, 4, 2),   # a sweep worker's share, cores // workers
    (8, 7.0, 2, 1),
])
def test_auto_threads_closed_form(monkeypatch: pytest.MonkeyPatch, cores: int, load: float, workers: int,
                                  want: int) -> None:
    """threads = max(1, min(cores // workers, round(cores - load1)))."""
    monkeypatch.setattr(procs, "cpu_count", lambda: cores)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert auto_threads(workers) == want


def test_run_context_zero_threads_is_auto_unless_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from bioplaus.context import RunContext

    before = torch.get_num_threads()
    monkeypatch.setattr(procs, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 1.0, 1.0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with RunContext(None, threads=0):
        assert torch.get_num_threads() == 1  # round(2 - 1.2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    torch.set_num_threads(1)
    with RunContext(None, threads=0):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1  # restored
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with RunContext(None, threads=0):
        assert torch.get_num_threads() == 1  # the user's OMP_NUM_THREADS decides
    with RunContext(None, threads=2):
        assert torch.get_num_threads() == 2  # an explicit count wins
    torch.set_num_threads(before)


def test_import_sets_passive_openmp_wait_unless_set() -> None:
    """bioplaus sets OMP_WAIT_POLICY=PASSIVE before torch loads; a user's value wins."""
    code = "import os, bioplaus; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"
