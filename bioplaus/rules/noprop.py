"""NoProp (Li, Teh & Pascanu 2025): blocks that each learn to denoise the label embedding,
trained without a forward or backward pass through each other.

Variants (``[rule] variant``):

- ``dt``: T blocks û_t(z_{t-1}, x) with the fixed cosine schedule of
  `bioplaus.rules.noprop_model` (ᾱ_t rises with t). Block t's loss is

      L_t = CE(p_out(y | z_T)) + KL(q(z_0|y) ‖ N(0, I)) + (T/2)·η·(SNR(t) − SNR(t−1))·‖û_t(z_{t−1}, x) − u_y‖²,

  with z_{t−1} ~ q(z_{t−1}|y) and z_T ~ q(z_T|y) (not the block's output); û_t =
  softmax(logits_t)·W_embed. Each block has its own optimiser; the output classifier
  p_out and a learned W_embed are shared and stepped with every block's loss. Inference
  runs the chain from z_0 ~ N(0, I) with z_t = a_t û_t + b_t z_{t−1} + √c_t ε
  (``stochastic``), without the noise (``mean``) or as z_t = û_t (``direct``).
- ``ct``: one block û(z_t, x, t), t ~ U(0, 1), learned monotone schedule
  SNR(t) = exp(−γ(t)), loss weight (η/2)·SNR'(t); inference on ``eval_steps`` grid points.
- ``fm``: flow matching on the label embedding: z_t = t u_y + (1 − t) z_0, the block
  regresses the velocity u_y − z_0; inference integrates dz/dt = v (Euler, ``eval_steps``)
  and predicts the nearest class embedding.
- ``backprop``: the same T blocks trained end to end by backprop, z_t = a_t û_t + b_t z_{t−1}
  with a_t, b_t learnable (initialised at the schedule's values), CE on the last block's
  logits (``bp_readout = "logits"``) or on p_out(z_T) (``"p_out"``, see docs/noprop.md).
- ``cnn``: a plain backprop CNN with the same image path and one hidden FC layer.

Training modes (``mode``, DT with a fixed one-hot embedding for ``parallel``):
``interleaved`` (every block steps on each batch), ``sequential`` (block 1 over the whole
epoch, then block 2, ...; the paper's Algorithm 1) and ``parallel`` (blocks split across
``workers`` processes, each holding only its blocks). Every block draws its noise and
dropout masks from its own generator seeded by (seed, t) and sees the loader's batch
order of the epoch, so the three modes give the same block parameters (see docs/noprop.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bioplaus.config import bounded, check_choice
from bioplaus.device import generator as make_generator
from bioplaus.errors import ConfigError
from bioplaus.metrics import Metric
from bioplaus.neurons.base import neuron_model
from bioplaus.registry import register_figure, register_rule
from bioplaus.rules.base import LearningRule, RuleContext
from bioplaus.rules.noprop_model import (
    Block,
    Dense,
    ImagePath,
    LabelEmbedding,
    MonotoneGamma,
    cosine_alpha_bar,
    inference_coefficients,
    kl_to_standard,
    snr_weights,
    time_features,
)
from bioplaus.training.optim import make_optimizer

VARIANTS = ("dt", "ct", "fm", "backprop", "cnn")
EMBEDDINGS = ("onehot", "learned", "prototype")
MODES = ("interleaved", "sequential", "parallel")
INFERENCE = ("stochastic", "mean", "direct")
TIME_DIM = 16


def block_seed(seed: int, t: int) -> int:
    """The seed of block t's initialisation and generator (independent of the mode)."""
    return int(seed) * 1009 + 7 * int(t) + 17


# ----------------------------------------------------------------------------- the model


def _denoise_step(u: Tensor, z: Tensor, a: Tensor, b: Tensor, c: Tensor, how: str,
                  gen: torch.Generator | None) -> Tensor:
    """One step of the chain: z_t = a_t û + b_t z_{t-1} (+ √c_t ε when ``how`` is stochastic);
    ``how = "direct"`` takes z_t = û."""
    if how == "direct":
        return u
    z = a * u + b * z
    if how == "stochastic":
        z = z + c.sqrt() * torch.randn(z.shape, generator=gen)
    return z

