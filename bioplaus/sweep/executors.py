"""Where a sweep's runs execute: in this process one after another, or in a process pool.

`run_one` is the unit of work: it runs one validated config into its own run file and
returns an outcome dict (status, error, wall time, steps, headline, ``final_*``), read back
from the run file. It never raises for a failing run; a KeyboardInterrupt inside the run
becomes status ``interrupted``. Both executors call ``on_start(spec)`` and
``on_done(spec, outcome)`` in the parent and stop submitting after an interrupted run or a
Ctrl-C (pending runs are not started; running ones stop at their next step boundary).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from bioplaus.config import kind_metrics
from bioplaus.errors import BioplausError
from bioplaus.procs import spawn_context, start_worker
from bioplaus.record.reader import open_run
from bioplaus.sweep.index import outcome_row
from bioplaus.sweep.spec import RunSpec

OnStart = Callable[[RunSpec], None]
OnDone = Callable[[RunSpec, dict[str, Any]], None]


def read_outcome(path: Path) -> dict[str, Any]:
    """The index row fields of a run file: its `RunFile.outcome` as `outcome_row` puts it."""
    with open_run(path) as run:
        return outcome_row(run.outcome(kind_metrics))


def run_one(config: dict[str, Any], path: str) -> dict[str, Any]:
    """Run one config into ``path``; the outcome dict, never an exception for a bad run."""
    from bioplaus.config import load_config
    from bioplaus.experiments.base import run_experiment

    t0 = time.perf_counter()
    status, error = "done", None
    try:
        run_experiment(load_config(config), out=path, progress=False)
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted"
    except BioplausError as e:
        status, error = "failed", str(e)
    except Exception as e:  # noqa: BLE001 - a failing run must not stop the sweep
        status, error = "failed", f"{type(e).__name__}: {e}"
    wall = time.perf_counter() - t0
    outcome: dict[str, Any] = {"status": status, "error": error}
    if Path(path).is_file():
        try:
            outcome.update(read_outcome(Path(path)))
        except Exception as e:  # noqa: BLE001 - an unreadable file is a failed run
            outcome.update(status="failed", error=f"{path}: unreadable after the run: {e}")
        if error and not outcome.get("error"):
            outcome["error"] = error
    outcome["wall_s"] = wall
    return outcome


def run_serial(specs: Sequence[RunSpec], out: Path, on_start: OnStart, on_done: OnDone) -> bool:
    """Runs one after another in this process (the RunContext restores state between them).

    Returns True if the sweep was interrupted.
    """
    for spec in specs:
        on_start(spec)
        try:
            outcome = run_one(spec.config, str(out / spec.file))
        except KeyboardInterrupt:  # between the run's own signal handling and its return
            outcome = {"status": "interrupted", "error": "interrupted"}
        on_done(spec, outcome)
        if outcome["status"] == "interrupted":
            return True
    return False


_BUSY = threading.Event()  # set while a pool worker runs a run


def _pool_run_one(config: dict[str, Any], path: str) -> dict[str, Any]:
    _BUSY.set()
    try:
        return run_one(config, path)
    finally:
        _BUSY.clear()


def _worker_init(parent: int) -> None:
    # Between runs a worker ignores Ctrl-C (the parent decides); during a run the RunContext's
    # handler stops the run cleanly. When the sweep process is gone (SIGKILL) no orphan keeps
    # writing a run file: a running run gets SIGINT (closed ``interrupted`` at its next step,
    # as on Ctrl-C), then the worker exits; an idle worker exits at once.
    signalled = False

    def on_gone() -> None:
        nonlocal signalled
        if not _BUSY.is_set():
            os._exit(1)
        if not signalled:
            signalled = True
            os.kill(os.getpid(), signal.SIGINT)

    start_worker(parent, on_gone)


def _interrupt_workers(ex: ProcessPoolExecutor) -> None:
    """SIGINT to the pool's workers, so running runs stop at their next step (kill -INT of the parent only)."""
    for proc in list(getattr(ex, "_processes", {}).values()):  # no public API for the pids
        try:
            os.kill(proc.pid, signal.SIGINT)
        except (OSError, AttributeError):
            pass


def run_pool(specs: Sequence[RunSpec], out: Path, workers: int, on_start: OnStart, on_done: OnDone) -> bool:
    """Runs in a pool of ``workers`` processes, at most ``workers`` submitted at a time.

    Returns True if the sweep was interrupted (Ctrl-C or an interrupted run).
    """
    pending = deque(specs)
    inflight: dict[Future[dict[str, Any]], RunSpec] = {}
    stopping = False
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=spawn_context(forkserver=True), initializer=_worker_init, initargs=(os.getpid(),))
    try:
        while pending or inflight:
            while pending and not stopping and len(inflight) < workers:
                spec = pending.popleft()
                inflight[ex.submit(_pool_run_one, spec.config, str(out / spec.file))] = spec
                on_start(spec)
            if not inflight:
                break
            try:
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                stopping = True
                _interrupt_workers(ex)
                continue
            broken = False
            for fut in done:
                spec = inflight.pop(fut)
                try:
                    outcome = fut.result()
                except BrokenProcessPool as e:
                    broken = True
                    outcome = {"status": "failed", "error": f"worker process died: {e}"}
                except Exception as e:  # noqa: BLE001 - e.g. a result that could not be sent back
                    outcome = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
                on_done(spec, outcome)
                stopping = stopping or outcome["status"] == "interrupted"
            if broken and pending and not stopping:
                ex.shutdown(wait=True, cancel_futures=True)
                ex = ProcessPoolExecutor(max_workers=workers, mp_context=spawn_context(forkserver=True), initializer=_worker_init, initargs=(os.getpid(),))
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    return stopping
