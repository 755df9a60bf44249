"""What a kind tells a rule and its plugins: the run's shape (`RuleContext`) and the task (`TaskInfo`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bioplaus.config import ExperimentConfig, NetworkConfig


@dataclass(frozen=True)
class TaskInfo:
    """One task of a task stream; a plain run trains `TaskInfo()`, task 0 of 1.

    ``setting`` is the stream's (task | domain; "" outside a stream), ``mode`` how the
    tasks are trained (sequential | joint), ``task_classes`` the classes of every task in
    stream order.
    """

    index: int = 0
    n_tasks: int = 1
    setting: str = ""
    mode: str = "sequential"
    task_classes: tuple[tuple[int, ...], ...] = ()

    @property
    def classes(self) -> tuple[int, ...]:
        """The classes of this task (empty when the stream does not say)."""
        return self.task_classes[self.index] if self.index < len(self.task_classes) else ()

    def at(self, index: int) -> TaskInfo:
        """Task ``index`` of the same stream."""
        return replace(self, index=index)


@dataclass
class RuleContext:
    """What an experiment tells a rule (and its plugins) at setup.

    ``run`` is the `RunContext` metrics and arrays are emitted through (None outside a
    run: emission is then dropped). ``stream`` is the first task of the task stream the
    rule will train on (None: one task, no stream).
    """

    n_classes: int
    input_shape: tuple[int, ...] = ()
    steps_per_epoch: int = 1
    total_steps: int = 0
    seed: int = 0
    network: NetworkConfig | None = None
    run: Any = None
    stream: TaskInfo | None = None

    @classmethod
    def of(
        cls,
        cfg: ExperimentConfig,
        steps_per_epoch: int,
        total_steps: int,
        n_classes: int,
        input_shape: tuple[int, ...] = (),
        run: Any = None,
    ) -> RuleContext:
        """The context for ``cfg``'s seed and ``[network]``."""
        return cls(n_classes, tuple(input_shape), steps_per_epoch, total_steps, cfg.seed, cfg.network, run)

    def log(self, **values: float) -> None:
        """Metrics at the run's current step (dropped outside a run)."""
        if self.run is not None:
            self.run.log(**values)

    def log_array(self, path: str, array: Any, **attrs: Any) -> None:
        if self.run is not None:
            self.run.log_array(path, array, **attrs)
