"""Feedback alignment (FA; Lillicrap et al. 2016) and direct feedback alignment (DFA; Nøkland 2016).

FA: the forward pass is unchanged (W·x); the error is sent down through a fixed random
matrix B of W's shape instead of Wᵀ::

    δ_{l-1} = (B_lᵀ-path of δ_l) ⊙ f'(u_{l-1}),     ΔW_l ∝ -δ_l x_lᵀ

implemented as the layer's ``synapse_fn``: an autograd function whose backward returns
``grad_x = g · B`` (Linear) or the transposed convolution with B (Conv2d) and the usual
``grad_W = gᵀ x``. On the spiking backend the same synapse runs inside BPTT.

DFA: every hidden layer receives the output error e = ∂L/∂logits = (softmax - onehot)/N
directly through its own fixed random matrix B_l (C x n_l)::

    δ_l = (e B_l) ⊙ f'(u_l),     ΔW_l ∝ -δ_l x_lᵀ,     output layer: the delta rule.

implemented as a surrogate loss Σ_l ⟨rate(y_l), sg(e B_l)⟩ on detached layer inputs, whose
gradient is exactly that update (spiking: the error reaches every time step through the
surrogate of the layer's own LIF scan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bioplaus.config import SEED_MAX, bounded
from bioplaus.device import generator as make_generator
from bioplaus.metrics import Metric
from bioplaus.nets import Layer, Net
from bioplaus.registry import register_rule
from bioplaus.rules.backprop import cross_entropy_step
from bioplaus.rules.base import LearningRule, RuleContext, accuracy


@dataclass
class FAOptions:
    """Options of FA / DFA (keys of ``[rule]``)."""

    feedback_scale: float = bounded(1.0, ge=0)  # B ~ U(-s/√fan, s/√fan)
    feedback_seed: int | None = bounded(None, ge=0, le=SEED_MAX)  # None = experiment seed


def _random_like(shape: tuple[int, ...], fan: int, scale: float, gen: torch.Generator) -> Tensor:
    bound = scale / math.sqrt(max(fan, 1))
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


class _FALinear(torch.autograd.Function):
    """y = x Wᵀ (+ b); backward: grad_x = g B, grad_W = gᵀ x."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b_fb: Tensor, bias: Tensor | None) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(x, b_fb)
        ctx.has_bias = bias is not None
        return F.linear(x, w, bias)

    @staticmethod
    def backward(ctx, g: Tensor):  # noqa: ANN001, ANN205
        x, b_fb = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])
        x2 = x.reshape(-1, x.shape[-1])
        grad_x = (g2 @ b_fb).reshape(x.shape) if ctx.needs_input_grad[0] else None
        grad_w = g2.T @ x2 if ctx.needs_input_grad[1] else None
        grad_b = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return grad_x, grad_w, None, grad_b


