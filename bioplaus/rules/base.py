"""The learning-rule interface: a rule owns the optimisation of its model (and may build it)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bioplaus.config import ExperimentConfig, NetworkConfig, RuleConfig, parse_options
from bioplaus.context import Metric
from bioplaus.errors import ConfigError, RunError
from bioplaus.plugins.base import NoOptions, PluginList


@dataclass
class RuleContext:
    """What an experiment tells a rule (and its plugins) at setup.

    ``run`` is the `RunContext` metrics and arrays are emitted through (None outside a
    run: emission is then dropped). ``extra`` carries what a kind adds (task streams:
    ``n_tasks``, ``setting``, ``task_classes``, ``mode``).
    """

    n_classes: int
    input_shape: tuple[int, ...] = ()
    steps_per_epoch: int = 1
    total_steps: int = 0
    seed: int = 0
    network: NetworkConfig | None = None
    run: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        cfg: ExperimentConfig,
        steps_per_epoch: int,
        total_steps: int,
        n_classes: int,
        input_shape: tuple[int, ...] = (),
        run: Any = None,
    ) -> RuleContext:
        """The context for ``cfg``'s seed and ``[network]``."""
        return cls(n_classes, tuple(input_shape), steps_per_epoch, total_steps, cfg.seed, cfg.network, run)

    def log(self, **values: float) -> None:
        """Metrics at the run's current step (dropped outside a run)."""
        if self.run is not None:
            self.run.log(**values)

    def log_array(self, path: str, array: Any, **attrs: Any) -> None:
        if self.run is not None:
            self.run.log_array(path, array, **attrs)


CLASSIFICATION_METRICS = (
    Metric("loss", "min", panel="loss", progress=True, summary=True),
    Metric("acc", "max", unit="fraction", panel="accuracy", progress=True, summary=True, headline=True),
)


