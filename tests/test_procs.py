"""bioplaus.procs: the start method, the raising and deferred signal handlers, the watchdog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from bioplaus.procs import (
    DeferredStop,
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


def test_thread_default_is_one_and_zero_is_torchs_default() -> None:
    """train.threads defaults to 1 (issue 23: fastest for the quickstart quiet and loaded, and
    no load-dependent numbers); 0 leaves torch's count (all cores, or OMP_NUM_THREADS)."""
    import torch

    from bioplaus.config import load_config
    from bioplaus.context import RunContext

    assert load_config({"data": {"dataset": "digits"}}).train.threads == 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with RunContext(None, threads=load_config({}).train.threads):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2  # restored
        with RunContext(None, threads=0):
            assert torch.get_num_threads() == 2
    finally:
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
