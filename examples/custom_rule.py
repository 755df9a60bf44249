"""A learning rule of your own, registered in the script and run like a built-in.

    python examples/custom_rule.py [OUT_DIR]

The rule is the delta rule on the readout only (a random, fixed hidden layer: an "extreme
learning machine"): the hidden weights never change, the output weights follow
    ΔW_out = -η (softmax(z) - onehot(y)) h^T / B,
which is exactly the gradient of the cross-entropy with respect to W_out, so we let
autograd compute it on the output layer alone (the hidden activity is detached).
"""

import sys

import torch
import torch.nn.functional as F

import bioplaus
from bioplaus.rules.base import LearningRule, accuracy


@bioplaus.register_rule("readout_delta")
class ReadoutDelta(LearningRule):
    """Train the output layer only; every hidden layer keeps its random weights."""

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.net.output_layer.parameters())

    def protected_layers(self) -> list:
        return [self.net.output_layer]  # the only layer a plugin may act on

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.net.forward_detached(x)  # fills every layer state; no gradient crosses a layer
        logits = self.mask_logits(self.net.readout())
        loss = F.cross_entropy(logits, y)
        self.apply_update(loss)
        return {"loss": float(loss.detach()), "acc": accuracy(logits.detach(), y)}


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "runs"
    res = bioplaus.run(
        {"data": {"dataset": "digits"}, "network": {"hidden": [512], "activation": "relu"},
         "rule": {"name": "readout_delta", "lr": 0.5}, "train": {"epochs": 5}},
        out=f"{out}/readout_delta.h5", report=False, progress=False,
    )
    print(res.summary())
