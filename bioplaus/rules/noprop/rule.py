"""NoProp (Li, Teh & Pascanu 2025): blocks that each learn to denoise the label embedding,
trained without a forward or backward pass through each other.

Variants (``[rule] variant``):

- ``dt``: T blocks û_t(z_{t-1}, x) with the fixed cosine schedule of
  `bioplaus.rules.noprop.blocks` (ᾱ_t rises with t). Block t's loss is

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

Plugins in the block-ordered modes (``sequential``, ``parallel``) act block by block: each
block is a rule of its own (`BlockUnit`) with its own copies of the run's plugins, which see
its layers only and run their hooks where the block trains (in a worker for ``parallel``).
Their logs name layers by their index in `NoProp.protected_layers`, as in ``interleaved``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bioplaus.config import bounded, check_choice
from bioplaus.device import generator as make_generator
from bioplaus.errors import ConfigError
from bioplaus.metrics import Metric
from bioplaus.nets import BYTES_PER_PARAM, check_size
from bioplaus.registry import register_rule
from bioplaus.resources import check_workers
from bioplaus.rules.base import LearningRule
from bioplaus.rules.noprop.blocks import (
    BlockUnit,
    block_seed,
    block_update,
    epoch_batches,
    head_loss,
    spiking_of,
)
from bioplaus.rules.noprop.model import NoPropModel
from bioplaus.rules.noprop.parallel import BlockPool, loader_copy
from bioplaus.rules.noprop.variants import VARIANTS
from bioplaus.training.hooks import Plugin, Rule
from bioplaus.training.optim import make_optimizer
from bioplaus.training.task import RuleContext, TaskInfo

EMBEDDINGS = ("onehot", "learned", "prototype")
MODES = ("interleaved", "sequential", "parallel")
INFERENCE = ("stochastic", "mean", "direct")
WORKER_BYTES = 320 << 20  # a parallel-mode worker: interpreter, torch, its loader copy (measured ~320 MB)


# ----------------------------------------------------------------------------- the rule


@register_rule("noprop")
@final
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
        check_choice(o.variant, tuple(VARIANTS), f"{where}.variant")
        check_choice(o.embedding, EMBEDDINGS, f"{where}.embedding")
        check_choice(o.mode, MODES, f"{where}.mode")
        check_choice(o.inference, INFERENCE, f"{where}.inference")
        check_choice(o.bp_readout, ("logits", "p_out"), f"{where}.bp_readout")
        if len(o.channels) != 3:
            raise ConfigError(f"{where}.channels: the image path has three convs; give three widths, got {o.channels}")
        if o.mode != "interleaved" and not VARIANTS[o.variant].block_ordered:
            raise ConfigError(f"{where}.mode: {o.mode!r} needs variant 'dt' (the other variants train one module)")
        if o.mode == "parallel" and o.embedding != "onehot":
            raise ConfigError(
                f"{where}.mode: 'parallel' needs embedding 'onehot': a learned embedding is shared by every "
                "block's loss and cannot live in several processes"
            )
        if not (o.gamma_min < o.gamma_max):
            raise ConfigError(f"{where}.gamma_min: must be below gamma_max")

    def __init__(self, cfg: Any = None) -> None:
        super().__init__(cfg)
        self.block_plugins: list[Plugin] = []  # the run's plugins in block-ordered modes (adopt_plugins)
        self.pool: BlockPool | None = None  # `close` runs after any failure, set up or not

    @classmethod
    def steps_per_epoch(cls, opts: Any, n_batches: int) -> int:
        """Sequential and parallel DT count one step per block and batch."""
        return n_batches * opts.T if opts.mode != "interleaved" else n_batches

    @property
    def block_ordered(self) -> bool:
        """Blocks train one after another (sequential) or in workers (parallel)."""
        return self.opts.mode != "interleaved"

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
        if len(ctx.input_shape) not in (1, 2, 3):
            raise ConfigError(f"data: NoProp needs image-shaped inputs, got shape {ctx.input_shape}")
        if len(ctx.input_shape) == 1 or min(ctx.input_shape[-2:]) < 4:
            raise ConfigError(
                f"data: NoProp's image path pools twice by 2 and needs images of at least 4x4 pixels, "
                f"got input shape {tuple(ctx.input_shape)}"
            )
        self.check_size(ctx)
        self.model_seed = ctx.seed
        return NoPropModel(self.opts, ctx.input_shape, ctx.n_classes, ctx.seed, spiking_of(ctx.network))

    def check_size(self, ctx: RuleContext) -> None:
        """Refuse a model (``width``, ``channels``, ``embed_dim``, ``T``) or ``parallel``
        workers that would not fit in memory, before anything is allocated.

        The parameters are counted on a skeleton built on the meta device (exact, no memory);
        each worker holds its blocks' share of them beside ~WORKER_BYTES of interpreter and torch.
        """
        o = self.opts
        with torch.device("meta"):
            skeleton = NoPropModel(o, ctx.input_shape, ctx.n_classes, ctx.seed, None)
        params = sum(p.numel() for p in skeleton.parameters())
        check_size(params, f"rule (noprop {o.variant}: T={o.T}, width={o.width}, channels={list(o.channels)}, "
                           f"embedding={o.embedding}, embed_dim={o.embed_dim})")
        if o.mode == "parallel":
            workers = min(o.workers, o.T)
            check_workers(workers, "rule.workers", WORKER_BYTES + BYTES_PER_PARAM * params / workers)

    def protected_layers(self) -> list[Any]:
        """Each block's convs and dense layers (block by block), then p_out."""
        return self.net.plastic_layers()

    def probe_forward(self, x: Tensor) -> None:
        was = self.net.training
        self.net.eval()
        with torch.no_grad():
            self.net(x, make_generator(0))
        self.net.train(was)

    def adopt_plugins(self, plugins: list[Plugin]) -> list[Plugin]:
        """Block-ordered modes: one `BlockPlugins` in place of ``plugins``, whose copies each
        block holds (see the module docstring)."""
        self.block_plugins = list(plugins) if self.block_ordered else []
        return [BlockPlugins(self)] if self.block_plugins else list(plugins)

    # -- life cycle ------------------------------------------------------------------
    def setup(self, net: nn.Module, ctx: RuleContext) -> None:
        self.net = net
        net.active_classes = self._active
        self.ctx = ctx
        o = self.opts
        if self.block_ordered and ctx.stream is not None and ctx.stream.mode == "joint":
            raise ConfigError(f"rule.mode: a joint stream mixes the tasks batch by batch; NoProp's blocks "
                              f"then train 'interleaved', not {o.mode!r}")
        m: NoPropModel = net
        self.head_gen = make_generator(block_seed(ctx.seed, 0) + 1)
        self.eval_seed = block_seed(ctx.seed, 0) + 2
        shared = list(m.head.parameters()) + ([m.embed.W] if m.embed.learnable else [])
        self.units: list[BlockUnit] = []
        self.block_sums: dict[int, list[float]] = {}
        self.head_sum = [0.0, 0]
        self.pool: BlockPool | None = None
        if m.kind.block_ordered:
            self.units = [BlockUnit(self.cfg, m, t, ctx.seed) for t in range(1, o.T + 1)]
            self.optimizer = make_optimizer(self.cfg, shared)  # p_out (+ W_embed): shared by all blocks
        else:
            self.optimizer = make_optimizer(self.cfg, m.kind.parameters(m, shared))
            self.train_gen = make_generator(block_seed(ctx.seed, 1) + 1)
            for b in m.blocks:
                b.set_generator(self.train_gen)
            if m.cnn is not None:
                for d in m.cnn["image"].drops:
                    d.gen = self.train_gen
        self.scheduler = None

    def layer_offset(self, t: int) -> int:
        """The index of block t's first layer in `protected_layers`."""
        return sum(len(b.plastic_layers()) for b in self.net.blocks[: t - 1])

    def unit_hook(self, hook: str, first: Any, loader_or_metrics: Any) -> None:
        """Call ``hook`` of every block's plugins (in the workers for ``parallel``); a loader
        argument is passed as a copy in its current state (every block sees the same one)."""
        is_loader = hook in ("before_task", "after_task")
        if self.opts.mode == "parallel":
            if self.pool is None and is_loader:
                self.pool = BlockPool(self, loader_or_metrics, self.block_plugins)
            if self.pool is not None:
                self.pool.hook(hook, first, None if is_loader else loader_or_metrics)
            return
        for u in self.units:
            getattr(u.plugins, hook)(u, first, loader_copy(loader_or_metrics) if is_loader else loader_or_metrics)

    def reset_optimizer(self) -> None:
        """Fresh optimiser state for every block and for the shared p_out / W_embed (task streams)."""
        if not self.units:
            return super().reset_optimizer()
        m: NoPropModel = self.net
        for u in self.units:
            u.reset_optimizer()
        if self.pool is not None:
            self.pool.reset_optimizers()
        self.optimizer = make_optimizer(self.cfg, list(m.head.parameters()) + ([m.embed.W] if m.embed.learnable else []))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for o in self.optimizers() for g in o.param_groups for p in g["params"]]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer, *(u.optimizer for u in self.units)]

    def init_from_data(self, loader: Any) -> None:
        """Prototype embedding: each class's most central training image (see `LabelEmbedding`)."""
        if self.opts.embedding == "prototype":
            self.net.embed.init_prototypes(loader.x, loader.y, self.opts.prototype_cap, self.ctx.seed)

    # -- training --------------------------------------------------------------------
    def block_step(self, unit: BlockUnit, x: Tensor, y: Tensor) -> dict[str, float]:
        """One update of block t and the shared p_out / W_embed on a batch (`block_update`)."""
        l2, acc = block_update(unit, x, y, unit if self.block_ordered else self, head=self)
        self.note(unit.t, l2)
        return {"loss": l2, "acc": acc}

    def note(self, t: int, l2: float) -> None:
        """Add a step's L2 of block t to the epoch's sums."""
        s = self.block_sums.setdefault(t, [0.0, 0])
        s[0] += l2
        s[1] += 1

    def train_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        return self.net.kind.train_step(self, x, y)

    def train_epoch(self, loader: Any) -> Iterator[dict[str, float]] | None:
        """Sequential and parallel DT take over the epoch (one step per block and batch)."""
        if not self.block_ordered:
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
        if self.pool is None:
            self.pool = BlockPool(self, loader, self.block_plugins)
        self.pool.start_epoch(loader)
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
                self.note(t, l2)
                yield {"loss": l2, "acc": acc}
        except GeneratorExit:
            # stopped early (train.max_steps): the workers finish their epoch; evaluate on it
            for _ in self.pool.steps():
                pass
            self.pool.collect()
            raise
        self.pool.collect()

    def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.close()

    # -- evaluation ------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.mask_logits(self.net(x, make_generator(self.eval_seed)))

    def evaluate(self, loader: Any) -> dict[str, float]:
        """`_evaluate` with the run's stop check between the inference chain's steps."""
        run = getattr(self.ctx, "run", None)
        self.net.stop_check = getattr(run, "check_stop", None)
        try:
            return self._evaluate(loader)
        finally:
            self.net.stop_check = None

    @torch.no_grad()
    def _evaluate(self, loader: Any) -> dict[str, float]:
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
        if m.cnn is not None:
            out = super().evaluate(loader)
            m.train(was)
            return {**out, "acc_det": out["acc"]}
        steps = m.kind.eval_steps(o)
        loss_sum, n, correct, correct_det = 0.0, 0, 0, 0
        step_correct = torch.zeros(steps)
        dist_sum = torch.zeros(steps + 1)
        samples: list[Tensor] = []
        for x, y in loader:
            zs, per_step = m.sampled_step_logits(x, o.inference, gen, steps, o.samples)
            logits = self.mask_logits(per_step[-1])
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            if m.kind.deterministic:
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
               "acc_det": (correct_det / n) if m.kind.deterministic else correct / n}
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
        """The variant's per-epoch metrics (per block: mean L2, SNR weight; the head's CE)."""
        out = self.net.kind.epoch_metrics(self)
        self.block_sums = {}
        self.head_sum = [0.0, 0]
        return out


class BlockPlugins(Plugin):
    """The run's plugins in a block-ordered mode: each block holds its own copies (set up on
    the block, `BlockUnit.bind_plugins`); the kind's task and epoch hooks reach every copy,
    in this process or in the workers. Steps' hooks run where the block steps."""

    name = "noprop_blocks"

    def __init__(self, rule: NoProp) -> None:
        super().__init__()
        self.rule = rule

    def setup(self, rule: Rule, ctx: RuleContext) -> None:
        r = self.rule
        if r.opts.mode == "sequential":
            for u in r.units:
                u.bind_plugins(r.block_plugins, ctx, r.layer_offset(u.t), ctx.run)

    def before_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        self.rule.unit_hook("before_task", task, loader)

    def after_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        self.rule.unit_hook("after_task", task, loader)

    def after_epoch(self, rule: Rule, epoch: int, metrics: dict[str, float]) -> None:
        self.rule.unit_hook("after_epoch", epoch, metrics)

    def close(self, rule: Rule) -> None:
        for u in self.rule.units:
            u.plugins.close(u)
