"""Processes and signals: one owner for the start method, SIGINT / SIGTERM and worker watchdogs.

Used by the CLI and the sweep runner (signals raise `KeyboardInterrupt`), `RunContext`
(a signal asks the run to stop at its next step, a second one stops it at once), the sweep's
process pool and NoProp's block pool (workers ignore SIGINT, leave when their parent dies).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def spawn_context(forkserver: bool = False) -> Any:
    """A multiprocessing context that starts fresh interpreters (``spawn``, or ``forkserver``
    where it exists and is asked for): torch and fork do not mix (threads, OpenMP state)."""
    if forkserver and "forkserver" in mp.get_all_start_methods():
        return mp.get_context("forkserver")
    return mp.get_context("spawn")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install(handler: Callable[[int, Any], None]) -> Callable[[], None]:
    """``handler`` for SIGINT and SIGTERM; returns what restores the previous handlers."""
    if not _in_main_thread():  # signal handlers can only be set from the main thread
        return lambda: None
    old = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}

    def restore() -> None:
        for sig, h in old.items():
            signal.signal(sig, h)

    return restore


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def catch_signals() -> Callable[[], None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (also when started in the background, where
    SIGINT arrives ignored, and where Python would die of SIGTERM). Returns the restore."""
    return _install(_raise_interrupt)


@contextlib.contextmanager
def raising_signals() -> Iterator[None]:
    """`catch_signals` for the duration of a ``with`` block."""
    restore = catch_signals()
    try:
        yield
    finally:
        restore()


class DeferredStop:
    """SIGINT / SIGTERM set ``requested``; a second signal before `check` raises at once.

    Raising inside the handler could land in the middle of an HDF5 write; deferring the stop
    to `check` (between steps) keeps a run file consistent.
    """

    def __init__(self) -> None:
        self.requested = False
        self._restore: Callable[[], None] = lambda: None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:  # asked twice: stop now
            raise KeyboardInterrupt(f"signal {signum}")
        self.requested = True

    def install(self) -> None:
        self.requested = False
        self._restore = _install(self._handler)

    def restore(self) -> None:
        self._restore()
        self._restore = lambda: None
        self.requested = False

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal arrived since the last check."""
        if self.requested:
            self.requested = False
            raise KeyboardInterrupt("stop requested by a signal")


def ignore_interrupts() -> None:
    """In a worker: Ctrl-C reaches every process of the terminal's group; the parent decides."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def parent_alive(parent: int) -> bool:
    """Whether process ``parent`` exists (a pid reused by another user's process counts as gone)."""
    try:
        os.kill(parent, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user counts: it may hold
    a lock); pids <= 0 never do."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cpu_count() -> int:
    """The cores this process may run on (its CPU affinity; all cores where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def exit_now() -> None:
    os._exit(1)


def watch_parent(parent: int, on_gone: Callable[[], None] = exit_now, every_s: float = 1.0,
                 name: str = "parent-watchdog") -> threading.Thread:
    """A daemon thread calling ``on_gone`` every ``every_s`` once ``parent`` is gone (SIGKILL):
    no orphan worker keeps running or writing. The default leaves at once."""

    def loop() -> None:
        while True:
            time.sleep(every_s)
            if not parent_alive(parent):
                on_gone()

    th = threading.Thread(target=loop, daemon=True, name=name)
    th.start()
    return th


def start_worker(parent: int, on_gone: Callable[[], None] = exit_now) -> None:
    """What every worker process does first: ignore SIGINT, leave when ``parent`` dies."""
    ignore_interrupts()
    watch_parent(parent, on_gone)
