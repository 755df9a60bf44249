"""Plugins: typed callbacks on a rule's life cycle (as Avalanche's), all no-ops by default.

Every hook takes the rule first (Avalanche's plugins take the strategy first), then what
the moment adds: the task and its loader, the step or epoch and its metrics. `PluginList`
calls a hook on every plugin in order, one method per hook.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from bioplaus.config import PluginConfig, parse_options
from bioplaus.training.task import RuleContext, TaskInfo


@dataclass
class NoOptions:
    """A plugin or rule without options."""


class Rule(Protocol):
    """What hooks and the update sequence see of a learning rule (`LearningRule` is one)."""

    net: Any
    step: int
    plugins: PluginList

    def protected_layers(self) -> list[Any]: ...

    def probe_points(self) -> list[Any]: ...

    def probe_forward(self, x: Tensor) -> None: ...

    def mask_logits(self, logits: Tensor) -> Tensor: ...

    def optimizers(self) -> list[torch.optim.Optimizer]: ...

    @property
    def lr(self) -> float: ...


# Every hook a plugin may override, in the order of a run's life cycle; each takes the rule first.
HOOKS = ("setup", "before_task", "before_step", "after_backward", "after_update", "after_step", "after_epoch",
         "after_task", "close")


class Plugin:
    """Base class. Override the hooks you need; the rule and the kind call every hook."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    # Metric families the plugin emits through the run context (``RuleContext.log``).
    metrics: ClassVar[tuple[Any, ...]] = ()
    # Registered figures `bioplaus report` adds to those of the run's kind.
    figures: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.opts = self.parse_options(options or {}, where=f"plugins.{self.name}")

    @classmethod
    def parse_options(cls, options: dict[str, Any], where: str = "plugins") -> Any:
        """The checked ``Options`` (field types and ranges, then `check_options`)."""
        opts = parse_options(cls.Options, options, where, common=PluginConfig)
        cls.check_options(opts, where)
        return opts

    @classmethod
    def check_options(cls, opts: Any, where: str) -> None:
        """Cross-field and choice checks of parsed options (run when the config is read)."""

    def setup(self, rule: Rule, ctx: RuleContext) -> None:
        """Called once after the rule's own setup."""

    def before_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        """Before training on ``task`` (a plain run trains `TaskInfo()`, task 0 of 1)."""

    def after_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        """After training on ``task``, with that task's training loader."""

    def before_step(self, rule: Rule, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The batch a training step is about to get; return it, or another (replay adds
        stored samples). Rules that plan their own epoch (NoProp's blocks) skip this hook."""
        return x, y

    def after_backward(self, rule: Rule) -> None:
        """Gradients are in ``p.grad``; a plugin may rewrite them (HLOP, EWC)."""

    def after_update(self, rule: Rule) -> None:
        """The optimiser has stepped."""

    def after_step(self, rule: Rule, step: int, metrics: dict[str, float]) -> None:
        """Training step ``step`` finished with these metrics."""

    def after_epoch(self, rule: Rule, epoch: int, metrics: dict[str, float]) -> None:
        """An epoch finished (metrics include the evaluation)."""

    def close(self, rule: Rule) -> None:
        """The run ends (any status)."""


class PluginList:
    """Calls a hook on every plugin in order."""

    def __init__(self, plugins: list[Plugin] | None = None) -> None:
        self.plugins: list[Plugin] = list(plugins or [])

    def __iter__(self) -> Iterator[Plugin]:
        return iter(self.plugins)

    def __len__(self) -> int:
        return len(self.plugins)

    def append(self, p: Plugin) -> None:
        self.plugins.append(p)

    def find(self, name: str) -> Plugin | None:
        return next((p for p in self.plugins if p.name == name), None)

    def setup(self, rule: Rule, ctx: RuleContext) -> None:
        for p in self.plugins:
            p.setup(rule, ctx)

    def before_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        for p in self.plugins:
            p.before_task(rule, task, loader)

    def after_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        for p in self.plugins:
            p.after_task(rule, task, loader)

    def before_step(self, rule: Rule, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        for p in self.plugins:
            x, y = p.before_step(rule, x, y)
        return x, y

    def after_backward(self, rule: Rule) -> None:
        for p in self.plugins:
            p.after_backward(rule)

    def after_update(self, rule: Rule) -> None:
        for p in self.plugins:
            p.after_update(rule)

    def after_step(self, rule: Rule, step: int, metrics: dict[str, float]) -> None:
        for p in self.plugins:
            p.after_step(rule, step, metrics)

    def after_epoch(self, rule: Rule, epoch: int, metrics: dict[str, float]) -> None:
        for p in self.plugins:
            p.after_epoch(rule, epoch, metrics)

    def close(self, rule: Rule) -> None:
        for p in self.plugins:
            p.close(rule)
