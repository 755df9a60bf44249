"""Plugins: callbacks on a rule's life cycle (Avalanche-style), all no-ops by default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bioplaus.config import parse_options

if TYPE_CHECKING:
    from bioplaus.rules.base import LearningRule, RuleContext


@dataclass
class NoOptions:
    """A plugin or rule without options."""


class Plugin:
    """Base class. Override the hooks you need; the rule and the trainer call every hook."""

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
        opts = parse_options(cls.Options, options, where)
        cls.check_options(opts, where)
        return opts

    @classmethod
    def check_options(cls, opts: Any, where: str) -> None:
        """Cross-field and choice checks of parsed options (run when the config is read)."""

    def setup(self, rule: LearningRule, ctx: RuleContext) -> None:
        """Called once after the rule's own setup."""

    def before_task(self, task_id: int, loader: Any) -> None:
        """Before training on task ``task_id`` (continual learning); plain runs use task 0."""

    def after_task(self, task_id: int, loader: Any) -> None:
        """After training on task ``task_id``, with that task's training loader."""

    def after_backward(self, rule: LearningRule) -> None:
        """Gradients are in ``p.grad``; a plugin may rewrite them (HLOP, EWC)."""

    def after_update(self, rule: LearningRule) -> None:
        """The optimiser has stepped."""

    def after_step(self, step: int, metrics: dict[str, float]) -> None:
        """A training step finished with these metrics."""

    def after_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """An epoch finished (metrics include the evaluation)."""

    def close(self) -> None:
        """The run ends (any status)."""


class PluginList:
    """Calls a hook on every plugin in order."""

    def __init__(self, plugins: list[Plugin] | None = None) -> None:
        self.plugins: list[Plugin] = list(plugins or [])

    def __iter__(self):  # noqa: ANN204
        return iter(self.plugins)

    def __len__(self) -> int:
        return len(self.plugins)

    def append(self, p: Plugin) -> None:
        self.plugins.append(p)

    def find(self, name: str) -> Plugin | None:
        return next((p for p in self.plugins if p.name == name), None)

    def __getattr__(self, hook: str):  # noqa: ANN204
        if hook.startswith("_") or not hasattr(Plugin, hook):
            raise AttributeError(hook)

        def call(*args: Any, **kwargs: Any) -> None:
            for p in self.plugins:
                getattr(p, hook)(*args, **kwargs)

        return call
