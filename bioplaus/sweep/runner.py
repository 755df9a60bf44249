"""`sweep`: expand, validate, resume, execute and index a sweep (see docs/sweeps.md)."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioplaus.config import ExperimentConfig
from bioplaus.errors import ConfigError, OutputError, os_reason
from bioplaus.procs import cpu_count, pid_alive, raising_signals
from bioplaus.record.reader import open_run
from bioplaus.sweep.executors import read_outcome, run_pool, run_serial
from bioplaus.sweep.index import read_index_csv, write_index
from bioplaus.sweep.spec import RunSpec, build_runs

PREVIOUS = "previous"  # where failed / interrupted files of earlier attempts are moved


@dataclass
class SweepResult:
    """What a sweep did: one row per run (as in the index), and where the index is."""

    out: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def index(self) -> Path:
        return self.out / "index.csv"

    def counts(self) -> dict[str, int]:
        c: dict[str, int] = {}
        for row in self.rows:
            c[row["status"]] = c.get(row["status"], 0) + 1
        return c

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "failed"]

    @property
    def ok(self) -> bool:
        return all(r["status"] == "done" for r in self.rows)

    def summary(self) -> str:
        c = self.counts()
        parts = ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
        state = "interrupted" if self.interrupted else "finished"
        return f"sweep {state}: {len(self.rows)} runs ({parts}) -> {self.index}"


class _Progress:
    """One line for the sweep: tqdm on a terminal, a plain line per finished run otherwise."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="sweep", unit="run", file=sys.stderr, dynamic_ncols=True)

    def update(self, counts: dict[str, int], finished: dict[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        text = f"done {counts.get('done', 0)}, running {counts.get('running', 0)}, failed {counts.get('failed', 0)}"
        if self.bar is not None:
            if finished is not None:
                self.bar.update(1)
            self.bar.set_postfix_str(text)
        elif finished is not None:
            n = sum(v for k, v in counts.items() if k not in ("pending", "running"))
            tail = f" <- {finished['file']}: {finished['status']}"
            if finished.get("error"):
                tail += f" ({finished['error']})"
            print(f"sweep: {n}/{self.total} | {text}{tail}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _prepare_out(out: Path) -> None:
    """Create the sweep directory, or `OutputError` in one line naming the path: a parent that
    is a file, a place the OS refuses (/proc, a read-only /sys), a directory the process cannot
    write, and a lock or index file that is not a regular file. Nothing existing is touched."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--out {out}: cannot create the sweep directory: {os_reason(exc)}") from None
    if not out.is_dir():
        raise OutputError(f"--out {out}: exists and is not a directory")
    try:
        read_only = bool(os.statvfs(out).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only or not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out}: cannot write in the sweep directory: "
                          f"{os.strerror(errno.EROFS if read_only else errno.EACCES)}")
    for name in (".sweep.lock", "index.csv", "index.h5"):
        p = out / name
        if os.path.lexists(p) and not p.is_file():
            raise OutputError(f"{p}: is not a regular file; move it away to sweep into {out}")


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    """One sweep per directory at a time (``DIR/.sweep.lock`` holds the pid)."""
    path = out / ".sweep.lock"
    if path.exists():
        try:
            pid = int(path.read_text().strip() or "0")
        except (OSError, ValueError):
            pid = 0
        if pid and pid != os.getpid() and pid_alive(pid):
            raise ConfigError(f"{out}: another sweep (pid {pid}) is running in this directory "
                              f"(remove {path} if it is not)")
    try:
        path.write_text(str(os.getpid()))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the sweep lock: {os_reason(exc)}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def _file_status(path: Path) -> str | None:
    """The run file's status; None if absent, ``unreadable`` if it is not a readable run file."""
    if not path.exists():
        return None
    if not path.is_file():
        # a FIFO would block the open, a directory or device is nothing a sweep wrote
        raise ConfigError(f"{path}: not a regular file; a sweep does not open or replace it (remove it)")
    try:
        with open_run(path) as run:
            return run.status
    except Exception:  # noqa: BLE001 - anything but a done file is run again
        return "unreadable"


def _move_aside(path: Path, out: Path) -> Path:
    """``DIR/<stem>.h5`` -> ``DIR/previous/<stem>.attempt<k>.h5`` (k: the next free number)."""
    prev = out / PREVIOUS
    prev.mkdir(exist_ok=True)
    k = 1
    while (dest := prev / f"{path.stem}.attempt{k}{path.suffix}").exists():
        k += 1
    os.replace(path, dest)
    return dest


def _wall_from(old: Mapping[str, str] | None, outcome: Mapping[str, Any]) -> float | None:
    if old:
        with contextlib.suppress(ValueError, TypeError):
            return float(old.get("wall_s", ""))
    return outcome.get("run_s")


def sweep(
    config: str | Path | Mapping[str, Any] | ExperimentConfig,
    grid: Mapping[str, Sequence[Any]] | None = None,
    zip: Mapping[str, Sequence[Any]] | None = None,  # noqa: A002 - mirrors --zip
    seeds: int | None = None,
    out: str | Path = "sweeps/sweep",
    workers: int | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    *,
    progress: bool = True,
    report: bool = False,
    ray: str | None = None,
) -> SweepResult:
    """Run ``config`` over ``grid`` x ``zip`` x ``seeds``; one run file each in ``out``.

    ``grid`` / ``zip``: ``{"rule.lr": [0.01, 0.1]}`` (dotted keys as ``--set``); zipped
    axes move together. ``seeds``: runs with seed 0..N-1 (default 1) unless ``seed`` is an
    axis. ``workers``: 1 = in this process, K > 1 = a process pool (default: the cores).
    Every run's config is validated before anything runs (`ConfigError` on a bad value).
    Runs whose files say ``done`` are skipped; failed / interrupted ones are moved to
    ``out/previous/`` and run again. ``out/index.csv`` and ``out/index.h5`` are rewritten
    as runs finish. With ``workers > 1`` a script must call this under
    ``if __name__ == "__main__":`` (worker processes re-import the main module).

    ``ray``: run every run as a Ray task instead — ``"local"`` starts a Ray instance in this
    process for the sweep (shut down at the end), ``"HOST:PORT"`` joins the cluster whose head
    listens there (``ray start --head --port=PORT``); run files come back into ``out`` either
    way. With Ray, runs default to ``train.threads = 1`` (one CPU per task) and ``workers``,
    if given, caps how many tasks run at once (default: what the cluster's CPUs hold).
    """
    if ray is not None:
        ray = str(ray).strip()
        if not ray:
            raise ConfigError("--ray: expected an address (HOST:PORT), 'local' or 'auto'")
        from bioplaus.sweep.ray_executor import check_address, import_ray

        import_ray()
        check_address(ray)  # one line, exit 2, before anything is written
    if workers is not None and int(workers) < 1:
        raise ConfigError(f"--workers: expected a positive integer, got {workers}")
    if ray is not None:
        # one CPU per task unless the config says otherwise (build_runs: cores // workers)
        specs = build_runs(config, grid, zip, seeds, overrides, workers=cpu_count(), report=report)
        workers = int(workers) if workers is not None else 0
    else:
        workers = cpu_count() if workers is None else int(workers)
        specs = build_runs(config, grid, zip, seeds, overrides, workers=workers, report=report)
    params = [k for k in [*(grid or {}), *(zip or {})] if k != "seed"]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    _prepare_out(out)
    with _lock(out):
        old = read_index_csv(out / "index.csv")
        rows: dict[str, dict[str, Any]] = {}
        todo: list[RunSpec] = []
        for spec in specs:
            path = out / spec.file
            row: dict[str, Any] = {"file": spec.file, "status": "pending", **spec.params, "seed": spec.seed}
            st = _file_status(path)
            if st == "done":
                try:
                    outcome = read_outcome(path)
                except Exception:  # noqa: BLE001 - a done file we cannot read is run again
                    st = "unreadable"
                else:
                    row.update(outcome, wall_s=_wall_from(old.get(spec.file), outcome))
            if st != "done":
                if st is not None:
                    _move_aside(path, out)
                todo.append(spec)
            row.pop("run_s", None)
            rows[spec.file] = row
        result = SweepResult(out, list(rows.values()))

        def counts() -> dict[str, int]:
            return result.counts()

        write_index(out, result.rows, params)
        bar = _Progress(len(specs), len(specs) - len(todo), progress)
        bar.update(counts())

        def on_start(spec: RunSpec) -> None:
            rows[spec.file]["status"] = "running"
            write_index(out, result.rows, params)
            bar.update(counts())

        def on_done(spec: RunSpec, outcome: dict[str, Any]) -> None:
            row = rows[spec.file]
            row.update({k: v for k, v in outcome.items() if k != "run_s"})
            write_index(out, result.rows, params)
            bar.update(counts(), row)

        try:
            # SIGINT / SIGTERM raise KeyboardInterrupt in the sweep (each run's RunContext
            # handles them itself while it runs)
            with raising_signals():
                if not todo:
                    interrupted = False
                elif ray is not None:
                    from bioplaus.sweep.ray_executor import run_ray

                    interrupted = run_ray(todo, out, ray, on_start, on_done, max_inflight=workers or None)
                elif workers == 1:
                    interrupted = run_serial(todo, out, on_start, on_done)
                else:
                    interrupted = run_pool(todo, out, min(workers, len(todo)), on_start, on_done)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        for row in result.rows:  # a run that never reported back (second Ctrl-C)
            if row["status"] == "running":
                row["status"] = "interrupted"
        result.interrupted = interrupted
        write_index(out, result.rows, params)
    return result
