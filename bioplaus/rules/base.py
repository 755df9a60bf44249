"""The learning-rule interface: a rule owns the optimisation of its model (and may build it).

The mechanics under it (optimisers, schedules, clipping, the update sequence with its
plugin hooks) live in `bioplaus.training`; a rule states what it trains and how.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bioplaus.config import RuleConfig, parse_options
from bioplaus.errors import ConfigError
from bioplaus.metrics import Metric
from bioplaus.training.hooks import NoOptions, Plugin, PluginList
from bioplaus.training.optim import UpdateGroup, make_optimizer, make_scheduler, update
from bioplaus.training.task import RuleContext

__all__ = ["CLASSIFICATION_METRICS", "LearningRule", "RuleContext", "accuracy"]


CLASSIFICATION_METRICS = (
    Metric("loss", "min", panel="loss", progress=True, summary=True),
    Metric("acc", "max", unit="fraction", panel="accuracy", progress=True, summary=True, headline=True),
)


class LearningRule(ABC):
    """Base class: ``setup(net, ctx)``, ``train_step(x, y) -> metrics``, ``predict(x)``.

    A subclass declares what it ``needs`` of the neuron model (capabilities of
    `bioplaus.neurons.NeuronModel`: "differentiable", "temporal", "static", "spikes",
    "recurrent"), an ``Options`` dataclass for its own keys in ``[rule]``, and implements
    ``train_step``. ``apply_update`` hands a loss to `bioplaus.training.optim.update`, which
    runs the plugin hooks around the optimiser step so that plugins (HLOP, EWC) see and may
    rewrite every gradient.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset({"differentiable"})
    Options: ClassVar[type] = NoOptions
    # What ``train_step`` and ``evaluate`` return (kinds prefix them: train_, val_, test_).
    metrics: ClassVar[tuple[Metric, ...]] = CLASSIFICATION_METRICS
    # Families logged by ``epoch_metrics`` (``layer<k>/<name>`` and the like).
    epoch_metric_families: ClassVar[tuple[Metric, ...]] = ()
    # Registered figures `bioplaus report` adds to those of the run's kind.
    figures: ClassVar[tuple[str, ...]] = ()
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
        """Logits with every class outside ``active_classes`` pushed to -1e9 (no-op if None).

        ``active_classes`` is a list of class indices (one task's head), or a boolean
        ``[batch, classes]`` mask, one head per sample (replayed samples of older tasks).
        """
        if self.active_classes is None:
            return logits
        if self.active_classes.dtype == torch.bool:
            return logits + torch.where(self.active_classes, 0.0, -1e9).to(logits.dtype)
        mask = torch.full((logits.shape[-1],), -1e9, dtype=logits.dtype, device=logits.device)
        mask[self.active_classes] = 0.0
        return logits + mask

    @classmethod
    def parse_options(cls, options: dict[str, Any]) -> Any:
        """The checked ``Options`` (field types and ranges, then `check_options`)."""
        opts = parse_options(cls.Options, options, "rule", common=RuleConfig)
        cls.check_options(opts, "rule")
        return opts

    @classmethod  # noqa: B027 - optional, a no-op unless overridden
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
        self.optimizer = make_optimizer(self.cfg, self.trainable_parameters())
        self.scheduler = make_scheduler(self.cfg, self.optimizer, ctx.total_steps)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def reset_optimizer(self) -> None:
        """New optimiser state (used between tasks of a stream)."""
        self.optimizer = make_optimizer(self.cfg, self.trainable_parameters())
        self.scheduler = make_scheduler(self.cfg, self.optimizer, self.ctx.total_steps)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimiser the rule steps (plugins check their kind)."""
        return [self.optimizer] if self.optimizer is not None else []

    # -- training --------------------------------------------------------------------
    @abstractmethod
    def train_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """One update on a batch; the metrics ``metrics`` declares (loss, acc, ...)."""

    def init_from_data(self, loader: Any) -> None:  # noqa: B027 - optional, a no-op unless overridden
        """Called once with the training loader before training (e.g. NoProp's prototypes)."""

    def train_epoch(self, loader: Any) -> Iterator[dict[str, float]] | None:
        """None (the default): the kind calls `train_step` on each batch of ``loader``.

        A rule that orders its own work (NoProp: block after block, or blocks in worker
        processes) returns an iterator instead; each item is one step's metrics, and the
        kind does its per-step bookkeeping (stop check, logging, plugin hooks) on each.
        """
        return None

    @classmethod
    def steps_per_epoch(cls, opts: Any, n_batches: int) -> int:
        """Steps one epoch of ``n_batches`` batches takes under the parsed options ``opts``
        (`train_epoch` may take more); answered from the options, before any rule exists."""
        return n_batches

    def adopt_plugins(self, plugins: list[Plugin]) -> list[Plugin]:
        """The plugins the kind calls, given the run's plugins (before any set-up): by default
        these; a rule that trains parts of its model apart may hand each part copies."""
        return plugins

    def close(self) -> None:  # noqa: B027 - optional, a no-op unless overridden
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
        extra: list[UpdateGroup] | None = None,
    ) -> None:
        """`bioplaus.training.optim.update` of ``loss`` (hooks, clip, step) with the rule's optimiser.

        ``optimizer``, ``clip`` and ``params`` default to the rule's optimiser, ``[rule]
        clip`` and the optimiser's parameters; ``extra`` adds (optimiser, max grad norm,
        params) groups that share the one backward and are clipped on their own (CCL's
        forward and feedback nets).
        """
        first = (optimizer or self.optimizer, self.cfg.clip if clip is None else clip, params)
        update(self, loss, [first, *(extra or [])], self.centralize)

    def after_step(self) -> None:
        """Per-step bookkeeping called by the trainer (schedules)."""
        self.step += 1
        if self.scheduler is not None:
            self.scheduler.step()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer else float("nan")


def accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())
