"""Synapses fed by spikes: exact fast paths of their products.

A synapse fed by spikes (0 or 1) has two exact fast paths for its current s Wᵀ and its
weight gradient dW = gᵀ s (dX = g W stays a float32 GEMM: g and W are both full float32):
- ``bf16x3`` (CPUs with AMX matrix units): the float32 weight (or g) is split exactly into
  three bf16 pieces, every product is exact and the sums are float32;
- ``lut`` (CPUs with AVX-512 and no AMX): the spikes are packed four to a nibble and each
  row of the result is a sum of table entries, one per four inputs, each table entry the
  float32 sum of the weights its bit pattern selects (K/4 vector adds instead of K
  multiply-adds).
Either way the result differs from a float32 GEMM only in the order of the float32
additions (see lif_kernel.cpp); anything but 0/1 input takes the float32 GEMM.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from bioplaus.errors import ConfigError
from bioplaus.neurons.kernel import kernel, kernel_flag

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
            bf16 = kernel_flag(k, "bf16_units")
            lut = kernel_flag(k, "lut_units")
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
