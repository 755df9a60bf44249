"""NoProp's variants as objects with one interface: what a variant builds, how its chain runs
from noise, how one training step goes and what it reports per epoch.

``dt``, ``ct``, ``fm``, ``backprop`` and ``cnn`` (the rule's module docstring states their
maths); `VARIANTS` maps ``[rule] variant`` to its object. A variant holds no state: the model
(`NoPropModel`) and the rule pass themselves in.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bioplaus.rules.noprop.blocks import (
    Block,
    Dense,
    ImagePath,
    MonotoneGamma,
    block_seed,
    cosine_alpha_bar,
    inference_coefficients,
    kl_to_standard,
    time_features,
)

TIME_DIM = 16


def denoise_step(u: Tensor, z: Tensor, a: Tensor, b: Tensor, c: Tensor, how: str,
                 gen: torch.Generator | None) -> Tensor:
    """One step of the chain: z_t = a_t û + b_t z_{t-1} (+ √c_t ε when ``how`` is stochastic);
    ``how = "direct"`` takes z_t = û."""
    if how == "direct":
        return u
    z = a * u + b * z
    if how == "stochastic":
        z = z + c.sqrt() * torch.randn(z.shape, generator=gen)
    return z


def _acc(logits: Tensor, y: Tensor) -> float:
    return float((logits.detach().argmax(1) == y).float().mean())


class Variant:
    """The interface every variant implements (defaults: one denoising block, p_out reads z)."""

    name: ClassVar[str] = ""
    # trains block after block (modes sequential / parallel) with one optimiser per block
    block_ordered: ClassVar[bool] = False
    # evaluation also reports the deterministic chain z_t = û_t (``acc_det``)
    deterministic: ClassVar[bool] = False
    # the per-block denoising losses are reported per epoch (``block<t>/loss``)
    denoises: ClassVar[bool] = True

    def n_blocks(self, opts: Any) -> int:
        return 1

    def eval_steps(self, opts: Any) -> int:
        """Steps of the inference chain."""
        return opts.eval_steps

    def build(self, m: Any, opts: Any, in_shape: tuple[int, ...], dim: int, n_classes: int, seed: int,
              spiking: Any, held: set[int] | None) -> None:
        """Add the variant's modules to ``m`` (after its embedding and p_out)."""
        raise NotImplementedError

    def chain(self, m: Any, x: Tensor, how: str, gen: torch.Generator | None, steps: int,
              logits: list[Tensor] | None) -> list[Tensor]:
        """z_0..z_K from z_0 ~ N(0, I) (``logits``: see `BackpropBlocks.chain`)."""
        raise NotImplementedError

    def classify(self, m: Any, z: Tensor) -> Tensor:
        return m.head(z)

    def reads_block_logits(self, opts: Any) -> bool:
        return False

    def forward(self, m: Any, x: Tensor, gen: torch.Generator | None) -> Tensor:
        """Logits by the configured inference."""
        o = m.opts
        if o.samples > 1 and not m.training:
            return m.sampled_step_logits(x, o.inference, gen, o.eval_steps, o.samples)[1][-1]
        if self.reads_block_logits(o):
            blk: list[Tensor] = []
            self.chain(m, x, o.inference, gen, o.eval_steps, blk)
            return blk[-1]
        return self.classify(m, m.chain(x, o.inference, gen, o.eval_steps)[-1])

    def parameters(self, m: Any, shared: list[nn.Parameter]) -> list[nn.Parameter]:
        """What the rule's single optimiser steps (``shared``: p_out and a learned W_embed)."""
        return [p for b in m.blocks for p in b.parameters()] + shared

    def train_step(self, rule: Any, x: Tensor, y: Tensor) -> dict[str, float]:
        raise NotImplementedError

    def epoch_metrics(self, rule: Any) -> dict[str, float]:
        """Per block: the epoch's mean denoising L2."""
        if not self.denoises:
            return {}
        out: dict[str, float] = {}
        for t in range(1, self.n_blocks(rule.opts) + 1):
            s = rule.block_sums.get(t, [0.0, 0])
            out[f"block{t}/loss"] = s[0] / s[1] if s[1] else float("nan")
        return out


