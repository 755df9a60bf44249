"""Averaged gradient episodic memory (A-GEM; Chaudhry, Ranzato, Rohrbach & Elhoseiny, ICLR 2019).

After each task ``per_task`` of its training samples join an episodic memory M. While a
later task is learned, each step draws a reference batch of ``sample_size`` samples from M
and computes the reference gradient g_ref of the loss on it; the step's gradient g (all
parameters of the rule's layers as one vector) is replaced by

    g~ = g - (gᵀ g_ref / g_refᵀ g_ref) g_ref    if gᵀ g_ref < 0
    g~ = g                                      otherwise

so that, to first order, the step does not increase the average loss on the memory. g_ref
is the gradient of the cross-entropy of the rule's logits through the net's own backward
(backprop; feedback alignment's fixed feedback path; CCL's forward net), each memory sample
under its own task's head in the task-incremental setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bioplaus.config import bounded
from bioplaus.device import generator as make_generator
from bioplaus.metrics import Metric
from bioplaus.plugins.base import Plugin, Rule, RuleContext, TaskInfo
from bioplaus.plugins.memory import head_mask, layer_params, loss_grads, masked_logits
from bioplaus.registry import register_plugin


def agem_project(g: Tensor, g_ref: Tensor) -> tuple[Tensor, bool]:
    """A-GEM's projection of the flat gradient ``g`` against ``g_ref``; (g~, whether projected)."""
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g, False
    return g - (dot / torch.dot(g_ref, g_ref).clamp_min(1e-30)) * g_ref, True


@register_plugin("agem")
class AGEM(Plugin):
    """Episodic memory of ``per_task`` samples per task; gradients projected against the memory's."""

    metrics = (Metric("agem/*", description="memory size and the fraction of projected steps, after each task"),)

    @dataclass
    class Options:
        per_task: int = bounded(250, ge=1)  # samples of each task kept (Avalanche: patterns_per_exp)
        sample_size: int = bounded(256, ge=1)  # reference batch drawn from the memory each step
        seed_offset: int = 16381  # the reference batches' random stream: run seed + this

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        """A small memory (bioplaus.conformance)."""
        return {"plugin": {"per_task": 32, "sample_size": 16}}

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.mem_x: list[Tensor] = []
        self.mem_y: list[Tensor] = []
        self.mem_t: list[Tensor] = []
        self.steps = 0
        self.projected = 0

    def setup(self, rule: Rule, ctx: RuleContext) -> None:
        self.rule = rule
        self.ctx = ctx
        self.n_classes = ctx.n_classes
        self.params = layer_params(rule)
        self.gen = make_generator(ctx.seed + self.opts.seed_offset)
        self.task = ctx.stream or TaskInfo()

    def before_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        self.task = task
        self.steps = self.projected = 0

    def reference_batch(self) -> tuple[Tensor, Tensor, Tensor]:
        """``sample_size`` memory rows drawn uniformly without replacement."""
        x, y, t = torch.cat(self.mem_x), torch.cat(self.mem_y), torch.cat(self.mem_t)
        idx = torch.randperm(len(x), generator=self.gen)[: self.opts.sample_size].to(x.device)
        return x[idx], y[idx], t[idx]

    def reference_grad(self, rule: Rule, x: Tensor, y: Tensor, t: Tensor) -> list[Tensor]:
        """∂ CE(logits(x), y) / ∂θ on a memory batch, each row under its task's head."""
        mask = head_mask(self.task, t, self.n_classes)
        return loss_grads(self.params, lambda: F.cross_entropy(masked_logits(rule, x, mask), y))

    def after_backward(self, rule: Rule) -> None:
        if not self.mem_x:
            return
        g_ref = torch.cat([g.flatten() for g in self.reference_grad(rule, *self.reference_batch())])
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        g = torch.cat([gr.flatten() for gr in grads])
        g_new, hit = agem_project(g, g_ref)
        self.steps += 1
        if not hit:
            return
        self.projected += 1
        with torch.no_grad():
            k = 0
            for p in self.params:
                n = p.numel()
                p.grad = g_new[k : k + n].view_as(p).clone()
                k += n

    def after_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        xs, ys, n = [], [], 0
        src = loader.subset(self.opts.per_task) if hasattr(loader, "subset") else loader
        for x, y in src:
            take = min(len(x), self.opts.per_task - n)
            xs.append(x[:take].detach())
            ys.append(y[:take].detach())
            n += take
            if n >= self.opts.per_task:
                break
        if n:
            self.mem_x.append(torch.cat(xs))
            self.mem_y.append(torch.cat(ys))
            self.mem_t.append(torch.full((n,), task.index, dtype=torch.long, device=self.mem_y[-1].device))
        self.ctx.log(**{
            "agem/memory": float(sum(len(m) for m in self.mem_x)),
            "agem/projected_fraction": self.projected / self.steps if self.steps else 0.0,
        })
