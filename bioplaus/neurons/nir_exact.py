"""What the NIR-exact neuron models (``lif_nir``, ``if_nir``, ``cuba_lif``) share: the spike
convention, the two integration rules, the surrogate spike and their common options.

**The spike convention.** Time is a grid of steps of ``dt`` seconds; the input ``I`` of a
population during step ``k`` (the interval ((k−1) dt, k dt]) is held constant over the step
(zero-order hold). A spike is the value 1 over one step: a boxcar of height 1 and width
``dt`` (area ``dt``), so a presynaptic spike through a weight ``w`` contributes ``w`` to the
next layer's ``I`` for that one step. Under forward Euler this is the same as a Dirac
impulse of area ``dt`` at the start of the step. A layer's spikes of step ``k`` reach the
next layer in the same step ``k`` (no synaptic delay). The membrane starts at 0.

**The integration rules** (``[network.neuron] integration``), for τ dv/dt = f(v, I) with
``I`` held over the step:

- ``"exact"``: the ODE solved exactly over the step (a linear ODE with constant input),
  β = exp(−dt/τ);
- ``"euler"``: one forward-Euler step, v_k = v_{k−1} + dt f(v_{k−1}, I_k), β = 1 − dt/τ.

For a LIF (τ dv/dt = (v_leak − v) + r I) both give the same form,
v_k = β v_{k−1} + (1 − β)(v_leak + r I_k), with their own β. Then, in the same step,
s_k = H(v_k − θ) (strictly greater, as NIR) and v_k ← v_reset where s_k = 1.

These are the statements a NIR reader needs: the node's ODE and parameters (the model's own,
no rescaling of the synapse), ``dt``, the rule, and this convention; the models write all of
them into the graph's metadata (`graph_metadata`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch import Tensor

from bioplaus.config import bounded
from bioplaus.errors import ConfigError
from bioplaus.neurons.base import NeuronModel, NotStatable, layer_threshold
from bioplaus.neurons.surrogates import SURROGATES, surrogate_fn

if TYPE_CHECKING:
    from bioplaus.config import NetworkConfig, SpikingConfig

P = TypeVar("P")
S = TypeVar("S", bound=tuple)

INTEGRATIONS = ("exact", "euler")

# Stated in every NIR graph of these models (metadata "spike") and in docs/export.md.
SPIKE_CONVENTION = (
    "a spike is the value 1 held for one step of dt (a boxcar of area dt); every node's input is "
    "held constant over each step (zero-order hold); spikes reach the next layer in the same step; "
    "state starts at 0; s = 1 where v > v_threshold, then v = v_reset in the same step"
)


@dataclass
class NIROptions:
    """Keys of ``[network.neuron]`` common to the NIR-exact models."""

    integration: str = "exact"  # exact | euler: how the ODE is stepped (module docstring)
    v_reset: float = bounded(0.0)  # the membrane after a spike
    v_leak: float = bounded(0.0)  # the resting potential (LIF, LI, CubaLIF)
    # R of the ODE; None: τ/dt for a leaky model (a spike of weight w then raises v by about
    # w, as in the discrete LIF), 1/dt for IF (exactly w)
    r: float | None = bounded(None, gt=0)


def decay(tau: float, dt: float, integration: str) -> float:
    """β of one step: exp(−dt/τ) ("exact") or 1 − dt/τ ("euler")."""
    return math.exp(-dt / tau) if integration == "exact" else 1.0 - dt / tau


def check_common(o: NIROptions, dt: float, taus: dict[str, float], threshold: float, model: str) -> None:
    """ConfigError (one line naming the field) for options these models cannot run."""
    if o.integration not in INTEGRATIONS:
        raise ConfigError(f"network.neuron.integration: unknown value {o.integration!r}; valid: "
                          f"{', '.join(INTEGRATIONS)}")
    if o.integration == "euler":
        for where, tau in taus.items():
            if not tau > dt:
                raise ConfigError(f"{where}: {model} with integration = 'euler' needs tau > dt "
                                  f"(0 < 1 − dt/τ < 1), got tau={tau} and dt={dt}")
    if math.isfinite(threshold) and not o.v_reset < threshold:
        raise ConfigError(f"network.neuron.v_reset: must be below network.spiking.threshold "
                          f"({threshold}), got {o.v_reset}")


class _Spike(torch.autograd.Function):
    """s = H(u) forward; the configured surrogate σ'(u) backward (u = v − θ)."""

    @staticmethod
    def forward(ctx: Any, u: Tensor, name: str, slope: float) -> Tensor:
        ctx.save_for_backward(u)
        ctx.name, ctx.slope = name, slope
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (u,) = ctx.saved_tensors
        return grad * surrogate_fn(ctx.name, ctx.slope)(u.clone()), None, None


def spike(u: Tensor, surrogate: str, slope: float | None) -> Tensor:
    """H(u) with the surrogate derivative ``surrogate`` (slope: its default unless given)."""
    k = SURROGATES[surrogate][1] if slope is None else float(slope)
    return _Spike.apply(u, surrogate, k)


