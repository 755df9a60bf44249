"""What the memory- and loss-based continual-learning plugins share (replay, A-GEM, SI, LwF, EWC).

- `layer_params`: the parameters plugins act on (those of the rule's declared layers).
- `ReservoirBuffer`: a fixed-size uniform sample of every item offered so far (Vitter's
  algorithm R): the n-th item (0-based) replaces slot j ~ U{0..n} when j < size.
- `head_mask`: per-sample heads in the task-incremental setting (a boolean [B, C] mask).
- `loss_grads`: the gradient of a loss on stored samples through the net's own backward
  (backprop; feedback alignment's fixed feedback matrices; the forward net of CCL).
- `add_grads_`, `quadratic_pull_`: write a gradient or a capped quadratic penalty's into ``p.grad``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from bioplaus.plugins.base import Rule, TaskInfo


def layer_params(rule: Rule) -> list[Tensor]:
    """Trainable parameters of the rule's declared layers (weights and biases), in order."""
    return [p for la in rule.protected_layers() for p in la.parameters() if p.requires_grad]


class ReservoirBuffer:
    """Reservoir sampling (Vitter 1985, algorithm R) of ``(x, y, task)`` rows, ``size`` slots.

    After n offers every item offered is in the buffer with probability min(1, size / n).
    """

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size = int(size)
        self.gen = generator
        self.seen = 0
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.t: Tensor | None = None

    def __len__(self) -> int:
        return min(self.seen, self.size)

    def add(self, x: Tensor, y: Tensor, task: int) -> None:
        """Offer every row of the batch, in order."""
        x, y = x.detach(), y.detach()
        if self.x is None:
            self.x = torch.zeros((self.size, *x.shape[1:]), dtype=x.dtype, device=x.device)
            self.y = torch.zeros(self.size, dtype=y.dtype, device=y.device)
            self.t = torch.zeros(self.size, dtype=torch.long, device=y.device)
        assert self.y is not None and self.t is not None
        for r in range(len(x)):
            if self.seen < self.size:
                j = self.seen
            else:
                j = int(torch.randint(0, self.seen + 1, (1,), generator=self.gen))
            if j < self.size:
                self.x[j] = x[r]
                self.y[j] = y[r]
                self.t[j] = task
            self.seen += 1

    def sample(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """``n`` stored rows drawn uniformly without replacement (all of them if fewer)."""
        assert self.x is not None and self.y is not None and self.t is not None
        have = len(self)
        idx = torch.randperm(have, generator=self.gen)[: min(n, have)].to(self.x.device)
        return self.x[idx], self.y[idx], self.t[idx]


def head_mask(task: TaskInfo, tasks: Tensor, n_classes: int) -> Tensor | None:
    """Boolean ``[B, C]``: row b allows the classes of task ``tasks[b]`` (task-incremental
    setting only; None in the domain and class-incremental settings: one shared head)."""
    if task.setting != "task" or not task.task_classes:
        return None
    table = torch.zeros(len(task.task_classes), n_classes, dtype=torch.bool)
    for k, cls in enumerate(task.task_classes):
        table[k, list(cls)] = True
    return table.to(tasks.device)[tasks]


def masked_logits(rule: Any, x: Tensor, mask: Tensor | None) -> Tensor:
    """The rule's logits of ``x`` with the per-sample heads ``mask`` (None: the rule's current mask)."""
    if mask is None:
        return rule.mask_logits(rule.net(x))
    saved = rule.active_classes
    rule.active_classes = mask
    try:
        return rule.mask_logits(rule.net(x))
    finally:
        rule.active_classes = saved


def loss_grads(params: Sequence[Tensor], loss_fn: Callable[[], Tensor]) -> list[Tensor]:
    """∂ loss_fn() / ∂ params (zeros where a parameter takes no part), net in training mode."""
    loss = loss_fn()
    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]


def add_grads_(params: Sequence[Tensor], grads: Sequence[Tensor], scale: float = 1.0, keep: float = 1.0) -> None:
    """p.grad <- keep · p.grad + scale · g for every parameter (p.grad None counts as 0)."""
    with torch.no_grad():
        for p, g in zip(params, grads):
            if p.grad is None:
                p.grad = scale * g if scale != 1.0 else g.clone()
            else:
                if keep != 1.0:
                    p.grad.mul_(keep)
                p.grad.add_(g, alpha=scale)


def quadratic_pull_(params: Sequence[Tensor], strength: Sequence[Tensor], anchor: Sequence[Tensor], cap: float) -> None:
    """p.grad += min(s, cap) ⊙ (p - p*): the gradient of ½ Σ s (θ - θ*)², each element's
    stiffness capped (cap = 1/η: one SGD step returns a capped element exactly to θ*)."""
    with torch.no_grad():
        for p, s, a in zip(params, strength, anchor):
            if not p.requires_grad:
                continue
            c = s.clamp(max=cap)
            pen = c * (p - a)
            if p.grad is None:
                p.grad = pen
            else:
                p.grad.add_(pen)