class NoPropModel(nn.Module):
    """The blocks, the label embedding and the output classifier p_out of one variant.

    ``forward(x)`` gives logits by the configured inference (so that plugins such as EWC,
    which call the net, see a classifier).
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
        self.n_classes = n_classes
        self.active_classes: Tensor | None = None
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
        width, chans = opts.width, list(opts.channels)
        if self.variant in ("dt", "backprop"):
            for t in range(1, opts.T + 1):
                if held is not None and t not in held:
                    self.blocks.append(nn.Identity())
                    continue
                torch.manual_seed(block_seed(seed, t))
                self.blocks.append(Block(in_shape, dim, n_classes, chans, width, opts.dropout, f"block{t}", spiking=spiking))
            if self.variant == "backprop":
                self.mix = nn.Parameter(torch.stack([a, b]).float().clone())
        elif self.variant in ("ct", "fm"):
            torch.manual_seed(block_seed(seed, 1))
            n_out = n_classes if self.variant == "ct" else dim
            self.blocks.append(Block(in_shape, dim, n_out, chans, width, opts.dropout, "block1", TIME_DIM, spiking))
            if self.variant == "ct":
                self.gamma = MonotoneGamma(opts.gamma_min, opts.gamma_max)
        else:  # cnn
            torch.manual_seed(block_seed(seed, 1))
            img = ImagePath(in_shape, chans, opts.dropout, "cnn.image")
            self.cnn = nn.ModuleDict({"image": img, "fc": Dense(img.n_out, width, "cnn.fc", act=nn.ReLU())})
            self.head = Dense(width, n_classes, "head", bn=False, act=None, is_output=True)
        torch.manual_seed(block_seed(seed, 0))
        self.head.synapse.reset_parameters()

    # -- pieces ------------------------------------------------------------------------
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

    def plastic_layers(self) -> list[nn.Module]:
        """Every block's convs and dense layers, then the shared p_out (plugins act on these)."""
        if self.cnn is not None:
            im = self.cnn["image"]
            return [im.conv1, im.conv2, im.conv3, self.cnn["fc"], self.head]
        return [d for b in self.blocks if isinstance(b, Block) for d in b.plastic_layers()] + [self.head]

    def describe(self) -> str:
        o = self.opts
        return (f"noprop-{o.variant} T={o.T if o.variant in ('dt', 'backprop') else 1} "
                f"embedding={o.embedding}(d={self.embed.dim}) channels={list(o.channels)} width={o.width}")

    # -- inference -------------------------------------------------------------------
    def cnn_logits(self, x: Tensor) -> Tensor:
        return self.head(self.cnn["fc"](self.cnn["image"](x)))

    def dt_chain(self, x: Tensor, how: str, gen: torch.Generator | None) -> list[Tensor]:
        """z_0..z_T of the DT chain from z_0 ~ N(0, I) (``how``: stochastic | mean | direct)."""
        z = torch.randn(x.shape[0], self.embed.dim, generator=gen)
        zs = [z]
        a, b, c = self.coef
        for i, block in enumerate(self.blocks):
            zs.append(z := _denoise_step(self.u_hat(block(z, x)), z, a[i], b[i], c[i], how, gen))
        return zs

    def ct_alpha_bar(self, t: Tensor) -> Tensor:
        """ᾱ(t) = sigmoid(−γ(t)) (SNR = exp(−γ))."""
        return torch.sigmoid(-self.gamma(t))

    def ct_chain(self, x: Tensor, steps: int, how: str, gen: torch.Generator | None) -> list[Tensor]:
        """The CT chain on the grid t_k = k/steps with the DT update's a, b, c from ᾱ(t_k)."""
        grid = torch.linspace(0, 1, steps + 1)
        ab = self.ct_alpha_bar(grid).double().clamp(1e-6, 1 - 1e-6)
        a, b, c = (v.float() for v in inference_coefficients(ab))
        z = torch.randn(x.shape[0], self.embed.dim, generator=gen)
        zs = [z]
        block = self.blocks[0]
        for k in range(steps):
            tf = time_features(grid[k].expand(x.shape[0]), TIME_DIM)
            zs.append(z := _denoise_step(self.u_hat(block(z, x, tf)), z, a[k], b[k], c[k], how, gen))
        return zs

    def fm_chain(self, x: Tensor, steps: int, gen: torch.Generator | None) -> list[Tensor]:
        """Euler integration of dz/dt = v(z_t, x, t) from z_0 ~ N(0, I) to t = 1."""
        z = torch.randn(x.shape[0], self.embed.dim, generator=gen)
        zs = [z]
        h = 1.0 / steps
        for k in range(steps):
            tf = time_features(torch.full((x.shape[0],), k * h), TIME_DIM)
            z = z + h * self.blocks[0](z, x, tf)
            zs.append(z)
        return zs

    def backprop_chain(self, x: Tensor, gen: torch.Generator | None, logits: list[Tensor] | None = None) -> list[Tensor]:
        """The backprop baseline: z_t = a_t û_t + b_t z_{t−1}, a_t and b_t learnable.

        ``logits`` (a list) receives each block's class logits, in order."""
        z = torch.randn(x.shape[0], self.embed.dim, generator=gen)
        zs = [z]
        for i, block in enumerate(self.blocks):
            out = block(z, x)
            if logits is not None:
                logits.append(out)
            z = self.mix[0, i] * self.u_hat(out) + self.mix[1, i] * z
            zs.append(z)
        return zs

    @property
    def reads_block_logits(self) -> bool:
        """Backprop over blocks classifies with the last block's logits (``bp_readout``)."""
        return self.variant == "backprop" and self.opts.bp_readout == "logits"

    def chain(self, x: Tensor, how: str, gen: torch.Generator | None, steps: int,
              logits: list[Tensor] | None = None) -> list[Tensor]:
        """z_0..z_T of the configured variant (``logits``: see `backprop_chain`)."""
        if self.variant == "dt":
            return self.dt_chain(x, how, gen)
        if self.variant == "ct":
            return self.ct_chain(x, steps, how, gen)
        if self.variant == "fm":
            return self.fm_chain(x, steps, gen)
        return self.backprop_chain(x, gen, logits)

    def classify(self, z: Tensor) -> Tensor:
        return self.nearest_logits(z) if self.variant == "fm" else self.head(z)

    def step_logits(self, x: Tensor, how: str, gen: torch.Generator | None, steps: int) -> tuple[list[Tensor], list[Tensor]]:
        """(z_0..z_K, the class logits after each step k = 1..K): p_out(z_k), the nearest
        embedding (FM) or, for backprop over blocks read by logits, block k's logits."""
        blk: list[Tensor] | None = [] if self.reads_block_logits else None
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
        if self.variant == "cnn":
            return self.cnn_logits(x)
        if self.opts.samples > 1 and not self.training:
            return self.sampled_step_logits(x, self.opts.inference, gen, self.opts.eval_steps, self.opts.samples)[1][-1]
        if self.reads_block_logits:
            blk: list[Tensor] = []
            self.backprop_chain(x, gen, blk)
            return blk[-1]
        return self.classify(self.chain(x, self.opts.inference, gen, self.opts.eval_steps)[-1])