class _TBlocks(Variant):
    """T separate blocks û_t(z_{t−1}, x), block t initialised from its own seed (DT, and
    backprop over the same blocks)."""

    def n_blocks(self, opts: Any) -> int:
        return opts.T

    def eval_steps(self, opts: Any) -> int:
        return opts.T

    def build(self, m: Any, opts: Any, in_shape: tuple[int, ...], dim: int, n_classes: int, seed: int,
              spiking: Any, held: set[int] | None) -> None:
        """``held``: the blocks this process holds; the others are parameter-free placeholders."""
        for t in range(1, opts.T + 1):
            if held is not None and t not in held:
                m.blocks.append(nn.Identity())
                continue
            torch.manual_seed(block_seed(seed, t))
            m.blocks.append(Block(in_shape, dim, n_classes, list(opts.channels), opts.width, opts.dropout,
                                  f"block{t}", spiking=spiking))


class DT(_TBlocks):
    """Discrete time: T blocks, the fixed cosine schedule, one optimiser per block."""

    name = "dt"
    block_ordered = True
    deterministic = True

    def chain(self, m: Any, x: Tensor, how: str, gen: torch.Generator | None, steps: int,
              logits: list[Tensor] | None) -> list[Tensor]:
        """z_0..z_T of the DT chain (``how``: stochastic | mean | direct)."""
        z = torch.randn(x.shape[0], m.embed.dim, generator=gen)
        zs = [z]
        a, b, c = m.coef
        for i, block in enumerate(m.blocks):
            zs.append(z := denoise_step(m.u_hat(block(z, x)), z, a[i], b[i], c[i], how, gen))
        return zs

    def train_step(self, rule: Any, x: Tensor, y: Tensor) -> dict[str, float]:
        """Interleaved: every block steps on the batch."""
        outs = [rule.block_step(u, x, y) for u in rule.units]
        return {k: sum(d[k] for d in outs) / len(outs) for k in ("loss", "acc")}

    def epoch_metrics(self, rule: Any) -> dict[str, float]:
        """Per block: mean L2 and its SNR weight; the head's mean CE."""
        out: dict[str, float] = {}
        for t, v in super().epoch_metrics(rule).items():
            out[t] = v
            k = int(t.split("/")[0][len("block"):])
            out[f"block{k}/snr_weight"] = float(rule.net.weights[k - 1])
        out["head/ce"] = rule.head_sum[0] / rule.head_sum[1] if rule.head_sum[1] else float("nan")
        return out


