"""Rate neurons: y = f(W x + b) with a point-wise activation f."""

from __future__ import annotations

from torch import Tensor, nn

from bioplaus.errors import ConfigError

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


class RateNeuron(nn.Module):
    """A rate population: returns (activity, None) so it has the same shape of call as LIF."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.f = activation(name)

    def forward(self, current: Tensor) -> tuple[Tensor, None]:
        return self.f(current), None

    def extra_repr(self) -> str:
        return self.name


def rate_of(y: Tensor) -> Tensor:
    """Rate backend activity is already a rate."""
    return y

