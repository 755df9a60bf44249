"""Leaky integrate-and-fire neurons over T explicit time steps, with surrogate gradients.

The neuron is a pure scan over a time-major input current ``I`` of shape ``[T, B, ...]``
(snntorch ``Leaky`` semantics with ``reset_delay=True``, so spikes agree exactly)::

    r_t = H(v_{t-1} - θ)                      reset signal, detached from the graph
    v_t = β v_{t-1} + I_t - θ r_t             reset = "subtract"
    v_t = β (1 - r_t) v_{t-1} + I_t           reset = "zero"
    s_t = H(v_t - θ)                          ∂s_t/∂v_t := σ'(v_t - θ)   (surrogate)
    β   = exp(-dt / τ)

Why a hand-written autograd function: a feed-forward layer's current for all T steps is
known before its recurrence runs, so the synapse is one ``[(T*B), in]`` matmul and only this
cheap element-wise scan is sequential. Its backward pass is the adjoint scan

    g_t = ∂L/∂s_t σ'(v_t - θ) + ∂L/∂v_t + β c_t g_{t+1},   ∂L/∂I_t = g_t,

with ``c_t = 1`` (subtract) or ``c_t = 1 - s_t`` (zero), done in place over T steps instead
of replaying a per-step autograd graph.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bioplaus.errors import ConfigError

# ----------------------------------------------------------------------------- surrogates
# Each surrogate derivative σ'(u) is computed in place on a buffer holding u = v - θ: the
# backward scan works one time step at a time on a cache-sized slice instead of streaming
# several temporaries of the whole [T, B, N] membrane through memory.


def _atan_(u: Tensor, alpha: float) -> Tensor:
    """σ'(u) = (α/2) / (1 + (π α u / 2)²)   (snntorch ``surrogate.atan``, default α = 2)."""
    return u.mul_(math.pi / 2 * alpha).square_().add_(1.0).reciprocal_().mul_(alpha / 2)


def _fast_sigmoid_(u: Tensor, slope: float) -> Tensor:
    """σ'(u) = 1 / (1 + k|u|)²   (SuperSpike; snntorch ``surrogate.fast_sigmoid``, k = 25)."""
    return u.abs_().mul_(slope).add_(1.0).square_().reciprocal_()


def _sigmoid_(u: Tensor, slope: float) -> Tensor:
    """σ'(u) = k sig(ku)(1 - sig(ku))."""
    s = u.mul_(slope).sigmoid_()
    return s.sub_(s.square()).mul_(slope)


def _triangle_(u: Tensor, slope: float) -> Tensor:
    """σ'(u) = k max(0, 1 - k|u|)   (piecewise linear, support |u| < 1/k)."""
    return u.abs_().mul_(-slope).add_(1.0).clamp_min_(0.0).mul_(slope)


SURROGATES: dict[str, tuple[Callable[[Tensor, float], Tensor], float]] = {
    "atan": (_atan_, 2.0),
    "fast_sigmoid": (_fast_sigmoid_, 25.0),
    "sigmoid": (_sigmoid_, 5.0),
    "triangle": (_triangle_, 1.0),
}


def surrogate_fn(name: str, slope: float | None = None) -> Callable[[Tensor], Tensor]:
    """σ' of the named surrogate (default slope unless given), applied IN PLACE to u = v - θ."""
    if name not in SURROGATES:
        raise ConfigError(
            f"network.spiking.surrogate: unknown surrogate {name!r}; "
            f"valid: {', '.join(sorted(SURROGATES))}"
        )
    fn, default = SURROGATES[name]
    k = default if slope is None else float(slope)
    return lambda u: fn(u, k)


# ----------------------------------------------------------------------------- the scan


@dataclass(frozen=True)
class LIFParams:
    """Parameters of a LIF population. β = exp(-dt/τ)."""

    dt: float = 1e-3
    tau: float = 5e-3
    threshold: float = 1.0
    reset: str = "subtract"  # "subtract" | "zero"
    surrogate: str = "atan"
    slope: float | None = None

    @property
    def beta(self) -> float:
        return math.exp(-self.dt / self.tau)

    def check(self, where: str = "network.spiking") -> None:
        if self.dt <= 0 or self.tau <= 0:
            raise ConfigError(f"{where}: dt and tau must be > 0 (got dt={self.dt}, tau={self.tau})")
        if self.reset not in ("subtract", "zero"):
            raise ConfigError(f"{where}.reset: must be 'subtract' or 'zero', got {self.reset!r}")
        if self.threshold <= 0:
            raise ConfigError(f"{where}.threshold: must be > 0, got {self.threshold}")
        surrogate_fn(self.surrogate, self.slope)


