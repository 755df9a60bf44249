"""Synaptic intelligence (SI; Zenke, Poole & Ganguli, ICML 2017).

Every parameter θ_k accumulates, over the steps t of task μ, the path integral of the task
loss's gradient g_k = ∂L_μ/∂θ_k (without the penalty, as the paper's code) along the
update Δθ_k(t) the optimiser actually made:

    ω_k^μ = Σ_t -g_k(t) Δθ_k(t)

After the task its importance joins Ω, normalised by how far the parameter moved,

    Ω_k <- Ω_k + ω_k^μ / ((Δ_k^μ)² + ξ),      Δ_k^μ = θ_k(end of μ) - θ_k(start of μ),

θ* <- θ(end of μ), ω <- 0, and later tasks learn with the surrogate loss
L~ = L + c Σ_k Ω_k (θ*_k - θ_k)², i.e. the gradient gets 2 c Ω ⊙ (θ - θ*), capped per
element at 1/η (as EWC's, ``cap``) so a stiff element does not overshoot its anchor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bioplaus.config import bounded
from bioplaus.metrics import Metric
from bioplaus.plugins.base import Plugin, Rule, RuleContext, TaskInfo
from bioplaus.plugins.memory import layer_params, quadratic_pull_
from bioplaus.registry import register_plugin


@register_plugin("si")
class SI(Plugin):
    """Path-integral importance ω -> Ω after each task; quadratic penalty c Ω (θ - θ*)²."""

    metrics = (Metric("si/*", description="importance Ω statistics after each task"),)

    @dataclass
    class Options:
        c: float = bounded(0.1, ge=0)  # strength of the penalty (Zenke et al.: 0.1 on permuted MNIST)
        xi: float = bounded(1e-3, gt=0)  # ξ, damping of the normalisation
        cap: bool = True  # 2cΩ capped at 1/η per element

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        """The paper's permuted-MNIST strength (bioplaus.conformance)."""
        return {"plugin": {"c": 0.1}}

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.omega: list[Tensor] = []
        self.big_omega: list[Tensor] | None = None
        self.anchor: list[Tensor] | None = None

    def setup(self, rule: Rule, ctx: RuleContext) -> None:
        self.rule = rule
        self.ctx = ctx
        self.params = layer_params(rule)
        self.omega = [torch.zeros_like(p) for p in self.params]
        self.start = [p.detach().clone() for p in self.params]
        self.grad: list[Tensor] = []
        self.before: list[Tensor] = []

    def before_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        self.start = [p.detach().clone() for p in self.params]
        for w in self.omega:
            w.zero_()

    def after_backward(self, rule: Rule) -> None:
        # the task loss's gradient (before the penalty, and before later plugins rewrite it)
        self.grad = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in self.params]
        self.before = [p.detach().clone() for p in self.params]
        if self.big_omega is None or self.anchor is None or self.opts.c == 0:
            return
        cap = 1.0 / rule.lr if (self.opts.cap and rule.lr > 0) else float("inf")
        quadratic_pull_(self.params, [2.0 * self.opts.c * o for o in self.big_omega], self.anchor, cap)

    def after_update(self, rule: Rule) -> None:
        if not self.before:
            return
        with torch.no_grad():
            for w, g, p, b in zip(self.omega, self.grad, self.params, self.before):
                w.sub_(g * (p - b))
        self.before, self.grad = [], []

    def after_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        with torch.no_grad():
            add = [w / ((p - s) ** 2 + self.opts.xi) for w, p, s in zip(self.omega, self.params, self.start)]
            self.big_omega = add if self.big_omega is None else [o + a for o, a in zip(self.big_omega, add)]
            self.anchor = [p.detach().clone() for p in self.params]
        flat = torch.cat([o.flatten() for o in self.big_omega])
        self.ctx.log(**{"si/omega_mean": float(flat.mean()), "si/omega_max": float(flat.max())})