class _FAConv(torch.autograd.Function):
    """y = conv(x, W); backward: grad_x = conv_transpose(g, B), grad_W as usual."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b_fb: Tensor, bias: Tensor | None, stride: Any, padding: Any) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(x, b_fb)
        ctx.conf = (stride, padding, bias is not None, w.shape)
        return F.conv2d(x, w, bias, stride=stride, padding=padding)

    @staticmethod
    def backward(ctx, g: Tensor):  # noqa: ANN001, ANN205
        x, b_fb = ctx.saved_tensors
        stride, padding, has_bias, wshape = ctx.conf
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, b_fb, g, stride=stride, padding=padding)
        if ctx.needs_input_grad[1]:
            grad_w = torch.nn.grad.conv2d_weight(x, wshape, g, stride=stride, padding=padding)
        if has_bias and ctx.needs_input_grad[3]:
            grad_b = g.sum((0, 2, 3))
        return grad_x, grad_w, None, grad_b, None, None


class FASynapse:
    """A ``synapse_fn``: forward W·x through ``layer.synapse``, backward through fixed ``b_fb``.

    A plain callable object rather than a closure so that ``copy.deepcopy`` of a net (or of a
    rule) rebinds it to the copied synapse.
    """

    def __init__(self, synapse: nn.Module, b_fb: Tensor) -> None:
        self.synapse = synapse
        self.b_fb = b_fb

    def __call__(self, x: Tensor) -> Tensor:
        syn = self.synapse
        if isinstance(syn, nn.Conv2d):
            return _FAConv.apply(x, syn.weight, self.b_fb, syn.bias, syn.stride, syn.padding)
        return _FALinear.apply(x, syn.weight, self.b_fb, syn.bias)


def fa_synapse(layer: Layer, b_fb: Tensor) -> FASynapse:
    """A ``synapse_fn`` for ``layer``: forward W·x, backward through the fixed ``b_fb``."""
    return FASynapse(layer.synapse, b_fb)


class FeedbackWeights(nn.Module):
    """Fixed random feedback matrices, kept as buffers so they are saved with the run."""

    def __init__(self, mats: list[Tensor]) -> None:
        super().__init__()
        for k, m in enumerate(mats):
            self.register_buffer(f"B{k}", m)

    def mats(self) -> list[Tensor]:
        return list(self.buffers())


ALIGNMENT = Metric("layer*/alignment", "max", description="cosine between W and its feedback B")


@register_rule("fa")
@final
class FeedbackAlignment(LearningRule):
    """End-to-end cross-entropy with the error sent down through fixed random matrices.

    The step is backprop's (`cross_entropy_step`): only the synapses' backward
    (``synapse_fn``) differs.
    """

    needs = frozenset({"differentiable"})
    Options = FAOptions
    epoch_metric_families = (ALIGNMENT,)

    def setup(self, net: Net, ctx: RuleContext) -> None:
        seed = self.opts.feedback_seed if self.opts.feedback_seed is not None else ctx.seed
        gen = make_generator(seed + 15485863)
        mats = []
        for la in net.layers:
            w = la.weight
            fan_in = int(math.prod(w.shape[1:]))
            mats.append(_random_like(tuple(w.shape), fan_in, self.opts.feedback_scale, gen))
        self.feedback = FeedbackWeights(mats)
        for la, b in zip(net.layers, self.feedback.mats()):
            la.synapse_fn = fa_synapse(la, b)
        super().setup(net, ctx)

    def train_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        return cross_entropy_step(self, x, y)

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"feedback": self.feedback}

    def epoch_metrics(self) -> dict[str, float]:
        """Per layer: cosine between W and B (flattened), the 'alignment' FA relies on."""
        out = {}
        for la, b in zip(self.net.layers, self.feedback.mats()):
            w = la.weight.detach().flatten()
            out[f"{la.name}/alignment"] = float(F.cosine_similarity(w, b.flatten(), dim=0))
        return out


@register_rule("dfa")
@final
class DirectFeedbackAlignment(LearningRule):
    """The output error projected straight to every hidden layer by fixed random matrices."""

    needs = frozenset({"differentiable"})
    Options = FAOptions
    epoch_metric_families = (
        Metric("layer*/alignment", "max", description="cosine between activity and the teaching signal -eB"),
    )

    def setup(self, net: Net, ctx: RuleContext) -> None:
        seed = self.opts.feedback_seed if self.opts.feedback_seed is not None else ctx.seed
        gen = make_generator(seed + 32452843)
        with torch.no_grad():
            was = net.training
            net.eval()
            outs = net.forward_detached(torch.zeros(1, *net.input_shape))
            net.train(was)
        n_cls = ctx.n_classes
        mats = []
        for h in outs[:-1]:
            n = int(math.prod(net.rate(h).shape[1:]))
            mats.append(_random_like((n_cls, n), n_cls, self.opts.feedback_scale, gen))
        self.feedback = FeedbackWeights(mats)
        self._align = [0.0] * len(mats)
        self._n = 0
        super().setup(net, ctx)

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"feedback": self.feedback}

    def train_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        net = self.net
        net.train()
        outs = net.forward_detached(x)
        logits = self.mask_logits(net.readout())
        ce = F.cross_entropy(logits, y)
        with torch.no_grad():
            e = torch.softmax(logits, dim=1)
            e[torch.arange(len(y)), y] -= 1.0
            e /= len(y)
        surrogate = ce
        rates = []
        for h, b in zip(outs[:-1], self.feedback.mats()):
            r = net.rate(h).flatten(1)
            rates.append(r)
            surrogate = surrogate + (r * (e @ b)).sum()
        self.apply_update(surrogate)
        with torch.no_grad():
            # Alignment of the DFA signal with the true backprop signal is costly; record
            # instead the mean cosine between each layer's update direction -eB and activity.
            for k, (r, b) in enumerate(zip(rates, self.feedback.mats())):
                self._align[k] += float(F.cosine_similarity(r, -(e @ b), dim=1).mean())
            self._n += 1
        return {"loss": float(ce.detach()), "acc": accuracy(logits.detach(), y)}

    def epoch_metrics(self) -> dict[str, float]:
        """Per hidden layer: mean cosine between activity and the injected teaching signal -e·B."""
        n = self._n
        out = {
            f"layer{k}/alignment": (self._align[k] / n if n else math.nan)
            for k in range(len(self._align))
        }
        self._align = [0.0] * len(self._align)
        self._n = 0
        return out
