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

The output layer is a leaky integrator (θ = ∞: never fires, never resets) when
``network.spiking.output_spikes`` is false. Registered as ``network.backend = "spiking"``;
the fused C++ kernel (`bioplaus.neurons.kernel`) is the scan's fast path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, final

import numpy as np
import torch
from torch import Tensor

from bioplaus.errors import BioplausError, ConfigError
from bioplaus.neurons.base import Brian2Neuron, NeuronModel, NIRNeuron, Population, layer_threshold
from bioplaus.neurons.kernel import kernel
from bioplaus.neurons.surrogates import SURROGATE_CODE, SURROGATES, surrogate_fn
from bioplaus.registry import NEURONS

if TYPE_CHECKING:
    from bioplaus.config import NetworkConfig, SpikingConfig


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


def lif_params(spiking: SpikingConfig, is_output: bool) -> LIFParams:
    """The checked LIF parameters of a hidden (or the output) layer that ``[network.spiking]``
    describes: the output layer is a leaky integrator (θ = ∞) unless ``output_spikes``."""
    s = spiking
    thr = layer_threshold(s, is_output)
    params = LIFParams(s.dt, s.tau, thr, s.reset, s.surrogate, s.slope)
    params.check("network.spiking")
    return params


class LIFState(NamedTuple):
    """The state of a LIF population: membrane and last step's spikes (the delayed reset)."""

    v: Tensor
    s: Tensor


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
                mem, spk, ctx.beta, ctx.thr, ctx.zero, SURROGATE_CODE[ctx.sgname], ctx.slope,
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
    elif math.isfinite(thr):
        v = beta * mem + current - thr * spk_prev
    else:  # a leaky integrator: never fires, never resets (and ∞ · 0 is not 0)
        v = beta * mem + current
    return (v > thr).to(current.dtype), v




# ----------------------------------------------------------------------------- NIR
# NIR states a continuous LIF, τ dv/dt = (v_leak − v) + r·I; its time constant for the
# discrete β depends on how a reader integrates it (see bioplaus.export.nir).
INTEGRATIONS = ("euler", "exact")


def nir_tau(beta: float, dt: float, integration: str) -> float:
    """NIR τ whose one step of ``dt`` under ``integration`` decays by ``beta``."""
    if integration == "euler":
        return dt / (1.0 - beta)
    if integration == "exact":
        return -dt / math.log(beta)
    raise BioplausError(f"integration: {integration!r}; valid: {', '.join(INTEGRATIONS)}")


def nir_beta(tau: float, dt: float, integration: str) -> float:
    """Decay per step of ``dt`` of a NIR node with time constant ``tau`` (inverse of `nir_tau`)."""
    return 1.0 - dt / tau if integration == "euler" else math.exp(-dt / tau)


# ----------------------------------------------------------------------------- the model


class LIF(Population):
    """A LIF population as a module: ``[T, B, ...]`` current -> (spikes, membrane)."""

    def __init__(self, params: LIFParams) -> None:
        params.check()
        super().__init__(LIFModel, params)

    def forward(self, current: Tensor) -> tuple[Tensor, Tensor]:
        return lif_scan(current, self.params)

    def extra_repr(self) -> str:
        p = self.params
        return (
            f"beta={p.beta:.4f}, dt={p.dt}, tau={p.tau}, threshold={p.threshold}, "
            f"reset={p.reset}, surrogate={p.surrogate}"
        )


@final
@NEURONS.register("spiking")
class LIFModel(NeuronModel[LIFParams, LIFState]):
    """Leaky integrate-and-fire over T steps (module docstring); ``[network.spiking]`` holds
    its parameters; the output layer only integrates when ``output_spikes`` is false."""

    temporal = True
    spikes = True

    @classmethod
    def params_from(cls, network: NetworkConfig, is_output: bool) -> LIFParams:
        cls.options(network)
        return lif_params(network.spiking, is_output)

    @classmethod
    def initial_state(cls, like: Tensor, params: LIFParams) -> LIFState:
        return LIFState(torch.zeros_like(like), torch.zeros_like(like))

    @classmethod
    def step(cls, current: Tensor, state: LIFState, params: LIFParams) -> tuple[Tensor, LIFState]:
        s, v = lif_step(current, state.v, state.s, params)
        return s, LIFState(v, s)

    @classmethod
    def scan(cls, current: Tensor, params: LIFParams) -> tuple[Tensor, Tensor]:
        return lif_scan(current, params)

    @classmethod
    def population(cls, params: LIFParams) -> LIF:
        return LIF(params)

    @classmethod
    def nir(cls, params: LIFParams, shape: tuple[int, ...], *, integration: str, li_readout: bool) -> NIRNeuron:
        """A NIR ``LIF`` node (``LI`` for a read-out or non-firing output layer); the synapse
        is scaled by 1 / (1 − β) (see bioplaus.export.nir)."""
        import nir

        beta = float(params.beta)
        dt = float(params.dt)
        tau = nir_tau(beta, dt, integration)
        thr = params.threshold
        node_meta = {"reset": params.reset, "reset_delay": True, "integration": integration, "dt": dt}

        def full(v: float) -> np.ndarray:
            return np.full(shape, v, dtype=np.float64)

        if li_readout or not math.isfinite(thr):
            node: Any = nir.LI(tau=full(tau), r=full(1.0), v_leak=full(0.0),
                               metadata={**node_meta, "readout": "mem_mean", "output_spikes": bool(math.isfinite(thr))})
            kind = "li"
        else:
            node = nir.LIF(tau=full(tau), r=full(1.0), v_leak=full(0.0), v_threshold=full(thr),
                           v_reset=full(0.0), metadata=dict(node_meta))
            kind = "lif"
        scale = 1.0 / (1.0 - beta)
        meta = {"integration": integration, "beta": beta, "input_scale": scale, "reset": params.reset,
                "reset_delay": True, "surrogate": params.surrogate}
        return NIRNeuron(kind, node, scale, meta)

    @classmethod
    def brian2(cls, *, fires: bool, reset: str, inputs: str) -> Brian2Neuron:
        """v decays exactly (τ dv/dt = −v), then takes its input and the delayed reset."""
        if reset == "subtract" or not fires:
            step = f"v = v + {inputs} - theta * r\nr = 0\nI_syn = 0"
        else:
            step = f"v = v * (1 - r) + {inputs}\nr = 0\nI_syn = 0"
        return Brian2Neuron(
            equations="dv/dt = -v / tau : 1\nI_syn : 1\nr : 1\ntau : second (constant)\n",
            threshold="v > theta" if fires else None,
            reset="r = 1" if fires else None,
            step=step,
            window="v = 0\nr = 0\nI_syn = 0",
        )