class CT(Variant):
    """Continuous time: one block û(z_t, x, t), learned monotone schedule SNR(t) = exp(−γ(t))."""

    name = "ct"
    deterministic = True

    def build(self, m: Any, opts: Any, in_shape: tuple[int, ...], dim: int, n_classes: int, seed: int,
              spiking: Any, held: set[int] | None) -> None:
        torch.manual_seed(block_seed(seed, 1))
        m.blocks.append(Block(in_shape, dim, n_classes, list(opts.channels), opts.width, opts.dropout,
                              "block1", TIME_DIM, spiking))
        m.gamma = MonotoneGamma(opts.gamma_min, opts.gamma_max)

    def chain(self, m: Any, x: Tensor, how: str, gen: torch.Generator | None, steps: int,
              logits: list[Tensor] | None) -> list[Tensor]:
        """The chain on the grid t_k = k/steps with the DT update's a, b, c from ᾱ(t_k)."""
        grid = torch.linspace(0, 1, steps + 1)
        ab = m.ct_alpha_bar(grid).double().clamp(1e-6, 1 - 1e-6)
        a, b, c = (v.float() for v in inference_coefficients(ab))
        z = torch.randn(x.shape[0], m.embed.dim, generator=gen)
        zs = [z]
        block = m.blocks[0]
        for k in range(steps):
            m.poll()
            tf = time_features(grid[k].expand(x.shape[0]), TIME_DIM)
            zs.append(z := denoise_step(m.u_hat(block(z, x, tf)), z, a[k], b[k], c[k], how, gen))
        return zs

    def parameters(self, m: Any, shared: list[nn.Parameter]) -> list[nn.Parameter]:
        return [p for b in m.blocks for p in b.parameters()] + list(m.gamma.parameters()) + shared

    def train_step(self, rule: Any, x: Tensor, y: Tensor) -> dict[str, float]:
        """L = CE(p_out(z_1)) + KL(z_0) + (η/2)·SNR'(t)·‖û(z_t, x, t) − u_y‖², t ~ U(0, 1)."""
        m = rule.net
        m.train()
        g = rule.train_gen
        u = m.embed(y)
        t = torch.rand(len(y), generator=g).requires_grad_(True)
        gam = m.gamma(t)
        (dgam,) = torch.autograd.grad(gam.sum(), t, create_graph=True)
        snr_prime = -dgam * torch.exp(-gam)  # d/dt exp(−γ(t)) > 0: γ decreases
        ab = torch.sigmoid(-gam)[:, None]
        z = ab.sqrt() * u + (1 - ab).sqrt() * torch.randn(u.shape, generator=g)
        logits = m.blocks[0](z, x, time_features(t.detach(), TIME_DIM))
        l2 = ((m.u_hat(logits) - u) ** 2).sum(1)
        ends = torch.sigmoid(-m.gamma(torch.tensor([0.0, 1.0])))
        z1 = ends[1].sqrt() * u + (1 - ends[1]).sqrt() * torch.randn(u.shape, generator=g)
        ce = F.cross_entropy(m.head(z1), y)
        kl = kl_to_standard(u, float(ends[0].detach())).mean()  # the ends of γ are fixed
        loss = 0.5 * rule.opts.eta * (snr_prime * l2).mean() + ce + kl
        rule.apply_update(loss)
        rule.note(1, float(l2.mean().detach()))
        return {"loss": float(l2.mean().detach()), "acc": _acc(logits, y)}


class FM(Variant):
    """Flow matching on the label embedding: one block regresses the velocity u_y − z_0."""

    name = "fm"

    def build(self, m: Any, opts: Any, in_shape: tuple[int, ...], dim: int, n_classes: int, seed: int,
              spiking: Any, held: set[int] | None) -> None:
        torch.manual_seed(block_seed(seed, 1))
        m.blocks.append(Block(in_shape, dim, dim, list(opts.channels), opts.width, opts.dropout,
                              "block1", TIME_DIM, spiking))

    def chain(self, m: Any, x: Tensor, how: str, gen: torch.Generator | None, steps: int,
              logits: list[Tensor] | None) -> list[Tensor]:
        """Euler integration of dz/dt = v(z_t, x, t) from z_0 ~ N(0, I) to t = 1."""
        z = torch.randn(x.shape[0], m.embed.dim, generator=gen)
        zs = [z]
        h = 1.0 / steps
        for k in range(steps):
            m.poll()
            tf = time_features(torch.full((x.shape[0],), k * h), TIME_DIM)
            z = z + h * m.blocks[0](z, x, tf)
            zs.append(z)
        return zs

    def classify(self, m: Any, z: Tensor) -> Tensor:
        return m.nearest_logits(z)

    def train_step(self, rule: Any, x: Tensor, y: Tensor) -> dict[str, float]:
        """‖v(z_t, x, t) − (u_y − z_0)‖², z_t = t u_y + (1 − t) z_0 (+ σ ε), t ~ U(0, 1);
        a learned embedding adds CE of the nearest-embedding logits of ẑ_1 = z_t + (1 − t) v."""
        m = rule.net
        m.train()
        g = rule.train_gen
        u = m.embed(y)
        t = torch.rand(len(y), generator=g)
        z0 = torch.randn(u.shape, generator=g)
        zt = t[:, None] * u + (1 - t[:, None]) * z0
        if rule.opts.fm_sigma > 0:
            zt = zt + rule.opts.fm_sigma * torch.randn(u.shape, generator=g)
        v = m.blocks[0](zt, x, time_features(t, TIME_DIM))
        l2 = ((v - (u - z0)) ** 2).sum(1).mean()
        z1 = zt + (1 - t[:, None]) * v
        logits = m.nearest_logits(z1)
        loss = l2 + (F.cross_entropy(logits, y) if m.embed.learnable else 0.0)
        rule.apply_update(loss)
        rule.note(1, float(l2.detach()))
        return {"loss": float(l2.detach()), "acc": _acc(logits, y)}