def fire_and_reset(u: Tensor, threshold: float, v_reset: float, surrogate: str,
                   slope: float | None) -> tuple[Tensor, Tensor]:
    """(s, v): s = H(u − θ), and v = v_reset where s = 1, else u.

    The reset is detached from the graph (as LIF's): the gradient flows through u where the
    neuron did not fire.
    """
    if not math.isfinite(threshold):  # a non-firing (read-out) layer
        return torch.zeros_like(u), u
    s = spike(u - threshold, surrogate, slope)
    keep = 1.0 - s.detach()
    return s, u * keep + v_reset * (1.0 - keep)


def graph_metadata(model: str, integration: str, dt: float, **extra: Any) -> dict[str, Any]:
    """What a NIR graph of these models says beside its nodes (see module docstring)."""
    return {"neuron_model": model, "integration": integration, "dt": dt, "spike": SPIKE_CONVENTION,
            "reset": "v_reset", "reset_delay": False, "input_scale": 1.0, **extra}


def full(shape: tuple[int, ...], value: float) -> Any:
    """A float64 array of ``shape`` filled with ``value`` (a NIR node parameter)."""
    import numpy as np

    return np.full(shape, value, dtype=np.float64)


def uniform(node: Any, attr: str, what: str) -> float:
    """The one value of a node's parameter ``attr`` (all neurons equal), as a float.

    Raises ValueError naming ``what`` when the values differ or are not finite.
    """
    import numpy as np

    try:
        arr = np.asarray(getattr(node, attr, None), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"{what}: {attr} is not numeric") from None
    if arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{what}: {attr} must be finite numbers")
    if not np.allclose(arr, arr[0], rtol=1e-9, atol=0):
        raise ValueError(f"{what}: {attr} differs between neurons; a bioplaus layer has one value")
    return float(arr[0])


def agree(layers: list[dict[str, Any]], where: str) -> dict[str, float]:
    """One value per parameter over the layers' node parameters (None values skipped).

    Raises ValueError naming ``where`` and the parameter when two layers differ: a bioplaus
    net has one value of each for all its layers.
    """
    merged: dict[str, float] = {}
    for d in layers:
        for k, v in d.items():
            if v is None:
                continue
            if k in merged and not math.isclose(merged[k], v, rel_tol=1e-9, abs_tol=1e-12):
                raise ValueError(f"{where}: {k} differs between layers ({merged[k]:g} vs {v:g}); "
                                 "a bioplaus net has one value")
            merged.setdefault(k, v)
    return merged


def leaky_config(layers: list[dict[str, Any]], where: str, neuron_keys: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``[network.spiking]`` and ``[network.neuron]`` entries of a leaky model's layers
    (``tau`` and ``threshold`` to the former, ``neuron_keys`` to the latter); the output
    layer's threshold None (LI, CubaLI) means it does not fire."""
    m = agree(layers, where)
    spiking: dict[str, Any] = {"tau": m["tau"], "output_spikes": layers[-1].get("threshold") is not None}
    if "threshold" in m:
        spiking["threshold"] = m["threshold"]
    return spiking, {k: m[k] for k in neuron_keys if k in m}


class NIRExactModel(NeuronModel[P, S]):
    """What ``lif_nir``, ``if_nir`` and ``cuba_lif`` share: temporal, spiking, the options
    `NIROptions` (or a subclass), the opening of ``params_from`` (`opening`: the options, the
    layer's θ, the common checks, r) and the refusal of a firing output read by its membrane.

    A subclass states which time constants must exceed dt under "euler" (`euler_taus`), the
    default r (`default_r`) and its read-out node's name (``readout_node``).
    """

    temporal = True
    spikes = True
    Options: ClassVar[type | None] = NIROptions
    readout_node: ClassVar[str] = "LI"

    @classmethod
    def euler_taus(cls, o: Any, s: SpikingConfig, threshold: float) -> dict[str, float]:
        """The time constants (by config field) that must exceed dt with integration = "euler"."""
        return {"network.spiking.tau": s.tau}

    @classmethod
    def default_r(cls, s: SpikingConfig) -> float:
        """r when ``[network.neuron] r`` is not given: τ/dt (a spike of weight w raises v by
        about w, as in the discrete LIF)."""
        return s.tau / s.dt

    @classmethod
    def opening(cls, network: NetworkConfig, is_output: bool) -> tuple[Any, SpikingConfig, float, float]:
        """(options, ``[network.spiking]``, θ of the layer, r), the options checked
        (`check_common`; one-line ConfigError naming the field)."""
        o = cls.options(network)
        s = network.spiking
        thr = layer_threshold(s, is_output)
        check_common(o, s.dt, cls.euler_taus(o, s, thr), thr, cls.name)
        r = o.r if o.r is not None else cls.default_r(s)
        return o, s, thr, r

    @classmethod
    def readout_refusal(cls) -> NotStatable:
        """The one line for a firing output layer read by its membrane (no NIR node states it)."""
        return NotStatable(f"export: neuron model {cls.name!r}: the output layer fires and is read by its "
                           "membrane, which no NIR node states; set network.spiking.output_spikes = false "
                           f"(a{'n' if cls.readout_node == 'LI' else ''} {cls.readout_node} read-out) or "
                           "readout = 'spike_count'")
