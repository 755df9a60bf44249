"""The neuron-model contract: what a layer's neurons are, as Norse keeps a neuron.

A neuron model is one file and one registration (``@NEURONS.register(name)``, or an entry
point in the group ``bioplaus.neurons``); ``network.backend`` names it. It declares

- its capabilities (``temporal``, ``differentiable``, ``spikes``, ``recurrent``), which rules
  state as needs (`LearningRule.needs`);
- its parameters: a frozen dataclass built from ``[network]`` in one place,
  `NeuronModel.params_from` (its own keys, if any, in ``[network.neuron]``, parsed by its
  ``Options`` dataclass; a temporal model reads T, dt, encoder and readout from
  ``[network.spiking]``);
- its state, a NamedTuple, and a pure step ``(out_t, state_t) = step(I_t, state_{t-1}, params)``;
- its scan over time, for a time-major current ``I`` of shape ``[T, B, ...]``::

      (out_t, state_t) = step(I_t, state_{t-1}),   t = 0 .. T-1,   state_{-1} = initial_state

  (default: that loop, autograd through it; a model may override it with a fused kernel);
- the population module a layer stack holds (`Population`: current -> (output, membrane));
- its config checks (`check`: one-line ConfigError naming the field), the time steps a
  sample takes, its NIR node (`nir`) and its Brian2 equations (`brian2`), or a clear
  "not statable" error for either.

Models are classes used through class methods (no instances): a layer's population holds
the model class and its parameters, so no neuron state lives anywhere but in the scan.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

from bioplaus.errors import BioplausError, ConfigError
from bioplaus.registry import NEURONS

if TYPE_CHECKING:
    from bioplaus.config import NetworkConfig

P = TypeVar("P")  # the parameters: a frozen dataclass
S = TypeVar("S", bound=tuple)  # the state: a NamedTuple

# What a rule may need of a model (`LearningRule.needs`); "static" is the opposite of
# "temporal": one evaluation per sample, no time axis.
CAPABILITIES = ("temporal", "static", "differentiable", "spikes", "recurrent")


class NoState(NamedTuple):
    """The state of a model without memory (a rate unit)."""


class NotStatable(BioplausError):
    """A model that an exporter or a simulator cannot state (one line saying so)."""


@dataclass(frozen=True)
class NIRNeuron:
    """What a population tells a NIR exporter.

    ``node`` is the NIR node (named ``<kind><layer index>`` in the graph); the synapse that
    feeds it is written with its weights and biases times ``input_scale``; ``metadata``
    goes into the graph's metadata (from the first layer).
    """

    kind: str
    node: Any
    input_scale: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Brian2Neuron:
    """What a population tells Brian2: its equations with units and its per-step code.

    ``step`` runs each step after the integration of ``equations`` (in the slot "groups");
    ``window`` zeroes the state at the start of a sample's window.
    """

    equations: str
    threshold: str | None
    reset: str | None
    step: str
    window: str


class NeuronModel(ABC, Generic[P, S]):
    """A neuron model (see the module docstring). Subclasses are final and registered."""

    name: ClassVar[str] = ""
    temporal: ClassVar[bool] = False
    differentiable: ClassVar[bool] = True
    spikes: ClassVar[bool] = False  # outputs are 0/1: the synapses they feed may take the spike path
    recurrent: ClassVar[bool] = False
    # The dataclass of the model's own keys in [network.neuron]; None: it takes none.
    Options: ClassVar[type | None] = None

    # -- what it is ---------------------------------------------------------------------
    @classmethod
    def capabilities(cls) -> frozenset[str]:
        """The capability names this model has (see `CAPABILITIES`)."""
        flags = {"temporal": cls.temporal, "static": not cls.temporal, "differentiable": cls.differentiable,
                 "spikes": cls.spikes, "recurrent": cls.recurrent}
        return frozenset(k for k, on in flags.items() if on)

    @classmethod
    def steps(cls, network: NetworkConfig) -> int:
        """Time steps one sample takes: ``network.spiking.T`` for a temporal model, else 1."""
        return network.spiking.T if cls.temporal else 1

    # -- config -------------------------------------------------------------------------
    @classmethod
    def options(cls, network: NetworkConfig) -> Any:
        """The parsed ``[network.neuron]`` table (None for a model without options)."""
        from bioplaus.config import parse_options

        if cls.Options is None:
            if network.neuron:
                raise ConfigError(f"network.neuron: neuron model {cls.name!r} takes no options, "
                                  f"got {', '.join(sorted(network.neuron))}")
            return None
        return parse_options(cls.Options, network.neuron, "network.neuron")

    @classmethod
    @abstractmethod
    def params_from(cls, network: NetworkConfig, is_output: bool) -> P:
        """The checked parameters of a hidden (or the output) population of ``network``."""

    @classmethod
    def check(cls, network: NetworkConfig) -> None:
        """ConfigError (one line naming the field) for any setting this model cannot run."""
        cls.params_from(network, False)
        cls.params_from(network, True)

    # -- dynamics -----------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def initial_state(cls, like: Tensor, params: P) -> S:
        """The state before the first step, for inputs shaped like ``like`` ([B, ...])."""

    @classmethod
    @abstractmethod
    def step(cls, current: Tensor, state: S, params: P) -> tuple[Tensor, S]:
        """One step: (output, new state) from the input current and the state (pure)."""

    @classmethod
    def membrane(cls, state: S) -> Tensor | None:
        """The membrane a layer records and probes read (the state's ``v``, if it has one)."""
        return getattr(state, "v", None)

    @classmethod
    def scan(cls, current: Tensor, params: P) -> tuple[Tensor, Tensor | None]:
        """Outputs and membranes ``[T, B, ...]`` of a time-major current (module docstring)."""
        state = cls.initial_state(current[0], params)
        outs, mems = [], []
        for t in range(current.shape[0]):
            out, state = cls.step(current[t], state, params)
            outs.append(out)
            mems.append(cls.membrane(state))
        mem = torch.stack(mems) if mems and mems[0] is not None else None
        return torch.stack(outs), mem

    @classmethod
    def population(cls, params: P) -> Population:
        """The module a layer holds for these parameters."""
        return Population(cls, params)

    # -- what it tells others -------------------------------------------------------------
    @classmethod
    def nir(cls, params: P, shape: tuple[int, ...], *, integration: str, li_readout: bool) -> NIRNeuron:
        """The NIR node of a population of ``shape`` (``li_readout``: the output layer is read
        by its membrane); `NotStatable` if NIR has no node for this model."""
        raise NotStatable(f"export: neuron model {cls.name!r} is not statable in NIR; this net is on "
                          f"the {cls.name} backend")

    @classmethod
    def brian2(cls, *, fires: bool, reset: str, inputs: str) -> Brian2Neuron:
        """The Brian2 equations of a population (``inputs``: the expression of its input
        current each step); `NotStatable` if this model has none."""
        raise NotStatable(f"simulate: neuron model {cls.name!r} has no Brian2 equations")


class Population(nn.Module):
    """A layer's neurons: ``forward(current) -> (output, membrane or None)``.

    Temporal models take and return time-major ``[T, B, ...]`` tensors (the model's scan);
    static ones ``[B, ...]`` (one step from the initial state).
    """

    def __init__(self, model: type[NeuronModel[Any, Any]], params: Any) -> None:
        super().__init__()
        self.model = model
        self.params = params

    def forward(self, current: Tensor) -> tuple[Tensor, Tensor | None]:
        m = self.model
        if m.temporal:
            return m.scan(current, self.params)
        out, state = m.step(current, m.initial_state(current, self.params), self.params)
        return out, m.membrane(state)

    def extra_repr(self) -> str:
        return f"{self.model.name}: {self.params}"


def layer_threshold(spiking: Any, is_output: bool) -> float:
    """θ of a layer of a temporal model from ``[network.spiking]``: the output layer is a
    non-firing leaky integrator (θ = ∞) unless ``output_spikes``."""
    return spiking.threshold if (not is_output or spiking.output_spikes) else math.inf


def neuron_model(name: str, where: str = "network.backend") -> type[NeuronModel[Any, Any]]:
    """The registered neuron model ``name``; one ConfigError line naming ``where`` otherwise."""
    model = NEURONS.get(name, where)
    if not (isinstance(model, type) and issubclass(model, NeuronModel)) or inspect.isabstract(model):
        raise ConfigError(f"{where}: {name!r} is not a neuron model (a concrete subclass of "
                          "bioplaus.neurons.NeuronModel)")
    return model


def missing_needs(model: type[NeuronModel[Any, Any]], needs: frozenset[str]) -> list[str]:
    """The capabilities in ``needs`` that ``model`` lacks (sorted)."""
    return sorted(needs - model.capabilities())


def models_with(needs: frozenset[str]) -> list[str]:
    """Names of the registered neuron models that have every capability in ``needs``."""
    return [name for name, m in NEURONS.items()
            if isinstance(m, type) and issubclass(m, NeuronModel) and not missing_needs(m, needs)]
