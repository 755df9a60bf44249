"""Learning without forgetting (LwF; Li & Hoiem, ECCV 2016 / TPAMI 2017), in Avalanche's form.

After each task the net's parameters are copied (the old model f_old, frozen). While a later task is
learned, each batch x adds a distillation term on the logits of the classes seen so far
(A: the union of the earlier tasks' classes; every class on a permuted stream):

    q = softmax(f_old(x)_A / T),   p = softmax(f(x)_A / T)
    L = L_rule + λ · KL(q ‖ p) = L_rule + λ · (1/B) Σ_b Σ_{c∈A} q_bc (log q_bc - log p_bc)

(λ Avalanche's ``alpha``, T its ``temperature``; Li & Hoiem write -Σ q log p, which has the
same gradient in θ). The term's gradient comes from a second forward of the batch through
the net's own backward (backprop; feedback alignment's fixed feedback path; CCL's forward
net) and is added to the rule's gradient in ``after_backward``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bioplaus.config import bounded
from bioplaus.metrics import Metric
from bioplaus.plugins.base import Plugin, Rule, RuleContext, TaskInfo
from bioplaus.plugins.memory import add_grads_, layer_params, loss_grads
from bioplaus.registry import register_plugin


def distillation_loss(logits: Tensor, old_logits: Tensor, classes: Tensor, temperature: float) -> Tensor:
    """KL(softmax(old/T) ‖ softmax(new/T)) over ``classes``, mean over the batch."""
    log_p = F.log_softmax(logits[:, classes] / temperature, dim=1)
    q = F.softmax(old_logits[:, classes] / temperature, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean")


@register_plugin("lwf")
class LwF(Plugin):
    """Distillation of the previous model's soft outputs on the current batch."""

    metrics = (Metric("lwf/*", description="distillation loss of the last batch, after each task"),)

    @dataclass
    class Options:
        lam: float = bounded(1.0, ge=0)  # λ (Avalanche: alpha)
        temperature: float = bounded(2.0, gt=0)  # T

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        """Li & Hoiem's temperature (bioplaus.conformance)."""
        return {"plugin": {"lam": 1.0, "temperature": 2.0}}

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.old: Any = None
        self.classes: Tensor | None = None
        self.x: Tensor | None = None
        self.last = 0.0

    def setup(self, rule: Rule, ctx: RuleContext) -> None:
        self.rule = rule
        self.ctx = ctx
        self.n_classes = ctx.n_classes
        self.params = layer_params(rule)

    def before_step(self, rule: Rule, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self.x = x
        return x, y

    @torch.no_grad()
    def targets(self, x: Tensor) -> Tensor:
        """The old model's logits of ``x`` (its soft targets are their softmax at T): the net
        run in eval mode on the parameters and buffers saved after the last task."""
        net = self.rule.net
        was = net.training
        net.eval()
        try:
            return torch.func.functional_call(net, self.old, (x,))
        finally:
            net.train(was)

    def after_backward(self, rule: Rule) -> None:
        if self.old is None or self.x is None or self.opts.lam == 0:
            return
        x, classes = self.x, self.classes
        assert classes is not None
        old = self.targets(x)
        losses: list[float] = []

        def loss() -> Tensor:
            d = distillation_loss(rule.net(x), old, classes, self.opts.temperature)
            losses.append(float(d.detach()))
            return self.opts.lam * d

        add_grads_(self.params, loss_grads(self.params, loss))
        self.last = losses[0]
        self.x = None

    def after_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        # parameters and buffers only: a deep copy of the net would copy its layer states too
        self.old = {k: v.detach().clone() for k, v in rule.net.state_dict().items()}
        seen = sorted({c for k in range(task.index + 1) for c in (task.task_classes[k] if task.task_classes else ())})
        dev = next(iter(rule.net.parameters())).device
        self.classes = torch.tensor(seen if seen else range(self.n_classes), dtype=torch.long, device=dev)
        self.ctx.log(**{"lwf/distill_loss": self.last, "lwf/classes": float(len(self.classes))})
