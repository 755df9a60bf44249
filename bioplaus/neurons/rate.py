"""Rate neurons: y = f(W x + b) with a point-wise activation f (``network.activation``).

A static model: one evaluation per sample, no state, no time axis. The output layer is the
identity, so its activity is the logits. Registered as ``network.backend = "rate"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, final

from torch import Tensor, nn

from bioplaus.errors import ConfigError
from bioplaus.neurons.base import NeuronModel, NoState, Population
from bioplaus.registry import NEURONS

if TYPE_CHECKING:
    from bioplaus.config import NetworkConfig

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}


def activation(name: str) -> nn.Module:
    """The activation module called ``name`` (config field ``network.activation``)."""
    if name not in ACTIVATIONS:
        raise ConfigError(
            f"network.activation: unknown activation {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[name]()


@dataclass(frozen=True)
class RateParams:
    """Parameters of a rate population: the name of its activation f."""

    activation: str = "elu"


class RateNeuron(Population):
    """A rate population: returns (activity, None) so it has the same shape of call as LIF."""

    def __init__(self, params: RateParams) -> None:
        super().__init__(RateModel, params)
        self.name = params.activation
        self.f = activation(params.activation)

    def forward(self, current: Tensor) -> tuple[Tensor, None]:
        return self.f(current), None

    def extra_repr(self) -> str:
        return self.name


@final
@NEURONS.register("rate")
class RateModel(NeuronModel[RateParams, NoState]):
    """y = f(u): the configured activation (identity on the output layer)."""

    @classmethod
    def params_from(cls, network: NetworkConfig, is_output: bool) -> RateParams:
        cls.options(network)
        name = "identity" if is_output else network.activation
        activation(name)
        return RateParams(name)

    @classmethod
    def initial_state(cls, like: Tensor, params: RateParams) -> NoState:
        return NoState()

    @classmethod
    def step(cls, current: Tensor, state: NoState, params: RateParams) -> tuple[Tensor, NoState]:
        return activation(params.activation)(current), state

    @classmethod
    def population(cls, params: RateParams) -> RateNeuron:
        return RateNeuron(params)
