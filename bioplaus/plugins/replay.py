"""Experience replay with a reservoir buffer (ER-reservoir: Chaudhry et al. 2019, "On tiny
episodic memories in continual learning"; Buzzega et al. 2020's ER in Mammoth).

A buffer M of ``size`` samples holds a uniform sample of every training sample seen so far
(reservoir sampling, `ReservoirBuffer`). Each training step gets its batch B_t extended by
n_r = round(ratio · |B_t|) samples drawn uniformly from M (once M is not empty), and the
rule trains on the union, so the loss (whatever the rule's is) becomes

    L = (1 / (|B_t| + n_r)) Σ_{(x, y) ∈ B_t ∪ B_M} ℓ(x, y)

After the step the samples of B_t are offered to the reservoir. Replay acts on the batch,
not on gradients: it works with every rule that trains through ``train_step`` (backprop,
BPTT, feedback alignment, CCL; not NoProp's own block plans). In the task-incremental
setting every replayed sample keeps its own task's head (a per-sample mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bioplaus.config import bounded
from bioplaus.device import generator as make_generator
from bioplaus.errors import ConfigError
from bioplaus.metrics import Metric
from bioplaus.plugins.base import Plugin, Rule, RuleContext, TaskInfo
from bioplaus.plugins.memory import ReservoirBuffer, head_mask
from bioplaus.registry import register_plugin


@register_plugin("replay")
class Replay(Plugin):
    """Reservoir buffer of ``size`` samples; each batch gets ``ratio`` x its size of them."""

    metrics = (Metric("replay/*", description="buffer fill and samples seen, after each task"),)

    @dataclass
    class Options:
        size: int = bounded(500, ge=1)  # buffer size in samples (over all tasks)
        ratio: float = bounded(1.0, gt=0)  # replayed samples per current sample in a batch
        seed_offset: int = 8191  # the buffer's random stream: run seed + this

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        """A buffer smaller than one task (bioplaus.conformance)."""
        return {"plugin": {"size": 64, "ratio": 0.5}}

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.task = TaskInfo()
        self.n_current = 0
        self.saved_mask: Any = None
        self.replaced = False

    def setup(self, rule: Rule, ctx: RuleContext) -> None:
        self.rule = rule
        self.ctx = ctx
        self.n_classes = ctx.n_classes
        self.buffer = ReservoirBuffer(self.opts.size, make_generator(ctx.seed + self.opts.seed_offset))
        self.task = ctx.stream or TaskInfo()

    def before_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        self.task = task
        if task.setting == "task" and type(rule).mask_logits.__qualname__ != "LearningRule.mask_logits":
            raise ConfigError(
                f"plugins.replay: rule {type(rule).__name__} masks its heads its own way, so replayed "
                "samples of older tasks cannot keep their heads; use setting = 'domain' or 'class'"
            )

    def before_step(self, rule: Rule, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self.x_cur, self.y_cur = x, y
        self.n_current = len(x)
        self.replaced = False
        n_r = int(round(self.opts.ratio * len(x)))
        if len(self.buffer) == 0 or n_r == 0:
            return x, y
        xm, ym, tm = self.buffer.sample(n_r)
        mask = head_mask(self.task, torch.cat([torch.full((len(x),), self.task.index, device=tm.device), tm]),
                         self.n_classes)
        if mask is not None:
            self.saved_mask = getattr(rule, "active_classes", None)
            rule.active_classes = mask  # type: ignore[attr-defined]
            self.replaced = True
        return torch.cat([x, xm.to(x.dtype)]), torch.cat([y, ym.to(y.dtype)])

    def after_step(self, rule: Rule, step: int, metrics: dict[str, float]) -> None:
        if self.replaced:
            rule.active_classes = self.saved_mask  # type: ignore[attr-defined]
            self.replaced = False
        if self.n_current:
            self.buffer.add(self.x_cur, self.y_cur, self.task.index)
            self.n_current = 0
            self.x_cur = self.y_cur = None

    def after_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        self.ctx.log(**{"replay/stored": float(len(self.buffer)), "replay/seen": float(self.buffer.seen)})