# ----------------------------------------------------------------------------- block units


class BlockUnit:
    """Block t of a DT model with its own generator and optimiser: what one step trains.

    The same class trains a block in the main process and in a worker process, so that
    the modes draw the same numbers in the same order.
    """

    def __init__(self, model: NoPropModel, t: int, seed: int, make_opt: Any) -> None:
        self.model = model
        self.t = t
        self.block = model.blocks[t - 1]
        self.gen = make_generator(block_seed(seed, t) + 1)
        self.block.set_generator(self.gen)
        self.opt = make_opt(list(self.block.parameters()))
        self.weight = float(model.weights[t - 1])
        self.ab_prev = float(model.alpha_bar[t - 1])

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(weighted L2, L2, logits) of block t on z_{t−1} ~ q(z_{t−1}|y)."""
        self.block.train()
        u = self.model.embed(y)
        eps = torch.randn(u.shape, generator=self.gen)
        z = math.sqrt(self.ab_prev) * u + math.sqrt(1 - self.ab_prev) * eps
        logits = self.block(z, x)
        l2 = ((self.model.u_hat(logits) - u) ** 2).sum(1).mean()
        return self.weight * l2, l2, logits


def head_loss(model: NoPropModel, y: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """(CE(p_out(z_T)) with z_T ~ q(z_T|y), mean KL(q(z_0|y) ‖ N(0, I)))."""
    u = model.embed(y)
    ab_T, ab_0 = float(model.alpha_bar[-1]), float(model.alpha_bar[0])
    z_T = math.sqrt(ab_T) * u + math.sqrt(1 - ab_T) * torch.randn(u.shape, generator=gen)
    return F.cross_entropy(model.head(z_T), y), kl_to_standard(u, ab_0).mean()


def epoch_batches(loader: Any) -> list[tuple[Tensor, Tensor]] | Any:
    """The batches of one epoch in the loader's order, drawn once and replayable."""
    from neuro_data.loader import ArrayLoader

    if isinstance(loader, ArrayLoader):
        # The loader's stream is on the CPU (the same order on every device).
        perm = torch.randperm(loader.n, generator=loader.generator, device="cpu") if loader.shuffle else None
        if perm is not None and perm.device != loader.x.device:
            perm = perm.to(loader.x.device)

        class _Replay:
            def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
                return loader._batches(perm)

            def __len__(self) -> int:
                return len(loader)

        return _Replay()
    return list(loader)


