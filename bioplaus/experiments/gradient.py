"""The template of kinds that train a learning rule with plugins on batches of labelled data.

`GradientExperiment` holds what the ``supervised`` and ``continual`` kinds share: their tables
``[data]``, ``[network]``, ``[rule]`` and ``[[plugins]]`` and the checks of them, building the rule (which builds
its model), its plugins and the probes, the training step (stop check, the rule's step,
divergence checks, metric logging, plugin hooks), weight snapshots and saving the model.
A kind supplies its data, its loop and its metric declarations.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from bioplaus.config import (
    DataConfig,
    ExperimentConfig,
    NetworkConfig,
    PluginConfig,
    RuleConfig,
    check_choice,
)
from bioplaus.context import finite_or_raise
from bioplaus.errors import ConfigError, RunError
from bioplaus.experiments.base import Experiment
from bioplaus.metrics import Metric
from bioplaus.nets import check_size, plan_net
from bioplaus.neurons import check_spiking_table, missing_needs, models_with, neuron_model
from bioplaus.registry import DATASETS, PLUGINS, RULES
from bioplaus.rules.base import LearningRule
from bioplaus.training.hooks import PluginList
from bioplaus.training.task import RuleContext, TaskInfo


class GradientExperiment(Experiment):
    """Template: a rule, its model and its plugins over mini-batches (see module docstring)."""

    rule: LearningRule
    plugins: PluginList
    devices = ("cpu", "cuda")
    # The layout of the config the run file has always stored (byte-identical run files).
    table_order = ("data", "network", "rule", "train", "record", "plugins")

    # -- config -----------------------------------------------------------------------
    @classmethod
    def sections(cls) -> dict[str, Any]:
        """``[data]``, ``[network]``, ``[rule]``, ``[[plugins]]``, then the kind's own table."""
        own = {"data": DataConfig, "network": NetworkConfig, "rule": RuleConfig, "plugins": list[PluginConfig]}
        return {**own, **super().sections()}

    @classmethod
    def validate(cls, cfg: ExperimentConfig) -> None:
        d, n, r = cfg.data, cfg.network, cfg.rule
        check_choice(d.dataset, DATASETS.names(), "data.dataset")
        check_choice(d.normalize, ["none", "unit", "standard"], "data.normalize")
        check_choice(d.evaluate_on, ["test", "val"], "data.evaluate_on")
        if d.evaluate_on == "val" and d.val_fraction <= 0:
            raise ConfigError("data.evaluate_on: 'val' needs data.val_fraction > 0")
        model = neuron_model(n.backend)
        check_choice(n.arch, ["mlp", "cnn"], "network.arch")
        check_choice(n.init, ["default", "kaiming", "xavier", "orthogonal"], "network.init")
        if n.arch == "cnn" and not n.channels:
            raise ConfigError("network.channels: a cnn needs at least one conv block, e.g. [32, 64]")
        check_spiking_table(n)
        model.check(n)
        rule_cls = RULES.get(r.name, "rule.name")
        check_choice(r.optimizer, ["sgd", "adam", "adamw"], "rule.optimizer")
        check_choice(r.schedule, ["none", "cosine"], "rule.schedule")
        lacks = missing_needs(model, rule_cls.needs)
        if lacks:
            raise ConfigError(
                f"network.backend: rule {r.name!r} supports {', '.join(models_with(rule_cls.needs))}, "
                f"not {n.backend!r} (it needs {', '.join(lacks)} neurons)"
            )
        rule_cls.parse_options(r.options)
        for i, pc in enumerate(cfg.plugins):
            PLUGINS.get(pc.name, f"plugins[{i}].name").parse_options(pc.options, where=f"plugins[{i}]")

    @classmethod
    def rule_metrics(cls, cfg: ExperimentConfig, splits: tuple[str, ...], headline_split: str) -> list[Metric]:
        """The rule's step/eval metrics under each split prefix, its families, the plugins'."""
        rule_cls = RULES.get(cfg.rule.name, "rule.name")
        out = [Metric("lr", panel="learning rate", description="the optimiser's learning rate")]
        for m in rule_cls.metrics:
            out.append(replace(m, name=f"train_{m.name}", headline=False, summary=False))
            for split in splits:
                out.append(replace(m, name=f"{split}_{m.name}", progress=False, headline=m.headline and split == headline_split))
        out += list(rule_cls.epoch_metric_families)
        for pc in cfg.plugins:
            out += list(PLUGINS.get(pc.name).metrics)
        return out

    # -- building ---------------------------------------------------------------------
    def build_rule(
        self,
        n_classes: int,
        input_shape: tuple[int, ...],
        steps_per_epoch: int,
        total_steps: int,
        stream: TaskInfo | None = None,
        n_samples: int = 0,
    ) -> None:
        """The rule, the model it builds and the plugins (not yet set up).

        ``stream``: the first task of the task stream the rule trains on (None: one task).
        ``n_samples``: the most samples a batch can hold (the larger split), for the
        memory check; 0 = the configured batch sizes.
        """
        cfg = self.cfg
        self.check_memory(n_classes, input_shape, n_samples)
        factor = cfg.train.divergence_factor
        if not (factor == 0 or (math.isfinite(factor) and factor > 1)):
            raise ConfigError(f"train.divergence_factor: must be 0 (off) or a finite number > 1, got {factor}")
        self.reset_divergence()
        self.rule = RULES.get(cfg.rule.name, "rule.name")(cfg.rule)
        self.rule_ctx = RuleContext(
            n_classes, tuple(input_shape), steps_per_epoch, total_steps, cfg.seed, cfg.network, self.ctx, stream
        )
        self.model = self.rule.build_model(self.rule_ctx)
        self.user_plugins = [PLUGINS.get(p.name)(p.options) for p in cfg.plugins]
        self.plugins = PluginList()

    def steps_per_epoch(self, n_batches: int) -> int:
        """Steps an epoch of ``n_batches`` batches takes under ``[rule]`` (no rule is built)."""
        cls = RULES.get(self.cfg.rule.name, "rule.name")
        return cls.steps_per_epoch(cls.parse_options(self.cfg.rule.options), n_batches)

    def check_memory(self, n_classes: int, input_shape: tuple[int, ...], n_samples: int = 0) -> None:
        """Refuse a ``[network]`` stack whose parameters and activations exceed the memory
        (before the model or the run file exists).

        Activations: a batch of B samples keeps about 6 float32 values per neuron and time
        step (input, current, membrane, output, their gradients), B·T·units·6 in all.
        """
        cfg = self.cfg
        n = cfg.network
        plan = plan_net(n, tuple(input_shape), n_classes)
        params = plan.params
        if n.arch != "cnn" and n.channels:
            # Rules that build their own model (the conv autoencoder) read the conv widths
            # of an mlp config: a one-pixel image bounds their size from below.
            params = max(params, plan_net(replace(n, arch="cnn"), (1, 1, 1), n_classes).params)
        steps = neuron_model(n.backend).steps(n)
        batch = max(cfg.data.batch_size, cfg.data.eval_batch_size)
        if n_samples:
            batch = min(batch, n_samples)
        units = plan.units + math.prod(input_shape)
        check_size(params, "network", activations=6 * batch * steps * units)

    def setup_rule(self, probe_x: Tensor, probe_y: Tensor | None = None) -> None:
        """Set up the rule on its model, then the plugins and the probes (before the file)."""
        from bioplaus.plugins.probes import Probes

        cfg = self.cfg
        probes = Probes(cfg.record.probes, probe_x, probe_y) if cfg.record.probes else None
        self.probes = probes
        self.plugins = PluginList(self.rule.adopt_plugins(self.user_plugins) + ([probes] if probes else []))
        self.rule.plugins = self.plugins
        self.rule.setup(self.model, self.rule_ctx)
        self.plugins.setup(self.rule, self.rule_ctx)

    def model_meta(self) -> dict[str, Any]:
        describe = getattr(self.model, "describe", None)
        return {
            "network": describe() if callable(describe) else type(self.model).__name__,
            "rule": self.cfg.rule.name,
            "dataset": self.cfg.data.dataset,
        }

    # -- the loop's pieces ------------------------------------------------------------
    def train_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """One step of the rule with every hook (see `record_step`); returns the rule's metrics.

        Fails the run (`RunError` naming the step) on a non-finite metric, on the watched
        metric diverging (`check_divergence`) and, on logged steps, on a non-finite
        parameter.
        """
        self.ctx.check_stop()
        dev = self.ctx.device
        if x.device != dev:  # a loader the kind could not move (see bioplaus.device.to_device)
            x, y = x.to(dev), y.to(dev)
        x, y = self.plugins.before_step(self.rule, x, y)
        return self.record_step(self.rule.train_step(x, y))

    def epoch_steps(self, loader: Any) -> Iterator[dict[str, float]]:
        """One epoch of recorded steps: the rule's own plan (`LearningRule.train_epoch`) or
        `train_step` on each batch of ``loader``."""
        plan = self.rule.train_epoch(loader)
        if plan is None:
            for x, y in loader:
                yield self.train_step(x, y)
            return
        try:
            while True:
                self.ctx.check_stop()
                m = next(plan, None)
                if m is None:
                    return
                yield self.record_step(m)
        finally:
            plan.close()

    def record_step(self, m: dict[str, float]) -> dict[str, float]:
        """The per-step bookkeeping after the rule's step returned its metrics ``m``."""
        ctx = self.ctx
        self.rule.after_step()
        step = ctx.step + 1
        finite_or_raise(m, step)
        self.check_divergence(m, step)
        logged = step == 1 or step % self.cfg.train.log_every == 0
        if logged:
            self.check_parameters(step)
        ctx.step = step
        if logged:
            ctx.log(lr=self.rule.lr, **{f"train_{k}": v for k, v in m.items()})
        self.plugins.after_step(self.rule, step, m)
        return m

    # Floor of the running minimum, relative to the first value: a loss that approaches 0
    # must not make every later batch look like a divergence.
    DIVERGENCE_FLOOR = 1e-3

    def reset_divergence(self) -> None:
        """Forget the watched metric's history (at the start of a task whose loss restarts)."""
        self._div_first: float | None = None
        self._div_min = math.inf

    def check_divergence(self, m: dict[str, float], step: int) -> None:
        """`RunError` when the rule's first declared "min" metric (e.g. ``loss``) exceeds
        ``train.divergence_factor`` x max(its lowest value so far, `DIVERGENCE_FLOOR` x its
        first value). Catches divergence that stays finite (a spiking net at a huge lr)."""
        factor = self.cfg.train.divergence_factor
        name = next((d.name for d in type(self.rule).metrics if d.direction == "min"), None)
        if not factor or name is None or name not in m:
            return
        if not hasattr(self, "_div_min"):
            self.reset_divergence()
        v = float(m[name])
        if self._div_first is None:
            self._div_first = v
        ref = max(self._div_min, self.DIVERGENCE_FLOOR * abs(self._div_first))
        if ref > 0 and v > factor * ref:
            raise RunError(
                f"{name} is {v:.4g} at step {step}, over train.divergence_factor={factor:g} x its "
                f"lowest value {self._div_min:.4g}: the run diverged"
            )
        self._div_min = min(self._div_min, v)

    def check_parameters(self, step: int) -> None:
        """`RunError` naming the first parameter with a NaN or infinite entry."""
        with torch.no_grad():
            for mod_name, mod in self.rule.modules().items():
                for name, p in mod.named_parameters():
                    if not bool(torch.isfinite(p).all()):
                        raise RunError(f"parameter {mod_name}.{name} is not finite at step {step}: the run diverged")

    def log_weights(self) -> None:
        if not self.cfg.record.weights_every:
            return
        for layer in self.rule.protected_layers():
            self.ctx.log_weights(layer.name, layer.weight.detach().cpu().numpy())

    def save_model(self) -> None:
        """Each module of the rule under ``/model/<name>/<parameter>``."""
        if not self.cfg.record.save_model:
            return
        for name, mod in self.rule.modules().items():
            for k, v in mod.state_dict().items():
                self.ctx.log_array(f"/model/{name}/{k}", v.detach().cpu().numpy())

    def close(self) -> None:
        bar = getattr(self, "bar", None)
        if bar is not None:
            bar.close()
        if hasattr(self, "plugins"):
            self.plugins.close(self.rule)
        if hasattr(self, "rule"):
            self.rule.close()
