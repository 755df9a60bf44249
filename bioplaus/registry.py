"""Names to classes for rules, plugins, backends and data sets.

Built-ins register themselves with the decorators below when their module is imported.
Third-party packages register through entry points in the groups ``bioplaus.rules``,
``bioplaus.plugins`` and ``bioplaus.datasets``; each entry point names the class (or, for
data sets, a loader ``f(path, data_dir, download) -> neuro_data.Dataset``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from bioplaus.errors import ConfigError

T = TypeVar("T")

_RULES: dict[str, type] = {}
_PLUGINS: dict[str, type] = {}
_EXTRA_DATASETS: dict[str, Callable[..., Any]] = {}
_BUILTIN_RULE_MODULES = ("backprop", "feedback_alignment", "ccl")
_BUILTIN_PLUGIN_MODULES = ("hlop", "ewc", "projection")
_loaded = False


def register_rule(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a LearningRule available as ``[rule] name = "<name>"``."""

    def deco(cls: type[T]) -> type[T]:
        cls.name = name  # type: ignore[attr-defined]
        _RULES[name] = cls
        return cls

    return deco


def register_plugin(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a Plugin available as ``[[plugins]] name = "<name>"``."""

    def deco(cls: type[T]) -> type[T]:
        cls.name = name  # type: ignore[attr-defined]
        _PLUGINS[name] = cls
        return cls

    return deco


def register_dataset(name: str, loader: Callable[..., Any]) -> None:
    """Add a data set loader ``loader(path=None, data_dir=None, download=False)``."""
    _EXTRA_DATASETS[name] = loader


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTIN_RULE_MODULES:
        try:
            importlib.import_module(f"bioplaus.rules.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"bioplaus.rules.{mod}":
                raise
    for mod in _BUILTIN_PLUGIN_MODULES:
        try:
            importlib.import_module(f"bioplaus.plugins.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"bioplaus.plugins.{mod}":
                raise
    for group, table in (("bioplaus.rules", _RULES), ("bioplaus.plugins", _PLUGINS)):
        for ep in entry_points(group=group):
            if ep.name not in table:
                table[ep.name] = ep.load()
                table[ep.name].name = ep.name
    for ep in entry_points(group="bioplaus.datasets"):
        _EXTRA_DATASETS.setdefault(ep.name, ep.load())


def rule_names() -> list[str]:
    _load_all()
    return sorted(_RULES)


def plugin_names() -> list[str]:
    _load_all()
    return sorted(_PLUGINS)


def backend_names() -> list[str]:
    from bioplaus.backends import BACKENDS

    return list(BACKENDS)


def dataset_names() -> list[str]:
    import neuro_data

    _load_all()
    return sorted(set(neuro_data.DATASETS) | set(_EXTRA_DATASETS))


def get_rule(name: str) -> Any:
    _load_all()
    if name not in _RULES:
        raise ConfigError(f"rule.name: unknown rule {name!r}; valid: {', '.join(rule_names())}")
    return _RULES[name]


def get_plugin(name: str) -> Any:
    _load_all()
    if name not in _PLUGINS:
        raise ConfigError(f"plugins.name: unknown plugin {name!r}; valid: {', '.join(plugin_names())}")
    return _PLUGINS[name]


def get_dataset_loader(name: str) -> Callable[..., Any] | None:
    """A third-party loader for ``name``, or None when neuro_data handles it."""
    _load_all()
    return _EXTRA_DATASETS.get(name)