# ----------------------------------------------------------------------------- the rule


@register_rule("noprop")
class NoProp(LearningRule):
    """NoProp DT / CT / FM and the backprop baselines over the same blocks (module docstring)."""

    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric("loss", "min", panel="loss", progress=True, summary=True,
               description="train: denoising L2 ‖û − u_y‖² (unweighted); eval: CE of p_out on the inferred z_T"),
        Metric("acc", "max", unit="fraction", panel="accuracy", progress=True, summary=True, headline=True,
               description="train: the blocks' own denoising accuracy; eval: the configured inference from noise"),
        Metric("acc_det", "max", unit="fraction", panel="accuracy", summary=True,
               description="eval: deterministic inference z_t = û_t (DT, CT)"),
    )
    epoch_metric_families: ClassVar[tuple[Metric, ...]] = (
        Metric("block*/loss", "min", panel="blocks", description="block t's unweighted denoising L2, epoch mean"),
        Metric("block*/snr_weight", panel="blocks", description="(T/2)·η·(SNR(t) − SNR(t−1))"),
        Metric("head/ce", "min", panel="blocks", description="CE of p_out on z_T ~ q(z_T|y), epoch mean"),
    )
    figures: ClassVar[tuple[str, ...]] = ("noprop_steps", "noprop_trajectory")

    @dataclass
    class Options:
        variant: str = "dt"  # dt | ct | fm | backprop | cnn
        embedding: str = "onehot"  # onehot | learned | prototype
        embed_dim: int = bounded(20, ge=1)  # learned embedding's d
        T: int = bounded(10, ge=1, le=1000)  # DT blocks
        eta: float = bounded(0.1, gt=0)
        schedule_s: float = bounded(0.008, gt=0, lt=0.5)
        channels: list[int] = bounded(default_factory=lambda: [32, 64, 128], ge=1, max_items=3, what="widths")
        width: int = bounded(256, ge=2)
        dropout: float = bounded(0.2, ge=0, lt=1)
        inference: str = "stochastic"  # stochastic | mean | direct
        # evaluation: chains per image whose class probabilities are averaged (1 = the paper)
        samples: int = bounded(1, ge=1, le=1000)
        eval_steps: int = bounded(100, ge=1, le=100000)  # CT / FM inference steps (paper: 1000)
        mode: str = "interleaved"  # interleaved | sequential | parallel
        workers: int = bounded(2, ge=1, le=64)
        # CT schedule ends: SNR(1) = exp(3) (ᾱ = 0.953), SNR(0) = exp(-3) (ᾱ = 0.047); with
        # ±9 the SNR' weight piles onto t ≈ 1 and the block never learns to denoise from
        # noise (digits, 6 epochs: ±9 chance, ±5 16 %, ±3 58 %; docs/noprop.md)
        gamma_min: float = -3.0
        gamma_max: float = 3.0
        fm_sigma: float = bounded(0.0, ge=0)  # FM: std of the noise added to z_t
        # backprop over blocks: CE on the last block's logits, or on p_out(z_T) (slow: p_out's
        # margins grow by ~lr per Adam step through the softmax·W_embed bottleneck; docs)
        bp_readout: str = "logits"  # logits | p_out
        trajectory_samples: int = bounded(16, ge=0, le=1000)
        prototype_cap: int = bounded(2000, ge=2)

    @classmethod
    def check_options(cls, o: Any, where: str) -> None:
        check_choice(o.variant, VARIANTS, f"{where}.variant")
        check_choice(o.embedding, EMBEDDINGS, f"{where}.embedding")
        check_choice(o.mode, MODES, f"{where}.mode")
        check_choice(o.inference, INFERENCE, f"{where}.inference")
        check_choice(o.bp_readout, ("logits", "p_out"), f"{where}.bp_readout")
        if len(o.channels) != 3:
            raise ConfigError(f"{where}.channels: the image path has three convs; give three widths, got {o.channels}")
        if o.mode != "interleaved" and o.variant != "dt":
            raise ConfigError(f"{where}.mode: {o.mode!r} needs variant 'dt' (the other variants train one module)")
        if o.mode == "parallel" and o.embedding != "onehot":
            raise ConfigError(
                f"{where}.mode: 'parallel' needs embedding 'onehot': a learned embedding is shared by every "
                "block's loss and cannot live in several processes"
            )
        if not (o.gamma_min < o.gamma_max):
            raise ConfigError(f"{where}.gamma_min: must be below gamma_max")

    @property
    def active_classes(self) -> Tensor | None:
        return self._active

    @active_classes.setter
    def active_classes(self, value: Tensor | None) -> None:
        # the blocks' softmax follows the task's classes too (see NoPropModel.u_hat)
        self._active = value
        if getattr(self, "net", None) is not None:
            self.net.active_classes = value

    # -- the model -------------------------------------------------------------------
    def build_model(self, ctx: RuleContext) -> nn.Module:
        spiking = None
        net = ctx.network
        if net is not None and neuron_model(net.backend).temporal:
            from bioplaus.neurons.lif import LIFParams

            s = net.spiking
            spiking = (LIFParams(s.dt, s.tau, s.threshold, s.reset, s.surrogate, s.slope), s.T)
        if len(ctx.input_shape) not in (1, 2, 3):
            raise ConfigError(f"data: NoProp needs image-shaped inputs, got shape {ctx.input_shape}")
        if len(ctx.input_shape) == 1 or min(ctx.input_shape[-2:]) < 4:
            raise ConfigError(
                f"data: NoProp's image path pools twice by 2 and needs images of at least 4x4 pixels, "
                f"got input shape {tuple(ctx.input_shape)}"
            )
        self.model_seed = ctx.seed
        return NoPropModel(self.opts, ctx.input_shape, ctx.n_classes, ctx.seed, spiking)

    def protected_layers(self) -> list[Any]:
        """Each block's convs and dense layers (block by block), then p_out."""
        return self.net.plastic_layers()

    def probe_forward(self, x: Tensor) -> None:
        was = self.net.training
        self.net.eval()
        with torch.no_grad():
            self.net(x, make_generator(0))
        self.net.train(was)

    # -- life cycle ------------------------------------------------------------------
    def setup(self, net: nn.Module, ctx: RuleContext) -> None:
        self.net = net
        net.active_classes = self._active
        self.ctx = ctx
        o = self.opts
        if o.mode != "interleaved" and ctx.stream is not None:
            raise ConfigError(f"rule.mode: task streams train NoProp's blocks 'interleaved', not {o.mode!r}")
        m: NoPropModel = net
        self.head_gen = make_generator(block_seed(ctx.seed, 0) + 1)
        self.eval_seed = block_seed(ctx.seed, 0) + 2
        shared = list(m.head.parameters()) + ([m.embed.W] if m.embed.learnable else [])
        self.units: list[BlockUnit] = []
        self.block_sums: dict[int, list[float]] = {}
        self.head_sum = [0.0, 0]
        self.pool: Any = None
        if o.variant == "dt":
            self.units = [BlockUnit(m, t, ctx.seed, partial(make_optimizer, self.cfg)) for t in range(1, o.T + 1)]
            self.optimizer = make_optimizer(self.cfg, shared)  # p_out (+ W_embed): shared by all blocks
        else:
            extra = []
            if m.gamma is not None:
                extra += list(m.gamma.parameters())
            if m.mix is not None:
                extra.append(m.mix)
            params = [p for b in m.blocks for p in b.parameters()] + extra + shared
            if m.cnn is not None:
                params = list(m.cnn.parameters()) + list(m.head.parameters())
            self.optimizer = make_optimizer(self.cfg, params)
            self.train_gen = make_generator(block_seed(ctx.seed, 1) + 1)
            for b in m.blocks:
                b.set_generator(self.train_gen)
            if m.cnn is not None:
                for d in m.cnn["image"].drops:
                    d.gen = self.train_gen
        self.scheduler = None

    def reset_optimizer(self) -> None:
        """Fresh optimiser state for every block and for the shared p_out / W_embed (task streams)."""
        if not self.units:
            return super().reset_optimizer()
        m: NoPropModel = self.net
        for u in self.units:
            u.opt = make_optimizer(self.cfg, list(u.block.parameters()))
        self.optimizer = make_optimizer(self.cfg, list(m.head.parameters()) + ([m.embed.W] if m.embed.learnable else []))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for o in self.optimizers() for g in o.param_groups for p in g["params"]]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer, *(u.opt for u in self.units)]

    def init_from_data(self, loader: Any) -> None:
        """Prototype embedding: each class's most central training image (see `LabelEmbedding`)."""
        if self.opts.embedding == "prototype":
            self.net.embed.init_prototypes(loader.x, loader.y, self.opts.prototype_cap, self.ctx.seed)

    def steps_per_epoch(self, n_batches: int) -> int:
        """Sequential and parallel DT count one step per block and batch."""
        return n_batches * self.opts.T if self.opts.mode != "interleaved" else n_batches

    # -- training --------------------------------------------------------------------
    def block_step(self, unit: BlockUnit, x: Tensor, y: Tensor, with_head: bool = True) -> dict[str, float]:
        """One update of block t (and, in-process, the shared p_out / W_embed) on a batch."""
        wl2, l2, logits = unit.loss(x, y)
        loss = wl2
        extra = None
        if with_head:
            ce, kl = head_loss(self.net, y, self.head_gen)
            loss = loss + ce + kl
            extra = [(self.optimizer, self.cfg.clip, None)]
            self.head_sum[0] += float(ce.detach())
            self.head_sum[1] += 1
        self.apply_update(loss, optimizer=unit.opt, extra=extra)
        # Free the block's gradients now, not at its next step: only the block in training
        # holds gradients (DT's memory advantage; the numbers do not change).
        unit.opt.zero_grad(set_to_none=True)
        acc = float((logits.detach().argmax(1) == y).float().mean())
        self._note(unit.t, float(l2.detach()))
        return {"loss": float(l2.detach()), "acc": acc}

    def _note(self, t: int, l2: float) -> None:
        s = self.block_sums.setdefault(t, [0.0, 0])
        s[0] += l2
        s[1] += 1

    def train_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        o = self.opts
        m: NoPropModel = self.net
        if o.variant == "dt":
            outs = [self.block_step(u, x, y) for u in self.units]
            return {k: sum(d[k] for d in outs) / len(outs) for k in ("loss", "acc")}
        m.train()
        if o.variant == "cnn":
            logits = m.cnn_logits(x)
            loss = F.cross_entropy(logits, y)
            self.apply_update(loss)
            return {"loss": float(loss.detach()), "acc": float((logits.detach().argmax(1) == y).float().mean())}
        if o.variant == "backprop":
            blk: list[Tensor] = []
            zs = m.backprop_chain(x, self.train_gen, blk)
            logits = blk[-1] if m.reads_block_logits else m.classify(zs[-1])
            loss = F.cross_entropy(logits, y)
            self.apply_update(loss)
            return {"loss": float(loss.detach()), "acc": float((logits.detach().argmax(1) == y).float().mean())}
        if o.variant == "ct":
            return self._ct_step(x, y)
        return self._fm_step(x, y)

    def _ct_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """L = CE(p_out(z_1)) + KL(z_0) + (η/2)·SNR'(t)·‖û(z_t, x, t) − u_y‖², t ~ U(0, 1)."""
        m: NoPropModel = self.net
        g = self.train_gen
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
        loss = 0.5 * self.opts.eta * (snr_prime * l2).mean() + ce + kl
        self.apply_update(loss)
        self._note(1, float(l2.mean().detach()))
        return {"loss": float(l2.mean().detach()), "acc": float((logits.detach().argmax(1) == y).float().mean())}

    def _fm_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """‖v(z_t, x, t) − (u_y − z_0)‖², z_t = t u_y + (1 − t) z_0 (+ σ ε), t ~ U(0, 1);
        a learned embedding adds CE of the nearest-embedding logits of ẑ_1 = z_t + (1 − t) v."""
        m: NoPropModel = self.net
        g = self.train_gen
        u = m.embed(y)
        t = torch.rand(len(y), generator=g)
        z0 = torch.randn(u.shape, generator=g)
        zt = t[:, None] * u + (1 - t[:, None]) * z0
        if self.opts.fm_sigma > 0:
            zt = zt + self.opts.fm_sigma * torch.randn(u.shape, generator=g)
        v = m.blocks[0](zt, x, time_features(t, TIME_DIM))
        l2 = ((v - (u - z0)) ** 2).sum(1).mean()
        z1 = zt + (1 - t[:, None]) * v
        logits = m.nearest_logits(z1)
        loss = l2 + (F.cross_entropy(logits, y) if m.embed.learnable else 0.0)
        self.apply_update(loss)
        self._note(1, float(l2.detach()))
        return {"loss": float(l2.detach()), "acc": float((logits.detach().argmax(1) == y).float().mean())}

    def train_epoch(self, loader: Any) -> Iterator[dict[str, float]] | None:
        """Sequential and parallel DT take over the epoch (one step per block and batch)."""
        if self.opts.variant != "dt" or self.opts.mode == "interleaved":
            return None
        if self.opts.mode == "sequential":
            return self._sequential_epoch(loader)
        return self._parallel_epoch(loader)

    def _sequential_epoch(self, loader: Any) -> Iterator[dict[str, float]]:
        batches = epoch_batches(loader)
        for unit in self.units:
            for x, y in batches:
                yield self.block_step(unit, x, y)

    def _parallel_epoch(self, loader: Any) -> Iterator[dict[str, float]]:
        from bioplaus.rules.noprop_parallel import BlockPool

        if len(self.plugins):
            raise ConfigError("rule.mode: 'parallel' trains blocks in other processes, where plugins cannot act")
        if self.pool is None:
            self.pool = BlockPool(self, loader)
        self.pool.start_epoch()
        # p_out trains here while the workers train the blocks (its loss needs no block)
        batches = epoch_batches(loader)
        self.net.head.train()
        for _ in range(self.opts.T):
            for _x, y in batches:
                ce, kl = head_loss(self.net, y, self.head_gen)
                self.apply_update(ce + kl)
                self.head_sum[0] += float(ce.detach())
                self.head_sum[1] += 1
        try:
            for t, l2, acc in self.pool.steps():
                self._note(t, l2)
                yield {"loss": l2, "acc": acc}
        except GeneratorExit:
            # stopped early (train.max_steps): the workers finish their epoch; evaluate on it
            for _ in self.pool.steps():
                pass
            self.pool.collect()
            raise
        self.pool.collect()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    # -- evaluation ------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.mask_logits(self.net(x, make_generator(self.eval_seed)))

    @torch.no_grad()
    def evaluate(self, loader: Any) -> dict[str, float]:
        """Accuracy of the configured inference and of the deterministic one, from pure noise.

        Also records, per evaluation, the accuracy of p_out(z_k) after k denoising steps
        and the distance ‖z_k − u_y‖ of each step (mean, and a few samples' trajectories),
        streamed as traces ``noprop.acc_steps``, ``noprop.z_dist``, ``noprop.z_samples``.
        """
        m: NoPropModel = self.net
        o = self.opts
        was = m.training
        m.eval()
        gen = make_generator(self.eval_seed)
        if o.variant == "cnn":
            out = super().evaluate(loader)
            m.train(was)
            return {**out, "acc_det": out["acc"]}
        steps = o.eval_steps if o.variant in ("ct", "fm") else o.T
        loss_sum, n, correct, correct_det = 0.0, 0, 0, 0
        step_correct = torch.zeros(steps)
        dist_sum = torch.zeros(steps + 1)
        samples: list[Tensor] = []
        for x, y in loader:
            zs, per_step = m.sampled_step_logits(x, o.inference, gen, steps, o.samples)
            logits = self.mask_logits(per_step[-1])
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            if o.variant in ("dt", "ct"):
                det = m.chain(x, "direct", gen, steps)[-1]
                correct_det += int((self.mask_logits(m.classify(det)).argmax(1) == y).sum())
            u = m.embed(y)
            dist = torch.stack([(z - u).norm(dim=1) for z in zs], dim=1)  # [B, steps + 1]
            dist_sum += dist.sum(0)
            for k in range(steps):
                step_correct[k] += int((self.mask_logits(per_step[k]).argmax(1) == y).sum())
            have = sum(len(s) for s in samples)
            if have < o.trajectory_samples:
                samples.append(dist[: o.trajectory_samples - have])
            n += len(y)
        m.train(was)
        n = max(n, 1)
        out = {"loss": loss_sum / n, "acc": correct / n,
               "acc_det": (correct_det / n) if o.variant in ("dt", "ct") else correct / n}
        self.last_eval = {"acc_steps": (step_correct / n).cpu().numpy(), "z_dist": (dist_sum / n).cpu().numpy()}
        run = self.ctx.run if hasattr(self, "ctx") else None
        if run is not None and not getattr(self, "_in_inner_eval", False):
            every = max(self.ctx.steps_per_epoch, 1)
            run.log_trace("noprop.acc_steps", self.last_eval["acc_steps"], unit="fraction", dt=None,
                          every=every, dims="step")
            run.log_trace("noprop.z_dist", self.last_eval["z_dist"], unit="", dt=None, every=every, dims="step")
            if samples:
                run.log_trace("noprop.z_samples", torch.cat(samples).cpu().numpy(), unit="", dt=None, every=every,
                              dims="sample,step")
        return out

    def epoch_metrics(self) -> dict[str, float]:
        """Per block: the epoch's mean L2 and its SNR weight; the head's mean CE."""
        out: dict[str, float] = {}
        if self.opts.variant in ("dt", "ct", "fm"):
            n_blocks = self.opts.T if self.opts.variant == "dt" else 1
            for t in range(1, n_blocks + 1):
                s = self.block_sums.get(t, [0.0, 0])
                out[f"block{t}/loss"] = s[0] / s[1] if s[1] else float("nan")
                if self.opts.variant == "dt":
                    out[f"block{t}/snr_weight"] = float(self.net.weights[t - 1])
            if self.opts.variant == "dt":
                out["head/ce"] = self.head_sum[0] / self.head_sum[1] if self.head_sum[1] else float("nan")
        self.block_sums = {}
        self.head_sum = [0.0, 0]
        return out


