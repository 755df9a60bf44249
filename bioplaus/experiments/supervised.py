"""The ``supervised`` kind: one data set, trained for epochs, evaluated on val / test."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from bioplaus.config import ExperimentConfig
from bioplaus.data import DataBundle, prepare_data
from bioplaus.device import to_device
from bioplaus.experiments.gradient import GradientExperiment
from bioplaus.metrics import Metric
from bioplaus.registry import RULES, register_experiment
from bioplaus.training.task import TaskInfo


@register_experiment("supervised")
class Supervised(GradientExperiment):
    """Train ``[rule]`` on ``[data]`` for ``train.epochs``; evaluate every ``eval_every`` epochs.

    Metrics: ``train_<m>`` every ``log_every`` steps, ``train_<m>_epoch`` (epoch means),
    ``val_<m>`` / ``test_<m>`` at step 0 and after evaluated epochs (``<m>`` = the rule's
    declared metrics, e.g. loss and acc), the rule's ``epoch_metrics`` and ``epoch``. With
    ``data.evaluate_on = "val"`` the test split is never evaluated (for tuning).
    """

    @classmethod
    def splits(cls, cfg: ExperimentConfig) -> tuple[str, ...]:
        return ("val", "test") if cfg.data.evaluate_on == "test" else ("val",)

    @classmethod
    def declared_metrics(cls, cfg: ExperimentConfig) -> list[Metric]:
        out = cls.rule_metrics(cfg, cls.splits(cfg), cfg.data.evaluate_on)
        for k, m in enumerate(RULES.get(cfg.rule.name).metrics):
            out.append(replace(m, name=f"train_{m.name}_epoch", progress=False, headline=False, summary=k == 0))
        out.append(Metric("epoch", description="epochs completed"))
        return out

    def build(self) -> None:
        cfg = self.cfg
        given = self.user_data
        self.data: DataBundle = given if isinstance(given, DataBundle) else prepare_data(cfg, given)
        d = self.data
        steps_per_epoch = len(d.train)
        total = self.steps_per_epoch(steps_per_epoch) * cfg.train.epochs
        if cfg.train.max_steps:
            total = min(total, cfg.train.max_steps)
        self.total_steps = total
        n_max = max(d.train.n, d.test.n, d.val.n if d.val is not None else 0)
        self.build_rule(d.n_classes, d.input_shape, steps_per_epoch, total, n_samples=n_max)
        for loader in (d.train, d.val, d.test):
            if loader is not None:
                to_device(loader, self.ctx.device)
        self.setup_rule(d.probe_x.to(self.ctx.device), d.probe_y.to(self.ctx.device))
        self.rule.init_from_data(d.train)

    def meta(self) -> dict[str, Any]:
        d = self.data
        return {
            **self.model_meta(),
            "classes": d.classes,
            "n_train": d.train.n,
            "input_shape": list(d.input_shape),
            "n_classes": d.n_classes,
        }

    def run(self) -> dict[str, float]:
        ctx, d, plugins = self.ctx, self.data, self.plugins
        self.bar = ctx.progress(self.total_steps)
        plugins.before_task(self.rule, TaskInfo(), d.train)
        final = self.evaluate()
        if self.probes:
            plugins.after_step(self.rule, 0, {})  # step-0 probe: datasets exist before SWMR
        self.log_weights()
        ctx.flush()
        final = self.train_loop()
        plugins.after_task(self.rule, TaskInfo(), d.train)
        self.save_model()
        return final

    def train_loop(self) -> dict[str, float]:
        cfg, d, ctx = self.cfg, self.data, self.ctx
        swmr = False
        last_eval: dict[str, float] = {}
        for epoch in range(1, cfg.train.epochs + 1):
            te = time.perf_counter()
            sums: dict[str, float] = {}
            count = 0
            n_batches = self.rule.steps_per_epoch(self.rule.opts, len(d.train))
            for b, m in enumerate(self.epoch_steps(d.train), start=1):
                if not swmr:
                    # Every dataset exists after one step (the declared metrics were created
                    # with the file, the probes and weights logged at step 0): from here on
                    # the file is written in SWMR mode (readable while written, consistent
                    # if killed).
                    ctx.start_swmr()
                    swmr = True
                for k, v in m.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                self.bar.update(f"epoch {epoch} batch {b}/{n_batches}", {f"train_{k}": v for k, v in m.items()})
                if cfg.train.max_steps and ctx.step >= cfg.train.max_steps:
                    break
            last = (cfg.train.max_steps and ctx.step >= cfg.train.max_steps) or epoch == cfg.train.epochs
            summary = {f"train_{k}_epoch": sums[k] / max(count, 1) for k in self.epoch_keys() if k in sums}
            if epoch % cfg.train.eval_every == 0 or last:
                summary.update(self.evaluate())
                last_eval = {**summary}
            ctx.log(epoch=float(epoch), **{k: v for k, v in summary.items() if k.startswith("train_")})
            if cfg.record.weights_every and (epoch % cfg.record.weights_every == 0 or last):
                self.log_weights()
            self.plugins.after_epoch(self.rule, epoch, summary)
            ctx.flush()
            self.bar.line(f"epoch {epoch}", summary, time.perf_counter() - te)
            if last:
                break
        return last_eval

    def epoch_keys(self) -> list[str]:
        """The rule's declared step metrics, averaged over each epoch."""
        return [m.name for m in type(self.rule).metrics]

    def evaluate(self) -> dict[str, float]:
        """The rule's metrics on each evaluated split and its epoch metrics, logged now."""
        d = self.data
        loaders = {"val": d.val, "test": d.test}
        out: dict[str, float] = {}
        for split in self.splits(self.cfg):
            loader = loaders[split]
            if loader is None:
                continue
            for k, v in self.rule.evaluate(loader).items():
                out[f"{split}_{k}"] = v
        out.update(self.rule.epoch_metrics())
        self.ctx.log(**out)
        return out
