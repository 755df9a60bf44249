"""Elastic weight consolidation (Kirkpatrick et al. 2017), online form (Schwarz et al. 2018).

After task t the diagonal empirical Fisher of the parameters θ is estimated from per-sample
gradients of the rule's classification loss (the logits the rule predicts, masked to the
task's classes in the task-incremental setting),

    F_t = (1/N) Σ_n (∂ CE(f(x_n), y_n) / ∂θ)²,      F <- γ F + F_t,      θ* <- θ_t,

and while later tasks are learned the gradient of every parameter gets the penalty's,

    g <- g + c ⊙ (θ - θ*),     c = min(λ F, 1/η)

(the gradient of λ/2 Σ F (θ - θ*)²). The cap 1/η (η the learning rate) keeps a stiff
element from overshooting its anchor and oscillating: at the cap one SGD step returns it
exactly to θ*. The penalty goes through ``after_backward``, so it works with any rule
that steps its optimiser through ``LearningRule.apply_update``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from bioplaus.config import bounded
from bioplaus.metrics import Metric
from bioplaus.plugins.base import Plugin, Rule, RuleContext, TaskInfo
from bioplaus.plugins.memory import layer_params, quadratic_pull_
from bioplaus.registry import register_plugin


@register_plugin("ewc")
class EWC(Plugin):
    """Quadratic penalty anchoring parameters important to old tasks (diagonal Fisher).

    Acts on the parameters of the layers the rule declares (``protected_layers``); the
    Fisher comes from the rule's classifier (``rule.net`` and its cross-entropy).
    """

    metrics = (Metric("ewc/*", description="diagonal Fisher statistics after each task"),)

    @dataclass
    class Options:
        lam: float = bounded(100.0, ge=0)  # λ, strength of the penalty
        gamma: float = bounded(1.0, ge=0, le=1)  # decay of the accumulated Fisher (1 = sum over tasks)
        samples: int = bounded(200, ge=1)  # samples of each task for the Fisher estimate
        cap: bool = True  # c = min(λF, 1/η)

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.fisher: list[torch.Tensor] | None = None
        self.anchor: list[torch.Tensor] | None = None

    def setup(self, rule: Rule, ctx: RuleContext) -> None:
        self.rule = rule
        self.ctx = ctx
        self.params = layer_params(rule)

    def estimate_fisher(self, loader: Any) -> list[torch.Tensor]:
        """Diagonal empirical Fisher from per-sample gradients on ``samples`` samples."""
        net = self.rule.net
        was = net.training
        net.eval()
        fisher = [torch.zeros_like(p) for p in self.params]
        # parameters frozen since setup (continual.freeze_norm) take no part
        live = [i for i, p in enumerate(self.params) if p.requires_grad]
        n = 0
        src = loader.subset(self.opts.samples) if hasattr(loader, "subset") else loader
        for x, y in src:
            for j in range(len(x)):
                if n >= self.opts.samples:
                    break
                logits = self.rule.mask_logits(net(x[j : j + 1]))
                loss = F.cross_entropy(logits, y[j : j + 1])
                grads = torch.autograd.grad(loss, [self.params[i] for i in live], allow_unused=True)
                for i, g in zip(live, grads):
                    if g is not None:
                        fisher[i].add_(g.detach() ** 2)
                n += 1
            if n >= self.opts.samples:
                break
        net.train(was)
        return [f / max(n, 1) for f in fisher]

    def after_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        ft = self.estimate_fisher(loader)
        if self.fisher is None:
            self.fisher = ft
        else:
            self.fisher = [self.opts.gamma * f + g for f, g in zip(self.fisher, ft)]
        self.anchor = [p.detach().clone() for p in self.params]
        mean = float(torch.cat([f.flatten() for f in self.fisher]).mean())
        mx = float(max(f.max() for f in self.fisher))
        self.ctx.log(**{"ewc/fisher_mean": mean, "ewc/fisher_max": mx})

    def after_backward(self, rule: Rule) -> None:
        if self.fisher is None or self.anchor is None or self.opts.lam == 0:
            return
        cap = 1.0 / rule.lr if (self.opts.cap and rule.lr > 0) else float("inf")
        quadratic_pull_(self.params, [self.opts.lam * f for f in self.fisher], self.anchor, cap)
