"""A LIF that NIR states exactly: ``network.backend = "lif_nir"``.

The ODE is NIR's ``LIF`` node, τ dv/dt = (v_leak − v) + r I, with s = 1 where v > θ and then
v ← v_reset. Stepped on the grid of ``dt`` with the input held over each step (the spike
convention of `bioplaus.neurons.nir_exact`), per step k::

    u_k = β v_{k−1} + (1 − β)(v_leak + r I_k)     β = exp(−dt/τ) ("exact") or 1 − dt/τ ("euler")
    s_k = H(u_k − θ)                              ∂s/∂u := σ'(u − θ)   (surrogate)
    v_k = v_reset if s_k else u_k                 the reset acts in the step it fires

"exact" is the ODE's solution over the step for a constant I, so v(k dt) of a constant
input is v_inf + (v_0 − v_inf) e^{−k dt/τ} (v_inf = v_leak + r I) until the first spike;
"euler" is one forward-Euler step (v_inf + (v_0 − v_inf)(1 − dt/τ)^k).

Parameters: T, dt, τ, θ, the surrogate and ``output_spikes`` from ``[network.spiking]``
(its ``reset`` key is the ``spiking`` model's and is not read); ``integration``,
``v_reset``, ``v_leak`` and ``r`` (default τ/dt: with "euler" the input then adds exactly
``I`` per step, as the discrete LIF) from ``[network.neuron]``. A non-firing output layer
(``output_spikes = false``) is a leaky integrator, NIR's ``LI`` node with the same τ, r and
v_leak. The synapse is exported as is (input scale 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, final

import torch
from torch import Tensor

from bioplaus.neurons.base import Brian2Neuron, NIRNeuron
from bioplaus.neurons.nir_exact import (
    NIRExactModel,
    decay,
    fire_and_reset,
    full,
    graph_metadata,
    leaky_config,
    uniform,
)
from bioplaus.registry import NEURONS

if TYPE_CHECKING:
    from bioplaus.config import NetworkConfig


@dataclass(frozen=True)
class NIRLIFParams:
    """A ``lif_nir`` population (θ = ∞: a leaky integrator). β from τ, dt and the rule."""

    dt: float
    tau: float
    threshold: float
    v_reset: float
    v_leak: float
    r: float
    integration: str
    surrogate: str = "atan"
    slope: float | None = None

    @property
    def beta(self) -> float:
        return decay(self.tau, self.dt, self.integration)


class NIRLIFState(NamedTuple):
    """The membrane (after the reset of its step)."""

    v: Tensor


@final
@NEURONS.register("lif_nir")
class NIRLIFModel(NIRExactModel[NIRLIFParams, NIRLIFState]):
    """LIF with reset to v_reset in the step it fires (module docstring)."""

    @classmethod
    def params_from(cls, network: NetworkConfig, is_output: bool) -> NIRLIFParams:
        o, s, thr, r = cls.opening(network, is_output)
        return NIRLIFParams(s.dt, s.tau, thr, o.v_reset, o.v_leak, r, o.integration, s.surrogate, s.slope)

    @classmethod
    def initial_state(cls, like: Tensor, params: NIRLIFParams) -> NIRLIFState:
        return NIRLIFState(torch.zeros_like(like))

    @classmethod
    def step(cls, current: Tensor, state: NIRLIFState, params: NIRLIFParams) -> tuple[Tensor, NIRLIFState]:
        p = params
        beta = p.beta
        u = beta * state.v + (1.0 - beta) * (p.v_leak + p.r * current)
        s, v = fire_and_reset(u, p.threshold, p.v_reset, p.surrogate, p.slope)
        return s, NIRLIFState(v)

    # -- NIR ------------------------------------------------------------------------------
    @classmethod
    def nir(cls, params: NIRLIFParams, shape: tuple[int, ...], *, integration: str, li_readout: bool) -> NIRNeuron:
        """NIR ``LIF`` (``LI`` for a non-firing layer) with the model's own τ, r, v_leak, θ,
        v_reset; the synapse as is. ``integration`` is ignored: the node is the ODE, and the
        rule the net steps it with is the model's (``metadata.integration``)."""
        import nir

        p = params
        meta = graph_metadata(cls.name, p.integration, p.dt)
        if not math.isfinite(p.threshold):
            node: Any = nir.LI(tau=full(shape, p.tau), r=full(shape, p.r), v_leak=full(shape, p.v_leak),
                               metadata=dict(meta))
            return NIRNeuron("li", node, 1.0, meta)
        if li_readout:
            raise cls.readout_refusal()
        node = nir.LIF(tau=full(shape, p.tau), r=full(shape, p.r), v_leak=full(shape, p.v_leak),
                       v_threshold=full(shape, p.threshold), v_reset=full(shape, p.v_reset), metadata=dict(meta))
        return NIRNeuron("lif", node, 1.0, meta)

    @classmethod
    def from_nir_node(cls, node: Any, where: str) -> dict[str, Any] | None:
        """The parameters a ``LIF`` or ``LI`` node states (None for any other node):
        ``tau``, ``threshold`` (None for LI), ``r``, ``v_leak``, ``v_reset``.
        ValueError naming ``where`` for parameters that differ between neurons."""
        import nir

        if not isinstance(node, nir.LIF | nir.LI):
            return None
        got = {k: uniform(node, k, where) for k in ("tau", "r", "v_leak")}
        if isinstance(node, nir.LIF):
            got["threshold"] = uniform(node, "v_threshold", where)
            got["v_reset"] = uniform(node, "v_reset", where)
        else:
            got["threshold"] = None
        return got

    @classmethod
    def config_from_nir(cls, layers: list[dict[str, Any]], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """``[network.spiking]`` and ``[network.neuron]`` entries from the layers' node
        parameters (`from_nir_node`); ValueError naming the parameter that differs."""
        return leaky_config(layers, where, ("r", "v_leak", "v_reset"))

    # -- Brian2 ---------------------------------------------------------------------------
    @classmethod
    def brian2(cls, *, fires: bool, reset: str, inputs: str) -> Brian2Neuron:
        """NIR's LIF as Brian2 writes it; integrate with ``method`` = the net's rule
        ("exact" → Brian2's "exact", "euler" → "euler") and hold ``inputs`` over the step
        (``I_syn`` is cleared after the integration, before the synapses add the step's
        spikes). ``reset`` is ignored: the reset is to v_reset."""
        return Brian2Neuron(
            equations=(f"dv/dt = (v_leak - v + r * ({inputs})) / tau : 1\nI_syn : 1\n"
                       "tau : second (constant)\nr : 1 (constant)\nv_leak : 1 (constant)\n"
                       "v_reset : 1 (constant)\n"),
            threshold="v > theta" if fires else None,
            reset="v = v_reset" if fires else None,
            step="I_syn = 0",
            window="v = 0\nI_syn = 0",
        )
