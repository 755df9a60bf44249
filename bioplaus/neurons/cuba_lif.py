"""Current-based LIF as NIR states it: ``network.backend = "cuba_lif"``.

NIR's ``CubaLIF`` node: a synaptic current I and a membrane v,

    τ_syn dI/dt = −I + w_in S,     τ_mem dv/dt = (v_leak − v) + r I,

s = 1 where v > θ, then v ← v_reset (I is not reset). S is the population's input (the
synapse's W x + b), held over each step (spike convention of `bioplaus.neurons.nir_exact`).
With α = e^{−dt/τ_syn}, β = e^{−dt/τ_mem} ("exact") or α = 1 − dt/τ_syn, β = 1 − dt/τ_mem
("euler"), per step k::

    I_k = α I_{k−1} + (1 − α) w_in S_k                                  (both rules)
    "exact": u_k = β v_{k−1} + (1 − β)(v_leak + r w_in S_k) + r κ (I_{k−1} − w_in S_k),
             κ = τ_syn (α − β) / (τ_syn − τ_mem)   (→ β dt/τ_mem when τ_syn = τ_mem)
    "euler": u_k = β v_{k−1} + (1 − β)(v_leak + r I_{k−1})   (forward Euler: the old I)
    s_k = H(u_k − θ),   v_k = v_reset if s_k else u_k

"exact" is the exact solution of the linear pair over a step of constant S, so a step input
S from rest gives on the grid I(t) = w_in S (1 − e^{−t/τ_syn}) and
v(t) = r w_in S [1 − (τ_mem e^{−t/τ_mem} − τ_syn e^{−t/τ_syn}) / (τ_mem − τ_syn)] until the
first spike. τ_mem is ``network.spiking.tau``; ``tau_syn``, ``w_in`` and the options of every
NIR-exact model (``integration``, ``v_reset``, ``v_leak``, ``r``, default τ_mem/dt) are in
``[network.neuron]``. A non-firing output layer is NIR's ``CubaLI`` (the same without
threshold). The synapse is exported as is (input scale 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, final

import torch
from torch import Tensor

from bioplaus.config import bounded
from bioplaus.neurons.base import Brian2Neuron, NIRNeuron
from bioplaus.neurons.nir_exact import (
    NIRExactModel,
    NIROptions,
    decay,
    fire_and_reset,
    full,
    graph_metadata,
    leaky_config,
    uniform,
)
from bioplaus.registry import NEURONS

if TYPE_CHECKING:
    from bioplaus.config import NetworkConfig, SpikingConfig


@dataclass
class CubaOptions(NIROptions):
    """Keys of ``[network.neuron]`` for ``cuba_lif``."""

    tau_syn: float = bounded(2e-3, gt=0)  # s: time constant of the synaptic current
    w_in: float = bounded(1.0)  # input weight of the synaptic current (NIR's w_in)


@dataclass(frozen=True)
class CubaParams:
    """A ``cuba_lif`` population (θ = ∞: CubaLI)."""

    dt: float
    tau_mem: float
    tau_syn: float
    threshold: float
    v_reset: float
    v_leak: float
    r: float
    w_in: float
    integration: str
    surrogate: str = "atan"
    slope: float | None = None

    @property
    def alpha(self) -> float:
        return decay(self.tau_syn, self.dt, self.integration)

    @property
    def beta(self) -> float:
        return decay(self.tau_mem, self.dt, self.integration)

    @property
    def kappa(self) -> float:
        """κ of the exact step: the share of the synaptic current's deviation that reaches v."""
        a, b, ts, tm = self.alpha, self.beta, self.tau_syn, self.tau_mem
        if math.isclose(ts, tm, rel_tol=1e-9):
            return b * self.dt / tm
        return ts * (a - b) / (ts - tm)


class CubaState(NamedTuple):
    """Membrane (after the reset of its step) and synaptic current."""

    v: Tensor
    i: Tensor


