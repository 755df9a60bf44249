"""The fused C++ kernel of the LIF scan and the spike-synapse products (``lif_kernel.cpp``).

Compiled once per machine by torch's JIT extension builder and cached under torch's
extension directory; ``kernel()`` returns the loaded module, or None to use pure torch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

_KERNEL: Any = None
_KERNEL_TRIED = False


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
            _KERNEL = load(
                name=omp_name if omp else _kernel_build_name(src),
                sources=[str(src)],
                extra_cflags=flags + (["-fopenmp"] if omp else []),
                extra_ldflags=["-fopenmp"] if omp else [],
                verbose=False,
            )
        except Exception as omp_error:
            if not omp:
                raise
            if marker is not None:
                try:
                    marker.parent.mkdir(parents=True, exist_ok=True)
                    marker.write_text(f"{type(omp_error).__name__}: {omp_error}\n")
                except OSError:
                    pass
            _KERNEL = load(name=_kernel_build_name(src), sources=[str(src)], extra_cflags=flags, verbose=False)
    except Exception as e:  # no compiler, no ninja, read-only cache ...
        if mode == "cpp":
            raise
        warnings.warn(
            f"bioplaus: fused LIF kernel unavailable ({type(e).__name__}: {e}); "
            "using the pure-torch scan (same results, slower)",
            stacklevel=2,
        )
        _KERNEL = None
    return _KERNEL


def _omp_failed_marker(name: str) -> Path | None:
    """The file that records a failed OpenMP build of ``name`` (so later processes skip it)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(name, False)) / "openmp_build_failed"
    except Exception:  # a torch without the helper: no memory of failures, just retries
        return None


def _kernel_build_name(src: Path) -> str:
    """One build directory per (kernel source, torch) install, under torch's extension cache.

    torch rewrites the build file with the source and include paths on each first load, so
    two installs sharing one name (a checkout and a wheel venv, two worktrees) would recompile
    (~30 s) every time the user switches between them.
    """
    tag = hashlib.sha1(f"{src}\n{Path(torch.__file__).resolve()}".encode()).hexdigest()[:10]
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
