"""The fused C++ kernel of the LIF scan and the spike-synapse products (``lif_kernel.cpp``).

Compiled once per machine by torch's JIT extension builder and cached under torch's
extension directory; ``kernel()`` returns the loaded module, or None to use pure torch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from bioplaus.errors import RunError
from bioplaus.procs import pid_alive

_KERNEL: Any = None
_KERNEL_TRIED = False
# What loading the kernel cost this process (`load_info`): the run driver subtracts
# ``seconds`` from the training time and records it apart (a first compile takes minutes).
_INFO: dict[str, Any] = {"seconds": 0.0, "compiled": False, "dir": None}
# A compile longer than this says how long it has been running (stderr), every PROGRESS_S
# when stderr is not a terminal; on a terminal one line is rewritten each second.
PROGRESS_S = 30.0
# How long a run waits for another process's build of the kernel (its ``lock`` file in the
# build directory) before it uses the pure-torch scan; BIOPLAUS_LIF_KERNEL_WAIT_S overrides.
LOCK_WAIT_S = 300.0
# A ``lock`` with no bioplaus owner file (torch's FileBaton records no pid) older than this
# is taken as left by a killed build; BIOPLAUS_LIF_KERNEL_STALE_S overrides.
LOCK_STALE_S = 900.0
OWNER_FILE = "bioplaus_build_owner"


class KernelBuildBusy(RunError):
    """Another process holds the kernel's build lock for longer than the wait allows."""


def kernel() -> Any:
    """The compiled fused scan (built once per machine, cached), or None to use pure torch.

    ``BIOPLAUS_LIF_KERNEL=torch`` forces the pure-torch scan; ``=cpp`` makes a failed build an
    error instead of a warning.
    """
    global _KERNEL, _KERNEL_TRIED
    if _KERNEL_TRIED:
        return _KERNEL
    _KERNEL_TRIED = True
    mode = os.environ.get("BIOPLAUS_LIF_KERNEL", "auto")
    if mode == "torch":
        return None
    try:
        from torch.utils.cpp_extension import load

        _ninja_on_path()
        src = Path(__file__).resolve().with_name("lif_kernel.cpp")
        flags = ["-O3", "-ffp-contract=off"]
        # Built without OpenMP, the kernel's at::parallel_for runs on one thread whatever
        # torch.set_num_threads says. With it (GCC on Linux; the extension then shares the
        # libgomp.so.1 torch has loaded) the scans and table products use torch's threads.
        # Elsewhere, or if that build fails, the kernel is built without.
        omp_name = _kernel_build_name(src) + "_omp"
        marker = _omp_failed_marker(omp_name)  # an earlier OpenMP build failed here: skip it
        omp = sys.platform.startswith("linux") and not (marker is not None and marker.exists())
        try:
            _before_load(omp_name if omp else _kernel_build_name(src))
            _KERNEL = _announced_load(
                load,
                name=omp_name if omp else _kernel_build_name(src),
                sources=[str(src)],
                extra_cflags=flags + (["-fopenmp"] if omp else []),
                extra_ldflags=["-fopenmp"] if omp else [],
                verbose=False,
            )
        except Exception as omp_error:
            if not omp or isinstance(omp_error, KernelBuildBusy):
                raise
            if marker is not None:
                try:
                    marker.parent.mkdir(parents=True, exist_ok=True)
                    marker.write_text(f"{type(omp_error).__name__}: {omp_error}\n")
                except OSError:
                    pass
            _before_load(_kernel_build_name(src))
            _KERNEL = _announced_load(
                load, name=_kernel_build_name(src), sources=[str(src)], extra_cflags=flags, verbose=False
            )
        _clear_owner()
    except Exception as e:  # no compiler, no ninja, read-only cache ...
        _clear_owner()
        if mode == "cpp":
            if isinstance(e, KernelBuildBusy):
                raise KernelBuildBusy(str(e)) from None
            raise
        warnings.warn(
            f"bioplaus: fused LIF kernel unavailable ({type(e).__name__}: {e}); "
            "using the pure-torch scan (same results, slower)",
            stacklevel=2,
        )
        _KERNEL = None
    return _KERNEL