_SURROGATE_CODE = {"atan": 0, "fast_sigmoid": 1, "sigmoid": 2, "triangle": 3}
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


def _use_kernel(x: Tensor) -> Any:
    return kernel() if (x.dtype == torch.float32 and x.device.type == "cpu") else None


class _LIFScan(torch.autograd.Function):
    """Forward: LIF scan over T; backward: the adjoint scan (see module docstring)."""

    @staticmethod
    def forward(ctx, current: Tensor, beta: float, thr: float, zero: bool, sgname: str, slope: float):  # noqa: ANN001, ANN205
        k = _use_kernel(current) if math.isfinite(thr) else None
        if k is not None:
            if current.dim() > 1 and current.shape[0] > 1 and current.stride(0) == 0:
                # a constant input's current broadcast over T: read one step, never copy it T times
                spk, mem = k.forward(current[0], beta, thr, zero, current.shape[0])
            else:
                spk, mem = k.forward(current, beta, thr, zero, 0)
        else:
            spk, mem = _torch_scan(current, beta, thr, zero)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(mem, spk)
        ctx.beta, ctx.thr, ctx.zero, ctx.sgname, ctx.slope = beta, thr, zero, sgname, slope
        return spk, mem

    @staticmethod
    def backward(ctx, grad_spk: Tensor | None, grad_mem: Tensor | None):  # noqa: ANN205
        mem, spk = ctx.saved_tensors
        k = _use_kernel(mem) if math.isfinite(ctx.thr) else None
        if k is not None:
            empty = torch.empty(0)
            g = k.backward(
                grad_spk if grad_spk is not None else empty,
                grad_mem if grad_mem is not None else empty,
                mem, spk, ctx.beta, ctx.thr, ctx.zero, _SURROGATE_CODE[ctx.sgname], ctx.slope,
            )
        else:
            sg = surrogate_fn(ctx.sgname, ctx.slope)
            g = _torch_scan_backward(grad_spk, grad_mem, mem, spk, ctx.beta, ctx.thr, ctx.zero, sg)
        return g, None, None, None, None, None


def _torch_scan(current: Tensor, beta: float, thr: float, zero: bool) -> tuple[Tensor, Tensor]:
    """Reference scan in torch ops (used when the compiled kernel is unavailable)."""
    current = current.contiguous()
    mem = torch.empty_like(current)
    spk = torch.empty_like(current)
    if not math.isfinite(thr):  # a leaky integrator: never fires, never resets
        spk.zero_()
        mem[0].copy_(current[0])
        for t in range(1, current.shape[0]):
            torch.mul(mem[t - 1], beta, out=mem[t])
            mem[t].add_(current[t])
        return spk, mem
    for t in range(current.shape[0]):
        if t == 0:
            mem[0].copy_(current[0])
        elif zero:
            torch.mul(mem[t - 1], 1.0 - spk[t - 1], out=mem[t])
            mem[t].mul_(beta).add_(current[t])
        else:
            torch.mul(mem[t - 1], beta, out=mem[t])
            mem[t].add_(current[t]).sub_(spk[t - 1] * thr)
        torch.gt(mem[t], thr, out=spk[t])
    return spk, mem


def _torch_scan_backward(
    grad_spk: Tensor | None, grad_mem: Tensor | None, mem: Tensor, spk: Tensor,
    beta: float, thr: float, zero: bool, sg: Callable[[Tensor], Tensor],
) -> Tensor:
    g = torch.empty_like(mem)
    buf = torch.empty_like(mem[0])
    n_t = mem.shape[0]
    for t in range(n_t - 1, -1, -1):
        if grad_spk is not None:
            sg(torch.sub(mem[t], thr, out=buf))
            torch.mul(buf, grad_spk[t], out=g[t])
            if grad_mem is not None:
                g[t].add_(grad_mem[t])
        elif grad_mem is not None:
            g[t].copy_(grad_mem[t])
        else:  # pragma: no cover - autograd never calls with both None
            g[t].zero_()
        if t + 1 < n_t:
            if zero:  # dv_{t+1}/dv_t = β (1 - s_t): no carry through a reset
                torch.mul(g[t + 1], spk[t], out=buf)
                g[t].add_(g[t + 1], alpha=beta).sub_(buf, alpha=beta)
            else:
                g[t].add_(g[t + 1], alpha=beta)
    return g


