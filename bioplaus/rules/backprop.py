"""Backpropagation (rate) and backpropagation through time with surrogate gradients (spiking)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from bioplaus.registry import register_rule
from bioplaus.rules.base import LearningRule, accuracy


@register_rule("backprop")
class Backprop(LearningRule):
    """End-to-end gradient of the cross-entropy of the readout logits.

    Rate: L = CE(W_L f(... f(W_1 x)), y). Spiking: the same through the T-step LIF scan, the
    Heaviside replaced by its surrogate derivative in the backward pass (BPTT).
    """

    def train_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        self.net.train()
        logits = self.mask_logits(self.net(x))
        loss = F.cross_entropy(logits, y)
        self.apply_update(loss)
        return {"loss": float(loss.detach()), "acc": accuracy(logits.detach(), y)}
