"""Backends: neuron dynamics only. ``rate`` (y = f(Wx + b)) and ``spiking`` (LIF over T steps)."""

from __future__ import annotations

from bioplaus.backends.rate import ACTIVATIONS, RateNeuron, activation
from bioplaus.backends.spiking import LIF, SURROGATES, LIFParams, lif_scan, lif_step

BACKENDS = ("rate", "spiking")

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