# ----------------------------------------------------------------------------- synapses
# A synapse fed by spikes (0 or 1) has two exact fast paths for its current s Wᵀ and its
# weight gradient dW = gᵀ s (dX = g W stays a float32 GEMM: g and W are both full float32):
# - ``bf16x3`` (CPUs with AMX matrix units): the float32 weight (or g) is split exactly into
#   three bf16 pieces, every product is exact and the sums are float32;
# - ``lut`` (CPUs with AVX-512 and no AMX): the spikes are packed four to a nibble and each
#   row of the result is a sum of table entries, one per four inputs, each table entry the
#   float32 sum of the weights its bit pattern selects (K/4 vector adds instead of K
#   multiply-adds).
# Either way the result differs from a float32 GEMM only in the order of the float32
# additions (see lif_kernel.cpp); anything but 0/1 input takes the float32 GEMM.
SPIKE_GEMM_MODES = ("auto", "fp32", "bf16x3", "lut")
_SPIKE_GEMM: str | None = None  # the resolved mode: "fp32", "bf16x3" or "lut"
_SPIKE_GEMM_MIN_MACS = 1 << 22  # below this the split, packing and calls cost more than they save


def check_spike_gemm_env() -> None:
    """A one-line config error for a bad ``BIOPLAUS_SPIKE_GEMM``, without building the kernel."""
    mode = os.environ.get("BIOPLAUS_SPIKE_GEMM", "auto")
    if mode not in SPIKE_GEMM_MODES:
        raise ConfigError(f"BIOPLAUS_SPIKE_GEMM: must be one of {', '.join(SPIKE_GEMM_MODES)}, got {mode!r}")


def spike_gemm_mode() -> str:
    """How spike-fed synapses multiply: ``"bf16x3"``, ``"lut"`` or ``"fp32"``.

    ``BIOPLAUS_SPIKE_GEMM=auto`` (default) picks the fastest exact path of this CPU: the
    bf16 split where AMX tiles exist, the table lookup where AVX-512 does, else float32
    GEMMs. ``=fp32`` forces float32 GEMMs; ``=bf16x3`` / ``=lut`` force that path wherever
    the kernel supports it (also where it is not the fastest, for tests), else float32.
    """
    global _SPIKE_GEMM
    if _SPIKE_GEMM is None:
        check_spike_gemm_env()
        mode = os.environ.get("BIOPLAUS_SPIKE_GEMM", "auto")
        k = kernel() if mode != "fp32" else None
        resolved = "fp32"
        if k is not None:
            bf16 = _kernel_flag(k, "bf16_units")
            lut = _kernel_flag(k, "lut_units")
            if mode == "auto":
                amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
                amx_ok = bool(amx()) if amx is not None else False
                resolved = "bf16x3" if (bf16 and amx_ok) else ("lut" if lut else "fp32")
            elif mode == "bf16x3" and bf16:
                resolved = "bf16x3"
            elif mode == "lut" and lut:
                resolved = "lut"
        _SPIKE_GEMM = resolved
    return _SPIKE_GEMM


def _kernel_flag(k: Any, name: str) -> bool:
    """A capability query of the compiled kernel (False if it is missing or fails)."""
    try:
        return bool(getattr(k, name)()) if hasattr(k, name) else False
    except Exception:  # pragma: no cover - oneDNN without ukernels
        return False


def spike_gemm_enabled() -> bool:
    """Whether spike-fed synapses use an exact fast path (``spike_gemm_mode() != "fp32"``)."""
    return spike_gemm_mode() != "fp32"


class _SpikeLinear(torch.autograd.Function):
    """y = x Wᵀ (+ b) for spikes x: forward and dW on an exact fast path, dX in float32.

    ``mode`` "bf16x3": ``packed`` is x in bf16 (exact), products on the bf16 split;
    "lut": ``packed`` holds x's nibble panels, products by table lookup.
    """

    @staticmethod
    def forward(ctx, x: Tensor, packed: Tensor, weight: Tensor, bias: Tensor | None, mode: str):  # noqa: ANN001, ANN205
        k = kernel()
        y = k.spike_mm(packed, weight) if mode == "bf16x3" else k.bin_mm(packed, *x.shape, weight.t())
        if bias is not None:
            y.add_(bias)
        ctx.save_for_backward(packed if mode == "bf16x3" else x, weight)
        ctx.has_bias = bias is not None
        ctx.mode = mode
        return y

    @staticmethod
    def backward(ctx, g: Tensor):  # noqa: ANN001, ANN205
        saved, weight = ctx.saved_tensors
        dx = g.mm(weight) if ctx.needs_input_grad[0] else None
        dw = None
        if ctx.needs_input_grad[2]:
            k = kernel()
            if ctx.mode == "bf16x3":
                dw = k.spike_mm_wgrad(g, saved)
            else:  # (xᵀ g)ᵀ = gᵀ x, x packed transposed (it was checked 0/1 in forward)
                m, k_in = saved.shape
                panels_t, _ = k.pack_binary(saved.detach(), True)
                dw = k.bin_mm(panels_t, k_in, m, g).t().contiguous()
        db = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return dx, None, dw, db, None


