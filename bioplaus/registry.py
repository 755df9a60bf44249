"""Names to objects: one `Registry` type for every pluggable group.

Groups (``bioplaus list`` shows them all): rules, plugins, neurons, datasets, experiments
(experiment kinds), figures, simulators. Built-ins register themselves with ``REG.register(name)`` when
their module is imported; a registry imports its built-in modules on first look-up.
Third-party packages register through the entry-point group ``bioplaus.<group>``: each entry
point names the object (a class, or a loader / figure function). Loading one entry point
imports its module, so a package that defines an experiment kind and the figures it draws
registers both by naming the kind alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from bioplaus.errors import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A named group of objects, open to entry points in ``bioplaus.<group>``.

    ``where`` names the config field that selects from this group, so that an unknown
    name gives one line naming that field and the valid choices.
    """

    def __init__(self, group: str, where: str, builtins: tuple[str, ...] = ()) -> None:
        self.group = group
        self.where = where
        self._builtins = builtins
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str, obj: T | None = None) -> Any:
        """Register ``obj`` as ``name``; without ``obj``, a decorator that does so.

        A class gets a ``name`` attribute (rules, plugins and kinds read their own name).
        """

        def add(o: T) -> T:
            if isinstance(o, type):
                o.name = name  # type: ignore[attr-defined]
            self._items[name] = o
            return o

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests registering throw-away classes clean up with this)."""
        self._items.pop(name, None)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self._builtins:
            importlib.import_module(mod)
        for ep in entry_points(group=f"bioplaus.{self.group}"):
            if ep.name in self._items:
                continue  # a built-in (or an earlier registration) wins
            try:
                obj = ep.load()
            except Exception as e:  # a broken third-party package must not crash a run
                raise ConfigError(
                    f"{self.where}: entry point {ep.name!r} ({ep.value}) in group "
                    f"bioplaus.{self.group} failed to load: {type(e).__name__}: {e}"
                ) from None
            self.register(ep.name, obj)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        self._load()
        return iter(sorted(self._items.items()))

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def get(self, name: str, where: str | None = None) -> T:
        """The object registered as ``name``; ConfigError naming the field otherwise."""
        self._load()
        if name not in self._items:
            valid = sorted(self._items)
            raise ConfigError(
                f"{where or self.where}: unknown value {name!r}; valid: {', '.join(valid)}{did_you_mean(name, valid)}"
            )
        return self._items[name]


RULES: Registry[type] = Registry(
    "rules",
    "rule.name",
    ("bioplaus.rules.backprop", "bioplaus.rules.feedback_alignment", "bioplaus.rules.ccl", "bioplaus.rules.ccl_ae",
     "bioplaus.rules.noprop"),
)
PLUGINS: Registry[type] = Registry(
    "plugins", "plugins.name", ("bioplaus.plugins.hlop", "bioplaus.plugins.ewc", "bioplaus.plugins.projection",
                                "bioplaus.plugins.replay", "bioplaus.plugins.agem", "bioplaus.plugins.si",
                                "bioplaus.plugins.lwf", "bioplaus.plugins.gpm")
)
# Neuron models (`bioplaus.neurons.base.NeuronModel` subclasses), chosen by ``network.backend``.
NEURONS: Registry[Any] = Registry("neurons", "network.backend", (
    "bioplaus.neurons.rate", "bioplaus.neurons.lif",
    "bioplaus.neurons.lif_nir", "bioplaus.neurons.if_nir", "bioplaus.neurons.cuba_lif",  # NIR-exact models
))
DATASETS: Registry[Callable[..., Any]] = Registry("datasets", "data.dataset", ("bioplaus.data",))
EXPERIMENTS: Registry[type] = Registry(
    "experiments", "kind", ("bioplaus.experiments.supervised", "bioplaus.experiments.continual",
                            "bioplaus.experiments.hopfield", "bioplaus.experiments.simulate"),
)


@dataclass(frozen=True)
class FigureSpec:
    """A registered figure: ``draw(run, out_dir) -> [files]``, tried only on a run file
    that holds every object named in ``needs`` (HDF5 paths such as ``/spikes``)."""

    draw: Callable[..., Any]
    needs: tuple[str, ...] = ()

    def applies(self, run: Any) -> bool:
        return all(run.has(p) for p in self.needs)


# The figure kit's figures of a training run: what a kind draws unless it names its own
# (`Experiment.figures`); a kind's, rule's or plugin's figures register beside their owner.
TRAINING_FIGURES = ("learning_curves", "layer_metrics", "spikes", "membrane", "weights")
FIGURES: Registry[FigureSpec | Callable[..., Any]] = Registry(
    "figures", "figures", ("bioplaus.report.kit", "bioplaus.experiments.continual", "bioplaus.experiments.hopfield"),
)

# Simulators replay an exported graph elsewhere (`bioplaus simulate GRAPH --backend NAME`,
# kind ``simulate``); each is a `bioplaus.simulators.base.Simulator`.
SIMULATORS: Registry[Any] = Registry("simulators", "--backend", ("bioplaus.simulators.brian2",))

GROUPS: dict[str, Registry[Any]] = {
    r.group: r for r in (EXPERIMENTS, RULES, PLUGINS, NEURONS, DATASETS, FIGURES, SIMULATORS)
}


# Shorthands kept for code written against the first registry.
def register_rule(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a LearningRule available as ``[rule] name = "<name>"``."""
    return RULES.register(name)


def register_plugin(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a Plugin available as ``[[plugins]] name = "<name>"``."""
    return PLUGINS.register(name)


def register_dataset(name: str, loader: Callable[..., Any]) -> None:
    """Add a data set loader ``loader(path=None, data_dir=None, download=False, **opts)``."""
    DATASETS.register(name, loader)


def register_experiment(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make an experiment kind available as ``kind = "<name>"``."""
    return EXPERIMENTS.register(name)


def register_figure(name: str, needs: tuple[str, ...] = ()) -> Callable[[T], T]:
    """Decorator: a figure ``f(run, out_dir) -> list[Path]`` that ``bioplaus report`` draws
    for the kinds, rules and plugins that name it in their ``figures``, on run files holding
    every path in ``needs``. Returns ``f`` unchanged."""

    def add(f: T) -> T:
        FIGURES.register(name, FigureSpec(f, tuple(needs)))  # type: ignore[arg-type]
        return f

    return add


def rule_names() -> list[str]:
    return RULES.names()


def plugin_names() -> list[str]:
    return PLUGINS.names()


def get_rule(name: str) -> Any:
    return RULES.get(name)
