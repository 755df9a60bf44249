"""NoPropModel: the blocks, the label embedding and the output classifier p_out of one variant."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bioplaus.rules.noprop.blocks import (
    Block,
    Dense,
    LabelEmbedding,
    MonotoneGamma,
    block_seed,
    cosine_alpha_bar,
    inference_coefficients,
    snr_weights,
)
from bioplaus.rules.noprop.variants import VARIANTS, Variant


class NoPropModel(nn.Module):
    """The blocks, the label embedding and the output classifier p_out of one variant.

    ``forward(x)`` gives logits by the configured inference (so that plugins such as EWC,
    which call the net, see a classifier). What differs between variants is in ``kind``
    (`bioplaus.rules.noprop.variants`).
    """

    def __init__(
        self, opts: Any, in_shape: tuple[int, ...], n_classes: int, seed: int, spiking: Any = None,
        held: set[int] | None = None,
    ) -> None:
        """``held``: the DT blocks this process holds (others are parameter-free placeholders)."""
        with torch.random.fork_rng(devices=[]):
            self._build(opts, in_shape, n_classes, seed, spiking, held)

    def _build(self, opts: Any, in_shape: tuple[int, ...], n_classes: int, seed: int, spiking: Any,
               held: set[int] | None) -> None:
        super().__init__()
        self.opts = opts
        self.variant = opts.variant
        self.kind: Variant = VARIANTS[opts.variant]
        self.n_classes = n_classes
        self.active_classes: Tensor | None = None
        self.stop_check: Callable[[], None] | None = None  # set while the rule evaluates (`poll`)
        self.in_shape = tuple(in_shape)
        dim = {"onehot": n_classes, "learned": opts.embed_dim, "prototype": int(math.prod(in_shape))}[opts.embedding]
        self.embed = LabelEmbedding(opts.embedding, n_classes, dim, seed)
        ab = cosine_alpha_bar(opts.T, opts.schedule_s)
        self.register_buffer("alpha_bar", ab.float())
        self.register_buffer("weights", snr_weights(ab, opts.eta).float())
        a, b, c = inference_coefficients(ab)
        self.register_buffer("coef", torch.stack([a, b, c]).float())
        self.blocks = nn.ModuleList()
        self.head = Dense(dim, n_classes, "head", bn=False, act=None, is_output=True)
        self.gamma: MonotoneGamma | None = None
        self.mix: nn.Parameter | None = None
        self.cnn: nn.Module | None = None
        self.kind.build(self, opts, self.in_shape, dim, n_classes, seed, spiking, held)
        torch.manual_seed(block_seed(seed, 0))
        self.head.synapse.reset_parameters()

    # -- pieces ------------------------------------------------------------------------
    def poll(self) -> None:
        """The run's stop check between steps of a long inference chain (CT / FM grid points:
        ``eval_steps`` up to 1e5 per batch; SIGTERM must not wait for the batch)."""
        if self.stop_check is not None:
            self.stop_check()

    def u_hat(self, logits: Tensor) -> Tensor:
        """The block's guess of the label embedding: softmax(logits)·W_embed.

        With ``active_classes`` set (task-incremental streams: one head per task) the
        softmax runs over those classes only, in training and in inference.
        """
        act = self.active_classes
        if act is not None:
            mask = torch.full((logits.shape[-1],), -1e9, dtype=logits.dtype)
            mask[act] = 0.0
            logits = logits + mask
        return F.softmax(logits, dim=1) @ self.embed.W

    def nearest_logits(self, z: Tensor) -> Tensor:
        """−‖z − W_c‖² per class (FM's nearest-embedding prediction as logits)."""
        return -torch.cdist(z, self.embed.W) ** 2

    def ct_alpha_bar(self, t: Tensor) -> Tensor:
        """ᾱ(t) = sigmoid(−γ(t)) (CT: SNR = exp(−γ))."""
        return torch.sigmoid(-self.gamma(t))

    def plastic_layers(self) -> list[nn.Module]:
        """Every block's convs and dense layers, then the shared p_out (plugins act on these)."""
        if self.cnn is not None:
            im = self.cnn["image"]
            return [im.conv1, im.conv2, im.conv3, self.cnn["fc"], self.head]
        return [d for b in self.blocks if isinstance(b, Block) for d in b.plastic_layers()] + [self.head]

    def describe(self) -> str:
        o = self.opts
        return (f"noprop-{o.variant} T={self.kind.n_blocks(o)} "
                f"embedding={o.embedding}(d={self.embed.dim}) channels={list(o.channels)} width={o.width}")

    # -- inference -------------------------------------------------------------------
    def chain(self, x: Tensor, how: str, gen: torch.Generator | None, steps: int,
              logits: list[Tensor] | None = None) -> list[Tensor]:
        """z_0..z_K of the configured variant from z_0 ~ N(0, I) (``how``: stochastic | mean |
        direct; ``steps``: CT / FM grid points; ``logits``: backprop's per-block logits)."""
        return self.kind.chain(self, x, how, gen, steps, logits)

    def classify(self, z: Tensor) -> Tensor:
        return self.kind.classify(self, z)

    def step_logits(self, x: Tensor, how: str, gen: torch.Generator | None, steps: int) -> tuple[list[Tensor], list[Tensor]]:
        """(z_0..z_K, the class logits after each step k = 1..K): p_out(z_k), the nearest
        embedding (FM) or, for backprop over blocks read by logits, block k's logits."""
        blk: list[Tensor] | None = [] if self.kind.reads_block_logits(self.opts) else None
        zs = self.chain(x, how, gen, steps, blk)
        return zs, (blk if blk is not None else [self.classify(z) for z in zs[1:]])

    def sampled_step_logits(self, x: Tensor, how: str, gen: torch.Generator | None, steps: int,
                            samples: int) -> tuple[list[Tensor], list[Tensor]]:
        """`step_logits` averaged over ``samples`` independent chains from fresh noise.

        The stochastic chain draws z_T from the model's q(z_T | x); one chain therefore
        classifies with a *sample* of the predictive distribution, not its mode (on data
        with ambiguous images, a few points below the argmax). With ``samples`` K > 1 the
        class probabilities after each step are the mean of K chains' softmax outputs,
        a Monte-Carlo estimate of p(y | x) = E[p_out(y | z_T)]; returned as log-probabilities.
        The z's are the first chain's. K = 1 is the paper's inference."""
        zs, per_step = self.step_logits(x, how, gen, steps)
        if samples <= 1:
            return zs, per_step
        probs = [F.softmax(lg, dim=1) for lg in per_step]
        for _ in range(samples - 1):
            for acc, lg in zip(probs, self.step_logits(x, how, gen, steps)[1]):
                acc.add_(F.softmax(lg, dim=1))
        return zs, [(p / samples).log() for p in probs]

    def forward(self, x: Tensor, gen: torch.Generator | None = None) -> Tensor:
        return self.kind.forward(self, x, gen)