@final
@NEURONS.register("cuba_lif")
class CubaLIFModel(NIRExactModel[CubaParams, CubaState]):
    """Current-based LIF with reset to v_reset in the step it fires (module docstring)."""

    Options = CubaOptions
    readout_node = "CubaLI"

    @classmethod
    def euler_taus(cls, o: Any, s: SpikingConfig, threshold: float) -> dict[str, float]:
        """τ_mem and τ_syn."""
        return {"network.spiking.tau": s.tau, "network.neuron.tau_syn": o.tau_syn}

    @classmethod
    def params_from(cls, network: NetworkConfig, is_output: bool) -> CubaParams:
        o, s, thr, r = cls.opening(network, is_output)
        return CubaParams(s.dt, s.tau, o.tau_syn, thr, o.v_reset, o.v_leak, r, o.w_in, o.integration,
                          s.surrogate, s.slope)

    @classmethod
    def initial_state(cls, like: Tensor, params: CubaParams) -> CubaState:
        return CubaState(torch.zeros_like(like), torch.zeros_like(like))

    @classmethod
    def step(cls, current: Tensor, state: CubaState, params: CubaParams) -> tuple[Tensor, CubaState]:
        p = params
        a, b = p.alpha, p.beta
        drive = p.w_in * current
        i = a * state.i + (1.0 - a) * drive
        if p.integration == "exact":
            u = b * state.v + (1.0 - b) * (p.v_leak + p.r * drive) + (p.r * p.kappa) * (state.i - drive)
        else:
            u = b * state.v + (1.0 - b) * (p.v_leak + p.r * state.i)
        s, v = fire_and_reset(u, p.threshold, p.v_reset, p.surrogate, p.slope)
        return s, CubaState(v, i)

    # -- NIR ------------------------------------------------------------------------------
    @classmethod
    def nir(cls, params: CubaParams, shape: tuple[int, ...], *, integration: str, li_readout: bool) -> NIRNeuron:
        """NIR ``CubaLIF`` (``CubaLI`` for a non-firing layer) with the model's own
        parameters; the synapse as is; ``integration`` is ignored (the model's is in the
        metadata)."""
        import nir

        p = params
        meta = graph_metadata(cls.name, p.integration, p.dt)
        common = {"tau_syn": full(shape, p.tau_syn), "tau_mem": full(shape, p.tau_mem), "r": full(shape, p.r),
                  "v_leak": full(shape, p.v_leak), "w_in": full(shape, p.w_in)}
        if not math.isfinite(p.threshold):
            return NIRNeuron("cubali", nir.CubaLI(**common, metadata=dict(meta)), 1.0, meta)
        if li_readout:
            raise cls.readout_refusal()
        node = nir.CubaLIF(**common, v_threshold=full(shape, p.threshold), v_reset=full(shape, p.v_reset),
                           metadata=dict(meta))
        return NIRNeuron("cubalif", node, 1.0, meta)

    @classmethod
    def from_nir_node(cls, node: Any, where: str) -> dict[str, Any] | None:
        """The parameters a ``CubaLIF`` or ``CubaLI`` node states (None for other nodes):
        ``tau`` (τ_mem), ``tau_syn``, ``r``, ``v_leak``, ``w_in``, ``threshold`` (None for
        CubaLI), ``v_reset``."""
        import nir

        if not isinstance(node, nir.CubaLIF | nir.CubaLI):
            return None
        got = {k: uniform(node, k, where) for k in ("tau_syn", "r", "v_leak", "w_in")}
        got["tau"] = uniform(node, "tau_mem", where)
        if isinstance(node, nir.CubaLIF):
            got["threshold"] = uniform(node, "v_threshold", where)
            got["v_reset"] = uniform(node, "v_reset", where)
        else:
            got["threshold"] = None
        return got

    @classmethod
    def config_from_nir(cls, layers: list[dict[str, Any]], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """``[network.spiking]`` and ``[network.neuron]`` entries from the layers' node
        parameters (`from_nir_node`); ValueError naming the parameter that differs."""
        return leaky_config(layers, where, ("r", "v_leak", "v_reset", "tau_syn", "w_in"))

    # -- Brian2 ---------------------------------------------------------------------------
    @classmethod
    def brian2(cls, *, fires: bool, reset: str, inputs: str) -> Brian2Neuron:
        """NIR's CubaLIF as Brian2 writes it (a linear pair: Brian2's "exact" solves it
        exactly, "euler" is the forward-Euler rule above); ``inputs`` held over the step;
        the reset to v_reset (``reset`` is ignored)."""
        return Brian2Neuron(
            equations=(f"dI/dt = (w_in * ({inputs}) - I) / tau_syn : 1\n"
                       "dv/dt = (v_leak - v + r * I) / tau_mem : 1\nI_syn : 1\n"
                       "tau_syn : second (constant)\ntau_mem : second (constant)\nr : 1 (constant)\n"
                       "v_leak : 1 (constant)\nw_in : 1 (constant)\nv_reset : 1 (constant)\n"),
            threshold="v > theta" if fires else None,
            reset="v = v_reset" if fires else None,
            step="I_syn = 0",
            window="v = 0\nI = 0\nI_syn = 0",
        )
