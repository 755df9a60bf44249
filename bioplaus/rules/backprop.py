"""Backpropagation (rate) and backpropagation through time with surrogate gradients (spiking)."""

from __future__ import annotations

from typing import final

import torch.nn.functional as F
from torch import Tensor

from bioplaus.registry import register_rule
from bioplaus.rules.base import LearningRule, accuracy


def cross_entropy_step(rule: LearningRule, x: Tensor, y: Tensor) -> dict[str, float]:
    """One step on the cross-entropy of the readout logits, through the model's own backward
    (backprop; feedback alignment, whose synapses send the error through fixed matrices)."""
    rule.net.train()
    logits = rule.mask_logits(rule.net(x))
    loss = F.cross_entropy(logits, y)
    rule.apply_update(loss)
    return {"loss": float(loss.detach()), "acc": accuracy(logits.detach(), y)}


@register_rule("backprop")
@final
class Backprop(LearningRule):
    """End-to-end gradient of the cross-entropy of the readout logits.

    Rate: L = CE(W_L f(... f(W_1 x)), y). Spiking: the same through the T-step LIF scan, the
    Heaviside replaced by its surrogate derivative in the backward pass (BPTT).
    """

    def train_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        return cross_entropy_step(self, x, y)