class BackpropBlocks(_TBlocks):
    """The T blocks trained end to end: z_t = a_t û_t + b_t z_{t−1}, a_t and b_t learnable."""

    name = "backprop"
    denoises = False

    def build(self, m: Any, opts: Any, in_shape: tuple[int, ...], dim: int, n_classes: int, seed: int,
              spiking: Any, held: set[int] | None) -> None:
        super().build(m, opts, in_shape, dim, n_classes, seed, spiking, held)
        a, b, _ = inference_coefficients(cosine_alpha_bar(opts.T, opts.schedule_s))
        m.mix = nn.Parameter(torch.stack([a, b]).float().clone())

    def chain(self, m: Any, x: Tensor, how: str, gen: torch.Generator | None, steps: int,
              logits: list[Tensor] | None) -> list[Tensor]:
        """``logits`` (a list) receives each block's class logits, in order."""
        z = torch.randn(x.shape[0], m.embed.dim, generator=gen)
        zs = [z]
        for i, block in enumerate(m.blocks):
            out = block(z, x)
            if logits is not None:
                logits.append(out)
            z = m.mix[0, i] * m.u_hat(out) + m.mix[1, i] * z
            zs.append(z)
        return zs

    def reads_block_logits(self, opts: Any) -> bool:
        """Classify with the last block's logits (``bp_readout = "logits"``)."""
        return opts.bp_readout == "logits"

    def parameters(self, m: Any, shared: list[nn.Parameter]) -> list[nn.Parameter]:
        return [p for b in m.blocks for p in b.parameters()] + [m.mix] + shared

    def train_step(self, rule: Any, x: Tensor, y: Tensor) -> dict[str, float]:
        m = rule.net
        m.train()
        blk: list[Tensor] = []
        zs = self.chain(m, x, "mean", rule.train_gen, m.opts.T, blk)
        logits = blk[-1] if self.reads_block_logits(m.opts) else self.classify(m, zs[-1])
        loss = F.cross_entropy(logits, y)
        rule.apply_update(loss)
        return {"loss": float(loss.detach()), "acc": _acc(logits, y)}


class CNN(Variant):
    """A plain backprop CNN with the same image path and one hidden FC layer."""

    name = "cnn"
    denoises = False

    def build(self, m: Any, opts: Any, in_shape: tuple[int, ...], dim: int, n_classes: int, seed: int,
              spiking: Any, held: set[int] | None) -> None:
        torch.manual_seed(block_seed(seed, 1))
        img = ImagePath(in_shape, list(opts.channels), opts.dropout, "cnn.image")
        m.cnn = nn.ModuleDict({"image": img, "fc": Dense(img.n_out, opts.width, "cnn.fc", act=nn.ReLU())})
        m.head = Dense(opts.width, n_classes, "head", bn=False, act=None, is_output=True)

    def forward(self, m: Any, x: Tensor, gen: torch.Generator | None) -> Tensor:
        return m.head(m.cnn["fc"](m.cnn["image"](x)))

    def parameters(self, m: Any, shared: list[nn.Parameter]) -> list[nn.Parameter]:
        return list(m.cnn.parameters()) + list(m.head.parameters())

    def train_step(self, rule: Any, x: Tensor, y: Tensor) -> dict[str, float]:
        m = rule.net
        m.train()
        logits = self.forward(m, x, None)
        loss = F.cross_entropy(logits, y)
        rule.apply_update(loss)
        return {"loss": float(loss.detach()), "acc": _acc(logits, y)}


VARIANTS: dict[str, Variant] = {v.name: v for v in (DT(), CT(), FM(), BackpropBlocks(), CNN())}
