"""Backends: neuron dynamics only. ``rate`` (y = f(Wx + b)) and ``spiking`` (LIF over T steps)."""

from __future__ import annotations

from bioplaus.backends.rate import ACTIVATIONS, RateNeuron, activation
from bioplaus.backends.spiking import LIF, SURROGATES, LIFParams, lif_scan, lif_step
from bioplaus.registry import BACKENDS


@BACKENDS.register("rate")
def rate_neuron(cfg, is_output: bool):  # noqa: ANN001, ANN201
    """y = f(u): the configured activation (identity on the output layer)."""
    return RateNeuron("identity" if is_output else cfg.activation)


@BACKENDS.register("spiking")
def lif_neuron(cfg, is_output: bool):  # noqa: ANN001, ANN201
    """LIF over T steps; the output layer only integrates when ``output_spikes`` is false."""
    import math

    s = cfg.spiking
    thr = s.threshold if (not is_output or s.output_spikes) else math.inf
    return LIF(LIFParams(s.dt, s.tau, thr, s.reset, s.surrogate, s.slope))


__all__ = [
    "ACTIVATIONS",
    "BACKENDS",
    "LIF",
    "LIFParams",
    "RateNeuron",
    "SURROGATES",
    "activation",
    "lif_scan",
    "lif_step",
]