def spike_linear(x: Tensor, linear: torch.nn.Linear) -> Tensor:
    """``linear(x)`` for a 2-D input; on an exact fast path when x is spikes (0/1)."""
    w, b = linear.weight, linear.bias
    m, k_in = x.shape if x.dim() == 2 else (0, 0)
    if not (
        m > 0 and x.dtype == torch.float32 and w.dtype == torch.float32 and x.device.type == "cpu"
        and w.device.type == "cpu" and m * k_in * w.shape[0] >= _SPIKE_GEMM_MIN_MACS
    ):
        return torch.nn.functional.linear(x, w, b)
    mode = spike_gemm_mode()
    if mode == "lut":
        panels, binary = kernel().pack_binary(x.detach(), False)
        if binary:
            return _SpikeLinear.apply(x, panels, w, b, "lut")
    elif (
        mode == "bf16x3"
        and m % 2 == 0 and k_in % 2 == 0 and w.shape[0] % 16 == 0 and k_in % 16 == 0  # ukernel block widths
    ):
        xb, exact = kernel().to_bf16_exact(x)
        if exact:
            return _SpikeLinear.apply(x, xb, w, b, "bf16x3")
    return torch.nn.functional.linear(x, w, b)


class BinaryRows:
    """Rows X [m, k] for several products X @ B and A @ X, by table lookup when X is 0/1.

    For rules that multiply the same spikes many times (HLOP's Oja iterations): ``of(x)``
    packs X once if the table-lookup path is active and X is 0/1 (``packed``); otherwise,
    and for products too small to gain, ``mm`` / ``rmm`` are the float32 GEMMs X @ b, a @ X.
    """

    def __init__(self, x: Tensor, panels: Tensor | None) -> None:
        self.x = x
        self.panels = panels
        self._panels_t: Tensor | None = None

    @classmethod
    def of(cls, x: Tensor) -> BinaryRows:
        if (
            x.dim() != 2 or x.dtype != torch.float32 or x.device.type != "cpu" or x.numel() == 0
            or spike_gemm_mode() != "lut"
        ):
            return cls(x, None)
        panels, binary = kernel().pack_binary(x, False)
        return cls(x, panels if binary else None)

    @property
    def packed(self) -> bool:
        """Whether the products go by table lookup (X was packed as 0/1)."""
        return self.panels is not None

    def _lookup(self, b: Tensor) -> bool:
        m, k = self.x.shape
        return self.packed and b.dtype == torch.float32 and m * k * b.shape[1] >= _SPIKE_GEMM_MIN_MACS

    def mm(self, b: Tensor) -> Tensor:
        """X @ b."""
        if not self._lookup(b):
            return self.x @ b
        return kernel().bin_mm(self.panels, *self.x.shape, b)

    def rmm(self, a: Tensor) -> Tensor:
        """a @ X (by table lookup as (Xᵀ aᵀ)ᵀ)."""
        if not self._lookup(a.T):
            return a @ self.x
        if self._panels_t is None:
            self._panels_t, _ = kernel().pack_binary(self.x, True)
        m, k = self.x.shape
        return kernel().bin_mm(self._panels_t, k, m, a.T).T


def lif_scan(current: Tensor, params: LIFParams) -> tuple[Tensor, Tensor]:
    """Run LIF neurons on a time-major current ``[T, B, ...]``; return (spikes, membrane)."""
    surrogate_fn(params.surrogate, params.slope)  # validates the name
    slope = SURROGATES[params.surrogate][1] if params.slope is None else float(params.slope)
    return _LIFScan.apply(
        current, params.beta, float(params.threshold), params.reset == "zero", params.surrogate, slope
    )


def lif_step(
    current: Tensor, mem: Tensor, spk_prev: Tensor, params: LIFParams
) -> tuple[Tensor, Tensor]:
    """One LIF step (no surrogate; reference for tests and online use): (spikes, membrane)."""
    beta, thr = params.beta, params.threshold
    if params.reset == "zero":
        v = beta * (1 - spk_prev) * mem + current
    else:
        v = beta * mem + current - thr * spk_prev
    return (v > thr).to(current.dtype), v


class LIF(torch.nn.Module):
    """A LIF population as a module: ``[T, B, ...]`` current -> (spikes, membrane)."""

    def __init__(self, params: LIFParams) -> None:
        super().__init__()
        params.check()
        self.params = params

    def forward(self, current: Tensor) -> tuple[Tensor, Tensor]:
        return lif_scan(current, self.params)

    def extra_repr(self) -> str:
        p = self.params
        return (
            f"beta={p.beta:.4f}, dt={p.dt}, tau={p.tau}, threshold={p.threshold}, "
            f"reset={p.reset}, surrogate={p.surrogate}"
        )
