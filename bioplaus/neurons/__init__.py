"""Neuron models (``network.backend``): ``rate`` (y = f(Wx + b)), ``spiking`` (LIF over T steps)
and the NIR-exact ``lif_nir``, ``if_nir``, ``cuba_lif`` (`nir_exact`: what they share).

The contract is `bioplaus.neurons.base.NeuronModel` (docs/neurons.md); each model is one
file registered in `bioplaus.registry.NEURONS` (third-party ones through the entry-point
group ``bioplaus.neurons``). `kernel` loads the fused C++ kernel, `synapses` holds the
products of spike-fed synapses, `surrogates` the surrogate derivatives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bioplaus.config import check_choice
from bioplaus.neurons.base import (
    CAPABILITIES,
    Brian2Neuron,
    NeuronModel,
    NIRNeuron,
    NotStatable,
    Population,
    missing_needs,
    models_with,
    neuron_model,
)
from bioplaus.neurons.cuba_lif import CubaLIFModel
from bioplaus.neurons.if_nir import NIRIFModel
from bioplaus.neurons.lif import LIF, LIFModel, LIFParams, lif_params, lif_scan, lif_step
from bioplaus.neurons.lif_nir import NIRLIFModel
from bioplaus.neurons.rate import ACTIVATIONS, RateModel, RateNeuron, activation
from bioplaus.neurons.surrogates import SURROGATES

if TYPE_CHECKING:
    from bioplaus.config import NetworkConfig


def check_spiking_table(network: NetworkConfig) -> None:
    """ConfigError for a bad ``[network.spiking]``, checked whatever the model (every run
    records the table): its readout and encoder, and the LIF parameters it holds."""
    s = network.spiking
    check_choice(s.readout, ["mem_mean", "spike_count"], "network.spiking.readout")
    check_choice(s.encoder, ["direct", "poisson", "latency"], "network.spiking.encoder")
    lif_params(s, False)


__all__ = [
    "ACTIVATIONS",
    "CAPABILITIES",
    "LIF",
    "SURROGATES",
    "Brian2Neuron",
    "CubaLIFModel",
    "LIFModel",
    "LIFParams",
    "NIRIFModel",
    "NIRLIFModel",
    "NIRNeuron",
    "NeuronModel",
    "NotStatable",
    "Population",
    "RateModel",
    "RateNeuron",
    "activation",
    "check_spiking_table",
    "lif_params",
    "lif_scan",
    "lif_step",
    "missing_needs",
    "models_with",
    "neuron_model",
]
