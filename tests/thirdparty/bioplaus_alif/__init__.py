"""A third-party neuron model, installed only through an entry point (tests use it).

``network.backend = "alif"``: a leaky integrate-and-fire neuron with an adaptive threshold
(ALIF, Bellec et al. 2018), per step t, with β = exp(-dt/τ) and ρ = exp(-dt/τ_a)::

    θ_t = θ + β_a a_{t-1}                     threshold raised by recent spikes
    v_t = β v_{t-1} + I_t - θ_{t-1} s_{t-1}   reset by subtraction (detached, as LIF's)
    s_t = H(v_t - θ_t)                        ∂s/∂v := 1 / (1 + k |v - θ_t|)²  (fast sigmoid)
    a_t = ρ a_{t-1} + s_t

Its own keys (``tau_a``, ``beta_a``, ``slope``) are in ``[network.neuron]``; T, dt, τ, θ and
``output_spikes`` in ``[network.spiking]`` as for every temporal model. It only uses the
seam: a pure step on a NamedTuple state, the default scan (autograd through the steps),
the default population; NIR and Brian2 cannot state it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, final

import torch
from torch import Tensor

from bioplaus.config import bounded
from bioplaus.neurons import NeuronModel


@dataclass
class ALIFOptions:
    """Keys of ``[network.neuron]``."""

    tau_a: float = bounded(20e-3, gt=0)  # s: time constant of the adaptation a
    beta_a: float = bounded(0.5, ge=0)  # threshold increase per unit of a
    slope: float = bounded(10.0, gt=0)  # k of the fast-sigmoid surrogate


@dataclass(frozen=True)
class ALIFParams:
    """Parameters of an ALIF population (``dt`` in seconds, as every temporal model's)."""

    dt: float
    beta: float
    threshold: float
    beta_a: float
    rho: float
    slope: float


class ALIFState(NamedTuple):
    """Membrane, adaptation, last step's spikes and threshold (the delayed reset)."""

    v: Tensor
    a: Tensor
    s: Tensor
    theta: Tensor


class _Spike(torch.autograd.Function):
    """H(u) forward; the fast-sigmoid surrogate 1 / (1 + k|u|)² backward."""

    @staticmethod
    def forward(ctx: Any, u: Tensor, slope: float) -> Tensor:
        ctx.save_for_backward(u)
        ctx.slope = slope
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (u,) = ctx.saved_tensors
        return grad / (1.0 + ctx.slope * u.abs()) ** 2, None


@final
class ALIF(NeuronModel[ALIFParams, ALIFState]):
    """Adaptive-threshold LIF (module docstring)."""

    temporal = True
    spikes = True
    Options = ALIFOptions

    @classmethod
    def params_from(cls, network: Any, is_output: bool) -> ALIFParams:
        o = cls.options(network)
        s = network.spiking
        thr = s.threshold if (not is_output or s.output_spikes) else math.inf
        return ALIFParams(s.dt, math.exp(-s.dt / s.tau), thr, o.beta_a, math.exp(-s.dt / o.tau_a), o.slope)

    @classmethod
    def initial_state(cls, like: Tensor, params: ALIFParams) -> ALIFState:
        zero = torch.zeros_like(like)
        return ALIFState(zero, zero, zero, torch.full_like(like, params.threshold))

    @classmethod
    def step(cls, current: Tensor, state: ALIFState, params: ALIFParams) -> tuple[Tensor, ALIFState]:
        p = params
        if not math.isfinite(p.threshold):  # a non-firing output layer: a leaky integrator
            v = p.beta * state.v + current
            return torch.zeros_like(v), ALIFState(v, state.a, state.s, state.theta)
        theta = p.threshold + p.beta_a * state.a
        v = p.beta * state.v + current - (state.theta * state.s).detach()
        s = _Spike.apply(v - theta, p.slope)
        a = p.rho * state.a + s
        return s, ALIFState(v, a, s, theta)