def load_info() -> dict[str, Any]:
    """What loading the kernel cost this process so far.

    ``seconds``: time spent in torch's loader (build or load of the cached build);
    ``compiled``: whether this process compiled it; ``dir``: its build directory.
    """
    return dict(_INFO)


def build_kernel() -> dict[str, Any]:
    """Compile (or load the cached) kernel now and return `load_info`; `RunError` if it fails.

    ``bioplaus build-kernel`` calls it so that the first spiking run does not compile.
    """
    global _KERNEL_TRIED
    if os.environ.get("BIOPLAUS_LIF_KERNEL", "auto") == "torch":
        raise RunError("BIOPLAUS_LIF_KERNEL=torch asks for the pure-torch scan; unset it to build the kernel")
    _KERNEL_TRIED = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        k = kernel()
    if k is None:
        why = next((str(w.message) for w in caught), "unknown reason")
        raise RunError(why.removeprefix("bioplaus: "))
    return load_info()


def _build_dir(name: str) -> Path | None:
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(name, False))
    except Exception:  # a torch without the helper
        return None


def _announced_load(load: Any, **kw: Any) -> Any:
    """torch's ``load``, announced on stderr with elapsed time when it has to compile.

    A build directory that already holds ``<name>.so`` is a cached build (the name carries
    the source hash, `_kernel_build_name`): loaded silently. Otherwise one line says what is
    compiled, where, and that it happens once; a ticker shows the elapsed seconds while the
    compiler runs; a last line gives the total. The seconds go to `load_info`.
    """
    import threading

    build = _build_dir(kw["name"])
    cached = build is not None and (build / f"{kw['name']}.so").exists()
    t0 = time.perf_counter()
    done = threading.Event()
    ticker = None
    if not cached:
        print(f"bioplaus: compiling the fused LIF kernel (once per user, torch {torch.__version__} and kernel "
              f"source; 1-2 min on 2 cores, longer under load) in {build}", file=sys.stderr, flush=True)
        ticker = threading.Thread(target=_tick, args=(done, t0), daemon=True)
        ticker.start()
    try:
        module = load(**kw)
    finally:
        done.set()
        if ticker is not None:
            ticker.join()
        seconds = time.perf_counter() - t0
        _INFO["seconds"] += seconds
        _INFO["dir"] = str(build) if build is not None else None
    if not cached:
        _INFO["compiled"] = True
        print(f"bioplaus: LIF kernel compiled in {seconds:.0f} s (not counted as training time)",
              file=sys.stderr, flush=True)
    return module


def _tick(done: Any, t0: float) -> None:
    """Elapsed-time indication while the compiler runs (a rewritten line on a terminal)."""
    tty = sys.stderr.isatty()
    period = 1.0 if tty else PROGRESS_S
    spin = "|/-\\"
    k = 0
    while not done.wait(period):
        k += 1
        text = f"bioplaus: compiling the LIF kernel {spin[k % 4] if tty else '...'} {time.perf_counter() - t0:.0f} s"
        print(("\r" + text) if tty else text, end="" if tty else "\n", file=sys.stderr, flush=True)
    if tty and k:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)


_OWNED: list[Path] = []


def _env_seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value >= 0 else default


def _before_load(name: str) -> None:
    """Clear a build lock left by a killed build; wait a bounded time for a live one.

    torch's ``load`` waits with no limit while ``<build dir>/lock`` exists, and its FileBaton
    records no owner, so a build killed half-way (SIGKILL, Ctrl-C in the compiler) would
    block every later run. bioplaus therefore writes ``bioplaus_build_owner`` (pid, host)
    beside the lock before it loads and removes it after. A lock is stale when that owner's
    process is gone (same host), or, with no owner file (a build by torch alone), when the
    lock is older than ``LOCK_STALE_S``; a stale lock is removed. A live one is waited for
    up to ``LOCK_WAIT_S`` (saying so once), then `KernelBuildBusy` is raised (the caller
    falls back to pure torch, or fails with ``BIOPLAUS_LIF_KERNEL=cpp``). The wait is a
    plain sleep loop in Python, so a signal ends it at once.
    """
    try:
        from torch.utils.cpp_extension import _get_build_directory

        build = Path(_get_build_directory(name, False))
    except Exception:  # a torch without the helper: nothing to check
        return
    lock, owner = build / "lock", build / OWNER_FILE
    wait_s = _env_seconds("BIOPLAUS_LIF_KERNEL_WAIT_S", LOCK_WAIT_S)
    deadline = time.monotonic() + wait_s
    said = False
    while lock.exists():
        if _stale(lock, owner):
            for p in (lock, owner):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
                except OSError:
                    break
            continue
        if time.monotonic() >= deadline:
            raise KernelBuildBusy(
                f"the kernel build directory {build} is locked by another build "
                f"({_owner_text(owner)}) for more than {wait_s:g} s "
                "(BIOPLAUS_LIF_KERNEL_WAIT_S); remove its lock file if no build is running"
            )
        if not said:
            print(f"bioplaus: waiting up to {wait_s:g} s for another build of the LIF kernel "
                  f"({_owner_text(owner)}, lock {lock})", file=sys.stderr, flush=True)
            said = True
        time.sleep(0.2)
    try:
        build.mkdir(parents=True, exist_ok=True)
        owner.write_text(f"{os.getpid()}\n{socket.gethostname()}\n")
        _OWNED.append(owner)
    except OSError:  # a read-only cache: torch's own load reports what matters
        pass