class LearningRule:
    """Base class: ``setup(net, ctx)``, ``train_step(x, y) -> metrics``, ``predict(x)``.

    A subclass declares what it ``needs`` of the neuron model (capabilities of
    `bioplaus.neurons.NeuronModel`: "differentiable", "temporal", "static", "spikes",
    "recurrent") and an ``Options`` dataclass for its own
    keys in ``[rule]``. ``apply_update`` runs the plugin hooks around the optimiser step so
    that plugins (HLOP, EWC) see and may rewrite every gradient.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset({"differentiable"})
    Options: ClassVar[type] = NoOptions
    # What ``train_step`` and ``evaluate`` return (kinds prefix them: train_, val_, test_).
    metrics: ClassVar[tuple[Metric, ...]] = CLASSIFICATION_METRICS
    # Families logged by ``epoch_metrics`` (``layer<k>/<name>`` and the like).
    epoch_metric_families: ClassVar[tuple[Metric, ...]] = ()
    # Gradient centralisation before the plugin hooks (CCL's option; off for other rules).
    centralize: bool = False

    def __init__(self, cfg: RuleConfig | None = None) -> None:
        self.cfg = cfg or RuleConfig(name=self.name)
        self.opts = self.parse_options(self.cfg.options)
        self.plugins = PluginList()
        self.step = 0
        self.net: Any = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        # Task-incremental learning ("multi-head" over disjoint class sets): the continual
        # trainer sets the classes of the current task; logits of other classes are masked.
        self.active_classes: Tensor | None = None

    def mask_logits(self, logits: Tensor) -> Tensor:
        """Logits with every class outside ``active_classes`` pushed to -1e9 (no-op if None)."""
        if self.active_classes is None:
            return logits
        mask = torch.full((logits.shape[-1],), -1e9, dtype=logits.dtype, device=logits.device)
        mask[self.active_classes] = 0.0
        return logits + mask

    @classmethod
    def parse_options(cls, options: dict[str, Any]) -> Any:
        """The checked ``Options`` (field types and ranges, then `check_options`)."""
        opts = parse_options(cls.Options, options, "rule")
        cls.check_options(opts, "rule")
        return opts

    @classmethod
    def check_options(cls, opts: Any, where: str) -> None:
        """Cross-field and choice checks of parsed options (run when the config is read)."""

    # -- the model -------------------------------------------------------------------
    def build_model(self, ctx: RuleContext) -> nn.Module:
        """The model this rule trains; by default the ``[network]`` layer stack.

        A rule that needs another model (an autoencoder, NoProp's blocks) overrides this;
        ``[network]`` is then read only as far as the rule wants.
        """
        from bioplaus.nets import build_net

        if ctx.network is None:
            raise ConfigError("network: this rule builds its model from [network], which was not given")
        return build_net(ctx.network, ctx.input_shape, ctx.n_classes, seed=ctx.seed)

    def protected_layers(self) -> list[Any]:
        """Layers plugins may act on (HLOP, EWC, projection), in order; index = position.

        Each has ``weight``, ``name``, ``is_conv``, ``is_output`` and a ``state`` holding
        its presynaptic ``input`` after a forward pass.
        """
        return list(getattr(self.net, "layers", []))

    def probe_points(self) -> list[Any]:
        """Layers whose ``state`` probes record (spikes, membrane, current, input, out)."""
        return self.protected_layers()

    @torch.no_grad()
    def probe_forward(self, x: Tensor) -> None:
        """Run the model on probe samples (eval mode, no gradient) to fill the layer states."""
        net = self.net
        was = net.training
        net.eval()
        net(x)
        net.train(was)

    def modules(self) -> dict[str, nn.Module]:
        """Everything saved under ``/model/<name>``: the model as ``net``, then extras."""
        return {"net": self.net, **self.extra_modules()}

    # -- life cycle ------------------------------------------------------------------
    def setup(self, net: nn.Module, ctx: RuleContext) -> None:
        """Bind the model and build the optimiser (and its schedule) over its parameters."""
        self.net = net
        self.ctx = ctx
        self.optimizer = self.make_optimizer(self.trainable_parameters())
        self.scheduler = self.make_scheduler(self.optimizer, ctx.total_steps)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def make_optimizer(
        self, params: Any, lr: float | None = None, momentum: float | None = None
    ) -> torch.optim.Optimizer:
        c = self.cfg
        lr = c.lr if lr is None else lr
        mom = c.momentum if momentum is None else momentum
        params = [_group(g) for g in ([params] if isinstance(params, Tensor) else params)]
        if c.optimizer == "sgd":
            # fused: one pass over each parameter (read p, g, buf; write p, buf) instead of
            # foreach's three; bit-identical results (tests/test_ccl.py checks).
            kind = {"fused": True} if _fusable(params) else {"foreach": True}
            return torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=c.weight_decay, **kind)
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=c.weight_decay)
        if c.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=c.weight_decay)
        raise ConfigError(f"rule.optimizer: unknown optimizer {c.optimizer!r}; valid: sgd, adam, adamw")

    def make_scheduler(self, opt: torch.optim.Optimizer, total_steps: int) -> Any:
        if self.cfg.schedule != "cosine" or total_steps <= 0:
            return None
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
        )

    def reset_optimizer(self) -> None:
        """New optimiser state (used between tasks of a stream)."""
        self.optimizer = self.make_optimizer(self.trainable_parameters())
        self.scheduler = self.make_scheduler(self.optimizer, self.ctx.total_steps)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimiser the rule steps (plugins check their kind)."""
        return [self.optimizer] if self.optimizer is not None else []

    # -- training --------------------------------------------------------------------
    def train_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        raise NotImplementedError

    def init_from_data(self, loader: Any) -> None:
        """Called once with the training loader before training (e.g. NoProp's prototypes)."""

    def train_epoch(self, loader: Any) -> Iterator[dict[str, float]] | None:
        """None (the default): the kind calls `train_step` on each batch of ``loader``.

        A rule that orders its own work (NoProp: block after block, or blocks in worker
        processes) returns an iterator instead; each item is one step's metrics, and the
        kind does its per-step bookkeeping (stop check, logging, plugin hooks) on each.
        """
        return None

    def steps_per_epoch(self, n_batches: int) -> int:
        """Steps one epoch of ``n_batches`` batches takes (`train_epoch` may take more)."""
        return n_batches

    def close(self) -> None:
        """Release what the rule holds beyond its model (worker processes); called once."""

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Logits for a batch (inference never updates anything)."""
        return self.mask_logits(self.net(x))

    @torch.no_grad()
    def evaluate(self, loader: Any) -> dict[str, float]:
        """Metrics of the rule's predictions over a loader: mean cross-entropy and accuracy.

        Rules whose task is not classification (autoencoders) override this.
        """
        net = self.net
        was = net.training
        net.eval()
        loss_sum, correct, n = 0.0, 0, 0
        for x, y in loader:
            logits = self.predict(x)
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        net.train(was)
        return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1)}

    def epoch_metrics(self) -> dict[str, float]:
        """Extra per-epoch metrics (e.g. per-layer alignment); names like ``layer1/align``."""
        return {}

    def extra_modules(self) -> dict[str, nn.Module]:
        """Modules besides the net whose parameters belong in the saved model."""
        return {}

    def apply_update(
        self,
        loss: Tensor,
        optimizer: torch.optim.Optimizer | None = None,
        clip: float | None = None,
        params: list[Tensor] | None = None,
        extra: list[tuple[torch.optim.Optimizer, float, list[Tensor] | None]] | None = None,
    ) -> None:
        """zero_grad, one backward, [centralise], ``after_backward`` hooks, clip, step, ``after_update``.

        ``extra`` adds (optimiser, max grad norm, params) groups that share the one backward
        and are clipped on their own (CCL's forward and feedback nets); params None means the
        optimiser's own. An optimiser shared by several groups is stepped once.
        """
        self.check_finite(loss)
        first = (optimizer or self.optimizer, self.cfg.clip if clip is None else clip, params)
        groups = [
            (opt, c, ps or [p for g in opt.param_groups for p in g["params"]])
            for opt, c, ps in [first, *(extra or [])]
        ]
        opts = list({id(o): o for o, _, _ in groups}.values())
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.centralize:
            for _, _, ps in groups:
                centralize_gradients(ps)
        self.plugins.after_backward(self)
        clipped = [(ps, c) for _, c, ps in groups if c and c > 0]
        if clipped and all(_plain_fused_sgd(o) for o in opts):
            # The clip's rescale is folded into the fused SGD pass (one pass over the
            # gradients fewer); same numbers to float rounding (g / s for g · (1 / s)).
            scales = clip_scales(clipped)
            for opt in opts:
                fused_sgd_step(opt, scales)
        else:
            if len(clipped) == 1:
                clip_grad_norm(*clipped[0])
            elif clipped:
                clip_grad_norms(clipped)
            for opt in opts:
                opt.step()
        self.plugins.after_update(self)

    def after_step(self) -> None:
        """Per-step bookkeeping called by the trainer (schedules)."""
        self.step += 1
        if self.scheduler is not None:
            self.scheduler.step()

    def check_finite(self, loss: Tensor) -> None:
        if not torch.isfinite(loss).all():
            raise RunError(f"loss is {loss.item()} at step {self.step + 1}: the run diverged")

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer else float("nan")


def accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def centralize_gradients(params: list[Tensor]) -> None:
    """Gradient centralisation: g ← g - mean of g over every dim but the output one (weights)."""
    with torch.no_grad():
        for p in params:
            if p.grad is None or p.dim() < 2:
                continue
            p.grad -= p.grad.mean(dim=tuple(range(1, p.dim())), keepdim=True)


def _group(g: Any) -> Any:
    """A parameter or a param group with its "params" as a list (generators read once)."""
    if not isinstance(g, dict):
        return g
    ps = g["params"]
    return {**g, "params": [ps] if isinstance(ps, Tensor) else list(ps)}


def _fusable(params: Any) -> bool:
    """Whether torch's fused SGD takes these parameters (floating, all on one CPU/CUDA device)."""
    ps = [p for g in params for p in g["params"]] if params and isinstance(params[0], dict) else list(params)
    if not ps:
        return False
    dev = ps[0].device
    return dev.type in ("cpu", "cuda") and all(p.is_floating_point() and p.device == dev for p in ps)


def _group_norms(groups: list[tuple[list[Tensor], float]]) -> tuple[list[list[Tensor]], list[float]]:
    """Each group's gradients and their joint L2 norm: one ``_foreach_norm``, one host read."""
    grads = [[p.grad for p in ps if p.grad is not None] for ps, _ in groups]
    flat = [g for gs in grads for g in gs]
    if not flat:
        return grads, [0.0] * len(groups)
    norms = torch._foreach_norm(flat)
    totals, k = [], 0
    for gs in grads:
        part = norms[k:k + len(gs)]
        k += len(gs)
        totals.append(torch.linalg.vector_norm(torch.stack(part)) if part else torch.zeros(()))
    return grads, torch.stack(totals).tolist()


def clip_scales(groups: list[tuple[list[Tensor], float]]) -> dict[int, float]:
    """The clip factor max_norm / (norm + 1e-6) of each gradient whose group needs one.

    Keys are ``id(param)``; a group within its bound has no entry. The norms are those of
    ``clip_grad_norms``.
    """
    _, totals = _group_norms(groups)
    out: dict[int, float] = {}
    for (ps, max_norm), total in zip(groups, totals):
        if total > max_norm:
            out.update({id(p): max_norm / (total + 1e-6) for p in ps if p.grad is not None})
    return out


def _plain_fused_sgd(opt: torch.optim.Optimizer) -> bool:
    """A torch SGD whose every group is fused and which has no step hooks of its own."""
    from torch.optim import optimizer as _o

    return (
        type(opt) is torch.optim.SGD
        and "step" not in vars(opt)  # no step patched onto the instance
        and all(g.get("fused") and not g.get("differentiable") for g in opt.param_groups)
        and not opt._optimizer_step_pre_hooks
        and not opt._optimizer_step_post_hooks
        and not _o._global_optimizer_pre_hooks
        and not _o._global_optimizer_post_hooks
        and getattr(opt, "grad_scale", None) is None
    )


@torch.no_grad()
def fused_sgd_step(opt: torch.optim.SGD, scales: dict[int, float]) -> None:
    """``opt.step()`` of a fused SGD with each gradient first multiplied by ``scales[id(p)]``.

    The multiply happens inside the fused kernel (its ``grad_scale`` divides), and the
    kernel writes the scaled gradient back to ``p.grad`` as the separate multiply would.
    Parameters of one group that share a factor go in one call; a group whose parameters
    have different factors is split.
    """
    from torch.optim.sgd import sgd

    for group in opt.param_groups:
        by_scale: dict[float | None, list[Tensor]] = {}
        for p in group["params"]:
            if p.grad is not None:
                by_scale.setdefault(scales.get(id(p)), []).append(p)
        for s, params in by_scale.items():
            grads = [p.grad for p in params]
            bufs = [opt.state[p].get("momentum_buffer") for p in params]
            sgd(
                params, grads, bufs, fused=True,
                grad_scale=None if s is None else torch.tensor(1.0 / s, dtype=torch.float32, device=params[0].device),
                weight_decay=group["weight_decay"], momentum=group["momentum"], lr=group["lr"],
                dampening=group["dampening"], nesterov=group["nesterov"], maximize=group["maximize"],
            )
            if group["momentum"] != 0:
                for p, b in zip(params, bufs):
                    opt.state[p]["momentum_buffer"] = b


def clip_grad_norms(groups: list[tuple[list[Tensor], float]]) -> list[float]:
    """``clip_grad_norm`` of several parameter groups, each on its own norm, in one pass.

    One ``_foreach_norm`` over every gradient and one host read of the group norms, instead
    of one of each per group (CCL clips its forward and feedback nets separately).
    """
    grads, values = _group_norms(groups)
    for gs, (_, max_norm), total in zip(grads, groups, values):
        if gs and total > max_norm:
            torch._foreach_mul_(gs, max_norm / (total + 1e-6))
    return values


def clip_grad_norm(params: list[Tensor], max_norm: float) -> float:
    """Scale the gradients so that their joint L2 norm is at most ``max_norm``; return the norm.

    As ``torch.nn.utils.clip_grad_norm_`` but the rescale is skipped when the norm is already
    within bounds (one fused norm, no multiply on most steps of a converged run).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
    if total > max_norm:
        torch._foreach_mul_(grads, max_norm / (total + 1e-6))
    return total
