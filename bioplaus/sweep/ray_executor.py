"""The Ray executor: every run of a sweep is a Ray task on a cluster (``--ray ADDRESS``).

A task runs one config into a run file in the worker's temporary directory, reads the
outcome from it and returns ``(outcome, file bytes)``; the driver writes the bytes to
``DIR/<file>`` atomically (a hidden temporary file, then ``os.replace``), so the run file
comes back whether or not the workers share a file system with the driver. Resume, index
and failure semantics are those of the local executors (`run_serial`, `run_pool`): the
driver calls ``on_start`` / ``on_done`` as runs are submitted and finish.

``ray`` is an optional dependency (``pip install "bioplaus[ray]"``), imported only here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bioplaus.errors import ConfigError
from bioplaus.sweep.executors import OnDone, OnStart, run_one
from bioplaus.sweep.spec import RunSpec

LOCAL = "local"
CANCEL_WAIT_S = 30.0  # how long Ctrl-C waits for cancelled tasks to close their run files
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")


def import_ray() -> Any:
    """``import ray``, or a one-line `ConfigError` saying how to install it.

    Sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` first (unless set): Ray reads it at import
    and then resolves this machine as 127.0.0.1, so a driver joining ``127.0.0.1:PORT`` or
    starting ``local`` stays on loopback instead of the first network interface.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    imported = "ray" in sys.modules
    changed = _token_auth_like_ray_start()
    try:
        import ray
    except ImportError:
        raise ConfigError('--ray: ray is not installed; pip install "bioplaus[ray]" (or ray>=2.9)') from None
    if imported:  # Ray read both settings at import, before this call: apply them now
        with contextlib.suppress(Exception):
            from ray._private import ray_constants

            if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
                ray_constants.ENABLE_RAY_CLUSTER = False
        if changed:
            with contextlib.suppress(Exception):
                from ray._raylet import Config

                Config.initialize("")
    return ray


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """Refuse an address that is malformed or where nothing answers, in one line, before Ray tries.

    ``local`` and ``auto`` (Ray's own lookup of a cluster started on this machine) and
    ``ray://`` client addresses are passed to Ray as they are; ``HOST:PORT`` must accept a
    TCP connection (the GCS port of a head started with ``ray start --head --port=PORT``).
    """
    if address in (LOCAL, "auto") or address.startswith("ray://"):
        return
    m = _HOST_PORT.match(address)
    if not m:
        raise ConfigError(f"--ray {address!r}: expected HOST:PORT of a Ray head (e.g. 127.0.0.1:6379), "
                          "'local' or 'auto'")
    host, port = m["host"].strip("[]"), int(m["port"])
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(f"--ray {address}: no Ray cluster reachable there ({reason}); "
                          f"start one with: ray start --head --port={port}") from None


@contextlib.contextmanager
def connected(address: str) -> Iterator[Any]:
    """Ray initialised for ``address``; shut down afterwards if this call started or joined it.

    ``local`` starts an in-process Ray instance on loopback (no dashboard) for the sweep.
    If this process already called ``ray.init`` the existing connection is used and kept
    (a ``HOST:PORT`` address must still answer).
    """
    ray = import_ray()
    check_address(address)
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING,
                              "configure_logging": True}
    if address == LOCAL:
        kwargs.update(include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        ray.init(address=address, **kwargs)
    except Exception as e:  # noqa: BLE001 - Ray raises many kinds; the user needs one line
        with contextlib.suppress(Exception):
            ray.shutdown()
        raise ConfigError(f"--ray {address}: could not connect to Ray ({type(e).__name__}: {e})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _token_auth_like_ray_start() -> bool:
    """Use token authentication when joining a cluster if a token is available, as ``ray start`` does.

    ``ray start --head`` turns token authentication on when ``~/.ray/auth_token`` (or
    ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``) exists and ``RAY_AUTH_MODE`` is unset, but
    ``ray.init(address=...)`` does not, so a driver on the same machine would be refused.
    An explicit ``RAY_AUTH_MODE`` is left alone. Returns True if it set ``RAY_AUTH_MODE``.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return False
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
            (Path.home() / ".ray" / "auth_token").is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        return True
    return False


def _task(config: dict[str, Any], file: str) -> tuple[dict[str, Any], bytes | None]:
    """In a Ray worker: one run into a private temporary directory; its outcome and file bytes.

    With ``train.report`` the figures (``<stem>_figures/*``) come back too, in
    ``outcome["_figures"]`` as ``{name: bytes}``.
    """
    with tempfile.TemporaryDirectory(prefix="bioplaus-sweep-") as tmp:
        path = Path(tmp) / file
        outcome = run_one(config, str(path))
        data = path.read_bytes() if path.is_file() else None
        figs = Path(tmp) / (path.stem + "_figures")
        if figs.is_dir():
            outcome["_figures"] = {f.name: f.read_bytes() for f in sorted(figs.iterdir()) if f.is_file()}
    return outcome, data


def write_back(out: Path, file: str, data: bytes) -> Path:
    """``data`` -> ``out/file`` atomically (a hidden temporary file in ``out``, then ``os.replace``)."""
    dest = out / file
    tmp = out / f".{file}.part"
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    return dest


def _cluster_cpus(ray: Any) -> float:
    try:
        return max(1.0, float(ray.cluster_resources().get("CPU", 1.0)))
    except Exception:  # noqa: BLE001
        return 1.0


def _capacity(cpus: float, cpus_per_run: Sequence[float]) -> int:
    """How many runs the cluster can run at once (its CPUs over the largest run's CPUs)."""
    return max(1, int(cpus // max(cpus_per_run, default=1.0)))


def run_ray(specs: Sequence[RunSpec], out: Path, address: str, on_start: OnStart, on_done: OnDone,
            max_inflight: int | None = None) -> bool:
    """Every run a Ray task on the cluster at ``address``; files written back into ``out``.

    At most ``max_inflight`` tasks are submitted at a time (default: what the cluster's CPUs
    hold, each task asking for ``train.threads`` CPUs), so "running" in the progress line
    means running. Tasks are not retried: a worker that dies fails its run, with the reason
    in the index. Ctrl-C cancels the submitted tasks (Ray raises KeyboardInterrupt in them:
    a running run closes its file ``interrupted``, which comes back like any other; a task
    cancelled before it began returns nothing); their runs are recorded ``interrupted`` and
    run again next time. Returns True if the sweep was interrupted.
    """
    with connected(address) as ray:
        from ray.exceptions import TaskCancelledError

        total = _cluster_cpus(ray)
        # a run asking for more CPUs than the cluster has would wait forever: ask for all of them
        threads = [min(total, float(max(1, int(s.config.get("train", {}).get("threads") or 1)))) for s in specs]
        limit = max_inflight or _capacity(total, threads)
        remote = ray.remote(_task)
        pending = list(zip(specs, threads, strict=True))
        pending.reverse()
        inflight: dict[Any, RunSpec] = {}
        stopping = False

        def finish(ref: Any) -> str:
            spec = inflight.pop(ref)
            try:
                outcome, data = ray.get(ref)
            except TaskCancelledError:
                outcome, data = {"status": "interrupted", "error": "interrupted (task cancelled)"}, None
            except Exception as e:  # noqa: BLE001 - worker died, object lost, ...: this run fails
                outcome, data = {"status": "failed", "error": f"ray task failed: {type(e).__name__}: {e}"}, None
            figures = outcome.pop("_figures", None) if isinstance(outcome, dict) else None
            if data is not None:
                try:
                    write_back(out, spec.file, data)
                    if figures:
                        fig_dir = out / (spec.stem + "_figures")
                        fig_dir.mkdir(exist_ok=True)
                        for name, blob in figures.items():
                            write_back(fig_dir, name, blob)
                except OSError as e:
                    outcome = {**outcome, "status": "failed",
                               "error": f"{out / spec.file}: could not write the returned run file: {e}"}
            on_done(spec, outcome)
            return outcome["status"]

        try:
            while pending or inflight:
                while pending and not stopping and len(inflight) < limit:
                    spec, cpus = pending.pop()
                    ref = remote.options(num_cpus=cpus, max_retries=0, name=f"bioplaus-sweep:{spec.stem}") \
                                .remote(spec.config, spec.file)
                    inflight[ref] = spec
                    on_start(spec)
                if not inflight:
                    break
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    stopping = finish(ref) == "interrupted" or stopping
        except KeyboardInterrupt:
            stopping = True
            for ref in list(inflight):
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=False)
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: stop waiting
                ready = ray.wait(list(inflight), num_returns=len(inflight), timeout=CANCEL_WAIT_S)[0] \
                    if inflight else []
                for ref in ready:
                    finish(ref)
            for ref in list(inflight):  # never came back: recorded interrupted, run again next time
                spec = inflight.pop(ref)
                on_done(spec, {"status": "interrupted", "error": "interrupted (task cancelled)"})
        return stopping


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def loopback_head(num_cpus: int = 2, temp_dir: str | Path | None = None, env: dict[str, str] | None = None,
                  timeout_s: float = 120.0) -> Iterator[str]:
    """A one-node Ray cluster on 127.0.0.1 for tests and demos; yields its ``HOST:PORT``.

    Runs ``ray start --head --block --node-ip-address=127.0.0.1`` (no dashboard, free ports
    for the GCS, the raylet and the agents) in its own process group with
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` and ``env`` added, waits until the GCS port
    answers, and on exit stops exactly that group (SIGTERM, then SIGKILL after 3 s) —
    unlike ``ray stop``, which stops every Ray on the machine. Workers import bioplaus
    from the head's environment: pass ``env={"PYTHONPATH": ...}`` to use a source tree.
    """
    import shutil
    import signal
    import subprocess
    import time

    ray_cli = shutil.which("ray")
    if ray_cli is None:
        import_ray()
        raise ConfigError("ray start: the ray command is not on PATH")
    port = _free_port()
    cmd = [ray_cli, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
           f"--num-cpus={num_cpus}", "--include-dashboard=false", "--disable-usage-stats",
           f"--dashboard-agent-listen-port={_free_port()}",
           f"--dashboard-agent-grpc-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
           f"--metrics-export-port={_free_port()}", f"--node-manager-port={_free_port()}",
           f"--object-manager-port={_free_port()}"]
    if temp_dir is not None:
        cmd.append(f"--temp-dir={temp_dir}")
    full_env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **(env or {})}
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr else []
                raise ConfigError(f"ray start failed (exit {proc.returncode}): {err[-1] if err else ''}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise ConfigError(f"ray start: no GCS on 127.0.0.1:{port} after {timeout_s:.0f} s") from None
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