def _read_owner(owner: Path) -> tuple[int, str] | None:
    try:
        pid_text, host = (owner.read_text().splitlines() + ["", ""])[:2]
        return int(pid_text), host
    except (OSError, ValueError):
        return None


def _owner_text(owner: Path) -> str:
    found = _read_owner(owner)
    return f"pid {found[0]} on {found[1]}" if found else "owner unknown"


def _stale(lock: Path, owner: Path) -> bool:
    found = _read_owner(owner)
    if found is not None and found[1] == socket.gethostname():
        return not _alive(found[0])
    # no owner file, or one from another host sharing the cache: only the lock's age tells
    try:
        age = time.time() - lock.stat().st_mtime
    except OSError:
        return False
    return age > _env_seconds("BIOPLAUS_LIF_KERNEL_STALE_S", LOCK_STALE_S)


def _alive(pid: int) -> bool:
    # a lock this process left (an earlier attempt in it) is not a live build
    return pid != os.getpid() and pid_alive(pid)


def _clear_owner() -> None:
    while _OWNED:
        owner = _OWNED.pop()
        found = _read_owner(owner)
        if found is not None and found[0] == os.getpid():
            try:
                owner.unlink()
            except OSError:
                pass


def _omp_failed_marker(name: str) -> Path | None:
    """The file that records a failed OpenMP build of ``name`` (so later processes skip it)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(name, False)) / "openmp_build_failed"
    except Exception:  # a torch without the helper: no memory of failures, just retries
        return None


def _kernel_build_name(src: Path) -> str:
    """One build directory per (kernel source file and text, torch install and version).

    The directory lies under torch's extension cache, per user (``TORCH_EXTENSIONS_DIR``,
    default ``~/.cache/torch_extensions/py<XY>_<cpu|cu..>``, which names neither the torch
    version nor the source). torch rewrites the build file with the source and include paths
    on each first load, so two installs sharing one name (a checkout and a wheel venv, two
    worktrees) would recompile every time the user switches between them; the torch version
    and the source's hash in the key keep a torch upgrade or an edited kernel from loading (or
    overwriting) a build made for another.
    """
    try:
        text = src.read_bytes()
    except OSError:  # load() reports the missing source
        text = b""
    key = f"{src}\n{Path(torch.__file__).resolve()}\n{torch.__version__}\n{hashlib.sha1(text).hexdigest()}"
    tag = hashlib.sha1(key.encode()).hexdigest()[:10]
    return f"bioplaus_lif_kernel_{tag}"


def _ninja_on_path() -> None:
    """Put the ``ninja`` wheel's binary on PATH if no ninja is there, for torch's JIT build.

    The wheel installs it into the environment's ``bin/``, which is not on PATH when bioplaus
    runs without activating its venv (pipx, cron, a full path to the script); the build (and
    with it the fast kernel) would then be skipped.
    """
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def kernel_flag(k: Any, name: str) -> bool:
    """A capability query of the compiled kernel (False if it is missing or fails)."""
    try:
        return bool(getattr(k, name)()) if hasattr(k, name) else False
    except Exception:  # pragma: no cover - oneDNN without ukernels
        return False
