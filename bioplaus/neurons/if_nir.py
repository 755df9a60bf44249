"""Integrate-and-fire neurons as NIR states them: ``network.backend = "if_nir"``.

NIR's ``IF`` node, dv/dt = r I, with s = 1 where v > θ and then v ← v_reset. With the input
held over each step (the spike convention of `bioplaus.neurons.nir_exact`) the exact and the
forward-Euler step are the same, per step k::

    u_k = v_{k−1} + dt r I_k
    s_k = H(u_k − θ)              ∂s/∂u := σ'(u − θ)   (surrogate)
    v_k = v_reset if s_k else u_k

so a constant input reaches θ first at step k = ⌊(θ − v_0) / (dt r I)⌋ + 1. ``r`` defaults to
1/dt (a spike of weight w adds exactly w to v). The output layer, when it does not fire
(``output_spikes = false``), is a leaky integrator read by its membrane: NIR's ``LI`` node
with τ = ``network.spiking.tau``, r = r_IF τ (unitless; τ/dt by default, as ``lif_nir``'s)
and v_leak, stepped with ``integration`` (the
only place the rule matters for this model; see `bioplaus.neurons.lif_nir`).
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
    agree,
    decay,
    fire_and_reset,
    full,
    graph_metadata,
    uniform,
)
from bioplaus.registry import NEURONS

if TYPE_CHECKING:
    from bioplaus.config import NetworkConfig, SpikingConfig


@dataclass(frozen=True)
class NIRIFParams:
    """An ``if_nir`` population (r in 1/s); θ = ∞: the LI read-out (τ, v_leak, the rule used
    only then; r unitless)."""

    dt: float
    tau: float
    threshold: float
    v_reset: float
    v_leak: float
    r: float
    integration: str
    surrogate: str = "atan"
    slope: float | None = None


class NIRIFState(NamedTuple):
    """The membrane (after the reset of its step)."""

    v: Tensor


@final
@NEURONS.register("if_nir")
class NIRIFModel(NIRExactModel[NIRIFParams, NIRIFState]):
    """IF with reset to v_reset in the step it fires (module docstring)."""

    @classmethod
    def euler_taus(cls, o: Any, s: SpikingConfig, threshold: float) -> dict[str, float]:
        """Only the LI read-out has a τ."""
        return {} if math.isfinite(threshold) else {"network.spiking.tau": s.tau}

    @classmethod
    def default_r(cls, s: SpikingConfig) -> float:
        """1/dt: a spike of weight w raises v by exactly w."""
        return 1.0 / s.dt

    @classmethod
    def params_from(cls, network: NetworkConfig, is_output: bool) -> NIRIFParams:
        o, s, thr, r = cls.opening(network, is_output)
        if not math.isfinite(thr):  # the LI read-out's r is unitless: r_IF τ (τ/dt by default)
            r = r * s.tau
        return NIRIFParams(s.dt, s.tau, thr, o.v_reset, o.v_leak, r, o.integration, s.surrogate, s.slope)

    @classmethod
    def initial_state(cls, like: Tensor, params: NIRIFParams) -> NIRIFState:
        return NIRIFState(torch.zeros_like(like))

    @classmethod
    def step(cls, current: Tensor, state: NIRIFState, params: NIRIFParams) -> tuple[Tensor, NIRIFState]:
        p = params
        if not math.isfinite(p.threshold):  # the LI read-out: τ dv/dt = (v_leak − v) + r I
            beta = decay(p.tau, p.dt, p.integration)
            return torch.zeros_like(current), NIRIFState(beta * state.v + (1.0 - beta) * (p.v_leak + p.r * current))
        u = state.v + (p.dt * p.r) * current
        s, v = fire_and_reset(u, p.threshold, p.v_reset, p.surrogate, p.slope)
        return s, NIRIFState(v)

    # -- NIR ------------------------------------------------------------------------------
    @classmethod
    def nir(cls, params: NIRIFParams, shape: tuple[int, ...], *, integration: str, li_readout: bool) -> NIRNeuron:
        """NIR ``IF`` (r, θ, v_reset), or ``LI`` (τ, r, v_leak) for the non-firing read-out;
        the synapse as is; ``integration`` is ignored (the model's rule is in the metadata)."""
        import nir

        p = params
        meta = graph_metadata(cls.name, p.integration, p.dt)
        if not math.isfinite(p.threshold):
            node: Any = nir.LI(tau=full(shape, p.tau), r=full(shape, p.r), v_leak=full(shape, p.v_leak),
                               metadata=dict(meta))
            return NIRNeuron("li", node, 1.0, meta)
        if li_readout:
            raise cls.readout_refusal()
        node = nir.IF(r=full(shape, p.r), v_threshold=full(shape, p.threshold), v_reset=full(shape, p.v_reset),
                      metadata=dict(meta))
        return NIRNeuron("if", node, 1.0, meta)

    @classmethod
    def from_nir_node(cls, node: Any, where: str) -> dict[str, Any] | None:
        """The parameters an ``IF`` node (``r``, ``threshold``, ``v_reset``) or an ``LI``
        read-out (``tau``, ``r``, ``v_leak``, threshold None) states; None for other nodes."""
        import nir

        if isinstance(node, nir.IF):
            return {"r": uniform(node, "r", where), "threshold": uniform(node, "v_threshold", where),
                    "v_reset": uniform(node, "v_reset", where)}
        if isinstance(node, nir.LI):
            return {**{k: uniform(node, k, where) for k in ("tau", "r", "v_leak")}, "threshold": None}
        return None

    @classmethod
    def config_from_nir(cls, layers: list[dict[str, Any]], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """``[network.spiking]`` and ``[network.neuron]`` entries from the layers' node
        parameters: the IF layers give r, θ and v_reset; an LI read-out gives τ and v_leak,
        and its r must be r_IF τ (ValueError naming what differs)."""
        fires = [d for d in layers if d["threshold"] is not None]
        m = agree(fires, where)
        spiking: dict[str, Any] = {"output_spikes": layers[-1]["threshold"] is not None}
        neuron: dict[str, Any] = {k: m[k] for k in ("r", "v_reset") if k in m}
        if "threshold" in m:
            spiking["threshold"] = m["threshold"]
        out = layers[-1]
        if out["threshold"] is None:  # the LI read-out
            spiking["tau"] = out["tau"]
            neuron["v_leak"] = out["v_leak"]
            r_li = out["r"] / out["tau"]  # back to 1/s
            if "r" in neuron and not math.isclose(neuron["r"], r_li, rel_tol=1e-9):
                raise ValueError(f"{where}: the LI read-out's r ({out['r']:g}) is not r_IF tau "
                                 f"({neuron['r'] * out['tau']:g}); an if_nir net has one r")
            neuron.setdefault("r", r_li)
        return spiking, neuron

    # -- Brian2 ---------------------------------------------------------------------------
    @classmethod
    def brian2(cls, *, fires: bool, reset: str, inputs: str) -> Brian2Neuron:
        """dv/dt = r I (``fires``), or the LI read-out τ dv/dt = (v_leak − v) + r I; ``inputs``
        held over the step, the reset to v_reset (``reset`` is ignored)."""
        if fires:
            eqs = f"dv/dt = r * ({inputs}) : 1\nr : hertz (constant)\n"
        else:
            eqs = (f"dv/dt = (v_leak - v + r * ({inputs})) / tau : 1\ntau : second (constant)\n"
                   "r : 1 (constant)\nv_leak : 1 (constant)\n")
        return Brian2Neuron(
            equations=eqs + "I_syn : 1\nv_reset : 1 (constant)\n",
            threshold="v > theta" if fires else None,
            reset="v = v_reset" if fires else None,
            step="I_syn = 0",
            window="v = 0\nI_syn = 0",
        )
