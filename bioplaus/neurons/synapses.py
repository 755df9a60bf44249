"""Synapses fed by spikes: exact fast paths of their products.

A synapse fed by spikes (0 or 1) has two exact fast paths for its current s Wᵀ and its
weight gradient dW = gᵀ s (dX = g W stays a float32 GEMM: g and W are both full float32):
- ``bf16x3`` (CPUs with AMX matrix units): the float32 weight (or g) is split exactly into
  three bf16 pieces, every product is exact and the sums are float32;
- table lookup (every other CPU): the spikes are packed four to a nibble and each row of
  the result is a sum of table entries, one per four inputs, each table entry the float32
  sum of the weights its bit pattern selects (K/4 vector adds instead of K multiply-adds).
  Three builds of it, ``lut512`` (AVX-512), ``lut256`` (AVX2) and ``lutportable`` (plain
  C++ vectorised by the compiler: NEON on ARM, SSE2 on old x86), give the same bits.
Either way the result differs from a float32 GEMM only in the order of the float32
additions (see lif_kernel.cpp); anything but 0/1 input takes the float32 GEMM.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from bioplaus.errors import ConfigError
from bioplaus.neurons.kernel import kernel, kernel_flag

LUT_PATHS = ("lut512", "lut256", "lutportable")  # fastest first
SPIKE_GEMM_MODES = ("auto", "fp32", "bf16x3", "lut", *LUT_PATHS)
_SPIKE_GEMM: str | None = None  # the resolved mode: "fp32", "bf16x3" or one of LUT_PATHS
_SPIKE_GEMM_MIN_MACS = 1 << 22  # below this the split, packing and calls cost more than they save


def _env_mode() -> str:
    """``BIOPLAUS_SPIKE_GEMM`` (default ``auto``), a one-line config error if it is no mode."""
    mode = os.environ.get("BIOPLAUS_SPIKE_GEMM", "auto")
    if mode not in SPIKE_GEMM_MODES:
        raise ConfigError(f"BIOPLAUS_SPIKE_GEMM: must be one of {', '.join(SPIKE_GEMM_MODES)}, got {mode!r}")
    return mode


def check_spike_gemm_env() -> None:
    """A one-line config error for a bad ``BIOPLAUS_SPIKE_GEMM`` (a name it does not know, or a
    forced path this CPU lacks); builds the kernel only for a forced path (it needs it anyway)."""
    if _env_mode() not in ("auto", "fp32"):
        spike_gemm_mode()


def lut_paths() -> tuple[str, ...]:
    """The table-lookup paths this CPU and kernel build can run, fastest first (none without the kernel)."""
    k = kernel()
    if k is None or not hasattr(k, "lut_paths"):
        return ()
    return tuple(p for p in k.lut_paths() if p in LUT_PATHS)


def spike_gemm_mode() -> str:
    """How spike-fed synapses multiply: ``"bf16x3"``, ``"lut512"``, ``"lut256"``,
    ``"lutportable"`` or ``"fp32"``.

    ``BIOPLAUS_SPIKE_GEMM=auto`` (default) picks the fastest exact path of this CPU: the bf16
    split where AMX tiles exist, else the table lookup of the widest vectors the CPU has
    (AVX-512, AVX2, else the portable build), float32 GEMMs without the compiled kernel.
    ``=fp32`` forces float32 GEMMs; ``=bf16x3``, ``=lut512``, ``=lut256``, ``=lutportable``
    force that path (also where it is not the fastest: tests, benchmarks), ``=lut`` the
    fastest table lookup of the CPU; a forced path the CPU or kernel lacks is a ConfigError.
    """
    global _SPIKE_GEMM
    if _SPIKE_GEMM is None:
        mode = _env_mode()
        if mode == "fp32":
            _SPIKE_GEMM = "fp32"
            return _SPIKE_GEMM
        k = kernel()
        if k is None:
            if mode != "auto":
                raise ConfigError(f"BIOPLAUS_SPIKE_GEMM={mode}: needs the compiled LIF kernel, which is "
                                  "unavailable here (BIOPLAUS_LIF_KERNEL=torch, or its build failed)")
            _SPIKE_GEMM = "fp32"
            return _SPIKE_GEMM
        luts = lut_paths()
        bf16 = kernel_flag(k, "bf16_units")
        if mode == "auto":
            amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
            amx_ok = bool(amx()) if amx is not None else False
            resolved = "bf16x3" if (bf16 and amx_ok) else (luts[0] if luts else "fp32")
        elif mode == "bf16x3":
            if not bf16:
                raise ConfigError("BIOPLAUS_SPIKE_GEMM=bf16x3: this CPU or torch build has no bf16 ukernels")
            resolved = "bf16x3"
        else:
            want = luts[0] if mode == "lut" and luts else mode
            if want not in luts:
                raise ConfigError(f"BIOPLAUS_SPIKE_GEMM={mode}: this CPU lacks it "
                                  f"(table-lookup paths here: {', '.join(luts) or 'none'})")
            resolved = want
        _SPIKE_GEMM = resolved
    return _SPIKE_GEMM


def spike_gemm_enabled() -> bool:
    """Whether spike-fed synapses use an exact fast path (``spike_gemm_mode() != "fp32"``)."""
    return spike_gemm_mode() != "fp32"


class _SpikeLinear(torch.autograd.Function):
    """y = x Wᵀ (+ b) for spikes x: forward and dW on an exact fast path, dX in float32.

    ``mode`` "bf16x3": ``packed`` is x in bf16 (exact), products on the bf16 split;
    a table-lookup path (``LUT_PATHS``): ``packed`` holds x's nibble panels.
    """

    @staticmethod
    def forward(ctx, x: Tensor, packed: Tensor, weight: Tensor, bias: Tensor | None, mode: str):  # noqa: ANN001, ANN205
        k = kernel()
        y = k.spike_mm(packed, weight) if mode == "bf16x3" else k.bin_mm(packed, *x.shape, weight.t(), mode)
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
                panels_t, _ = k.pack_binary(saved.detach(), True, ctx.mode)
                dw = k.bin_mm(panels_t, k_in, m, g, ctx.mode).t().contiguous()
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
    if mode in LUT_PATHS:
        panels, binary = kernel().pack_binary(x.detach(), False, mode)
        if binary:
            return _SpikeLinear.apply(x, panels, w, b, mode)
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

    def __init__(self, x: Tensor, panels: Tensor | None, path: str = "fp32") -> None:
        self.x = x
        self.panels = panels
        self.path = path  # the table-lookup path (LUT_PATHS) when packed
        self._panels_t: Tensor | None = None

    @classmethod
    def of(cls, x: Tensor) -> BinaryRows:
        if (
            x.dim() != 2 or x.dtype != torch.float32 or x.device.type != "cpu" or x.numel() == 0
            or spike_gemm_mode() not in LUT_PATHS
        ):
            return cls(x, None)
        path = spike_gemm_mode()
        panels, binary = kernel().pack_binary(x, False, path)
        return cls(x, panels if binary else None, path)

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
        return kernel().bin_mm(self.panels, *self.x.shape, b, self.path)

    def rmm(self, a: Tensor) -> Tensor:
        """a @ X (by table lookup as (Xᵀ aᵀ)ᵀ)."""
        if not self._lookup(a.T):
            return a @ self.x
        if self._panels_t is None:
            self._panels_t, _ = kernel().pack_binary(self.x, True, self.path)
        m, k = self.x.shape
        return kernel().bin_mm(self._panels_t, k, m, a.T, self.path).T