# ----------------------------------------------------------------------------- figures


def _trace(run: Any, name: str) -> np.ndarray | None:
    if name not in getattr(run, "traces", {}):
        return None
    arr = np.asarray(run.trace(name), dtype=float)
    return arr if arr.size else None


@register_figure("noprop_steps", needs=("/traces/noprop.acc_steps",))
def noprop_steps_figure(run: Any, out_dir: Any) -> list[Any]:
    """Test accuracy of p_out(z_k) against the number k of denoising steps (each evaluation)."""
    from bioplaus.report import new_figure, save_figure

    arr = _trace(run, "noprop.acc_steps")
    if arr is None or arr.ndim != 2:
        return []
    fig = new_figure(6.0, 4.0)
    ax = fig.subplots()
    k = np.arange(1, arr.shape[1] + 1)
    for i, row in enumerate(arr):
        last = i == len(arr) - 1
        ax.plot(k, 100 * row, color="C0" if last else "0.7", lw=2 if last else 0.8,
                label="last evaluation" if last else None)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("denoising steps")
    ax.set_ylabel("accuracy of p_out(z_k) (%)")
    ax.set_title("NoProp: accuracy against the number of denoising steps", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out_dir, "noprop_steps.png")


@register_figure("noprop_trajectory", needs=("/traces/noprop.z_dist",))
def noprop_trajectory_figure(run: Any, out_dir: Any) -> list[Any]:
    """‖z_t − u_y‖ along the inference chain: the mean per evaluation and the last one's samples."""
    from bioplaus.report import new_figure, save_figure

    mean = _trace(run, "noprop.z_dist")
    if mean is None or mean.ndim != 2:
        return []
    samples = _trace(run, "noprop.z_samples")
    fig = new_figure(6.0, 4.0)
    ax = fig.subplots()
    k = np.arange(mean.shape[1])
    if samples is not None and samples.ndim == 3:
        for row in samples[-1]:
            ax.plot(k, row, color="C1", lw=0.6, alpha=0.5)
    for i, row in enumerate(mean):
        last = i == len(mean) - 1
        ax.plot(k, row, color="C0" if last else "0.6", lw=2 if last else 0.8, label="mean, last evaluation" if last else None)
    ax.set_xlabel("step t of the inference chain")
    ax.set_ylabel("‖z_t − u_y‖")
    ax.set_title("NoProp: z_t trajectories (orange: single test samples)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out_dir, "noprop_trajectory.png")
