"""Run one experiment: data -> net -> rule (+ plugins) -> streamed run file -> figures."""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioplaus import registry
from bioplaus.config import ExperimentConfig
from bioplaus.errors import DataError, RunError
from bioplaus.nets import Net, build_net
from bioplaus.plugins.base import Plugin, PluginList
from bioplaus.rules.base import LearningRule, RuleContext


@dataclass
class DataBundle:
    """Loaders and facts about the data of one experiment."""

    train: Any
    val: Any | None
    test: Any
    input_shape: tuple[int, ...]
    n_classes: int
    classes: list[str]
    probe_x: torch.Tensor


def load_data(cfg: ExperimentConfig) -> Any:
    """The configured data set as a ``neuro_data.Dataset`` (third-party loaders included)."""
    import neuro_data

    d = cfg.data
    extra = registry.get_dataset_loader(d.dataset)
    try:
        if extra is not None:
            return extra(path=d.path, data_dir=d.data_dir, download=d.download)
        return neuro_data.load_dataset(d.dataset, path=d.path, data_dir=d.data_dir, download=d.download)
    except FileNotFoundError as e:
        raise DataError(f"data.dataset = {d.dataset!r}: {e}") from None
    except ValueError as e:
        raise DataError(f"data.dataset = {d.dataset!r}: {e}") from None


def prepare_arrays(
    cfg: ExperimentConfig, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> tuple[Any, Any, Any, np.ndarray]:
    """Seeded split, limits and normalisation; returns (train, val, test) loaders and probe x."""
    import neuro_data

    d = cfg.data
    if d.val_fraction > 0:
        x_tr, y_tr, x_val, y_val = neuro_data.split(x_train, y_train, d.val_fraction, cfg.seed)
    else:
        x_tr, y_tr, x_val, y_val = x_train, y_train, None, None
    if d.limit_train:
        x_tr, y_tr = x_tr[: d.limit_train], y_tr[: d.limit_train]
    if d.limit_test:
        x_test, y_test = x_test[: d.limit_test], y_test[: d.limit_test]
        if x_val is not None:
            x_val, y_val = x_val[: d.limit_test], y_val[: d.limit_test]
    norm = neuro_data.Normalizer.fit(x_tr, d.normalize)
    x_tr, x_test = norm(x_tr), norm(x_test)
    train = neuro_data.ArrayLoader(x_tr, y_tr, d.batch_size, shuffle=True, seed=cfg.seed)
    test = neuro_data.ArrayLoader(x_test, y_test, d.eval_batch_size, shuffle=False)
    val = None
    if x_val is not None and len(x_val):
        x_val = norm(x_val)
        val = neuro_data.ArrayLoader(x_val, y_val, d.eval_batch_size, shuffle=False)
    probe_src = x_val if x_val is not None and len(x_val) else x_test
    return train, val, test, np.ascontiguousarray(probe_src[:64])


def prepare_data(cfg: ExperimentConfig) -> DataBundle:
    ds = load_data(cfg)
    train, val, test, probe = prepare_arrays(cfg, ds.x_train, ds.y_train, ds.x_test, ds.y_test)
    n_classes = len(ds.classes)
    return DataBundle(train, val, test, tuple(ds.shape), n_classes, list(ds.classes), torch.as_tensor(probe))


def evaluate(rule: LearningRule, loader: Any) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of a rule over a loader (see ``LearningRule.evaluate``)."""
    m = rule.evaluate(loader)
    return m.get("loss", math.nan), m.get("acc", math.nan)


class _Stop:
    """A stop requested by a signal; the training loop raises at the next step boundary."""

    requested = False


def check_stop() -> None:
    """Raise KeyboardInterrupt if a SIGINT/SIGTERM arrived (called between training steps)."""
    if _Stop.requested:
        _Stop.requested = False
        raise KeyboardInterrupt("stop requested by a signal")


@contextmanager
def sigterm_as_interrupt():
    """SIGINT and SIGTERM stop the run at the next step boundary (a second one at once).

    Raising inside the handler could land in the middle of an HDF5 write; deferring to the
    step boundary keeps the run file consistent, and the trainer closes it as 'interrupted'.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if _Stop.requested:  # asked twice: stop now
            raise KeyboardInterrupt(f"signal {signum}")
        _Stop.requested = True

    _Stop.requested = False
    old = signal.signal(signal.SIGTERM, handler)
    # A process started in the background inherits SIGINT ignored; a run should still stop
    # cleanly on `kill -INT`, as it does on Ctrl-C in a terminal.
    old_int = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
        _Stop.requested = False


@contextmanager
def closing_run(rec: Any, step: Callable[[], int], bar: Progress, plugins: PluginList):
    """Run the body with signals as interrupts; on an exception, close the run file with the
    status it implies (interrupted / failed, with the step) and re-raise. Always closes the
    progress bar and the plugins."""
    try:
        with sigterm_as_interrupt():
            yield
    except KeyboardInterrupt:
        rec.close("interrupted", stopped_at_step=step())
        raise
    except RunError as e:
        rec.close("failed", error=str(e), failed_step=step() + 1)
        raise
    except BaseException as e:
        rec.close("failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        bar.close()
        plugins.close()


def save_model(rec: Any, net: Any, rule: LearningRule) -> None:
    """The net's parameters under /model/net and the rule's extra modules under /model/<name>."""
    for name, mod in {"net": net, **rule.extra_modules()}.items():
        for k, v in mod.state_dict().items():
            rec.log_array(f"/model/{name}/{k}", v.detach().numpy())


@dataclass
class RunResult:
    """What a finished run reports (the run file holds everything)."""

    path: Path
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0
    figures: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        keys = [k for k in ("test_acc", "val_acc", "train_acc", "test_loss") if k in self.metrics]
        parts = [f"{k}={self.metrics[k]:.4f}" for k in keys]
        return f"{self.status}: " + " ".join(parts) + f" | {self.steps} steps in {self.seconds:.1f} s -> {self.path}"


def default_out(cfg: ExperimentConfig) -> Path:
    return Path(cfg.record.out) if cfg.record.out else Path("runs") / f"{cfg.name}.h5"


def build_rule(cfg: ExperimentConfig) -> LearningRule:
    return registry.get_rule(cfg.rule.name)(cfg.rule)


def build_plugins(cfg: ExperimentConfig) -> list[Plugin]:
    return [registry.get_plugin(p.name)(p.options) for p in cfg.plugins]


def set_threads(cfg: ExperimentConfig) -> None:
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)


class Progress:
    """A tqdm bar on a terminal; one line per epoch otherwise (logs stay readable)."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        self.tty = enabled and sys.stderr.isatty()
        self.enabled = enabled
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=True)

    def update(self, epoch: int, batch: int, n_batches: int, m: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(
                f"epoch {epoch} batch {batch}/{n_batches} loss {m.get('loss', math.nan):.4f} "
                f"acc {m.get('acc', math.nan):.3f}",
                refresh=False,
            )

    def epoch(self, epoch: int, metrics: dict[str, float], seconds: float) -> None:
        text = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if "/" not in k)
        line = f"epoch {epoch}: {text} ({seconds:.1f} s)"
        if self.bar is not None:
            self.bar.write(line)
        elif self.enabled:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Trainer:
    """Trains a rule on a data bundle and streams everything to a Recorder."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        out: str | Path | None = None,
        progress: bool | None = None,
        data: DataBundle | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out) if out else default_out(cfg)
        self.progress_enabled = cfg.train.progress if progress is None else progress
        self.data = data

    def _make_all(self) -> None:
        cfg = self.cfg
        set_threads(cfg)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        if self.data is None:
            self.data = prepare_data(cfg)
        d = self.data
        self.net: Net = build_net(cfg.network, d.input_shape, d.n_classes, seed=cfg.seed)
        self.rule = build_rule(cfg)
        self.user_plugins = build_plugins(cfg)
        steps_per_epoch = len(d.train)
        total = steps_per_epoch * cfg.train.epochs
        if cfg.train.max_steps:
            total = min(total, cfg.train.max_steps)
        self.total_steps = total
        self.ctx = RuleContext(cfg, steps_per_epoch, total, d.n_classes)

    def run(self) -> RunResult:
        from bioplaus.plugins.probes import Probes
        from bioplaus.record import Recorder

        self._make_all()
        cfg, d = self.cfg, self.data
        meta = {
            "network": self.net.describe(),
            "rule": cfg.rule.name,
            "dataset": cfg.data.dataset,
            "classes": d.classes,
            "n_train": d.train.n,
            "input_shape": list(d.input_shape),
            "n_classes": d.n_classes,
        }
        rec = Recorder(self.out, cfg.to_dict(), cfg.seed, meta=meta, flush_every_s=cfg.record.flush_every_s)
        self.ctx.recorder = rec
        self.rec = rec
        probes = Probes(cfg.record.probes, self.net, rec, d.probe_x) if cfg.record.probes else None
        plugins = PluginList(self.user_plugins + ([probes] if probes else []))
        self.rule.plugins = plugins
        t0 = time.perf_counter()
        final: dict[str, float] = {}
        step = 0
        bar = Progress(self.total_steps, self.progress_enabled, cfg.name)
        with closing_run(rec, lambda: self.rule.step, bar, plugins):
            self.rule.setup(self.net, self.ctx)
            for p in plugins:
                p.setup(self.rule, self.ctx)
            plugins.before_task(0, d.train)
            final = self._evaluate_and_log(0, epoch=0)
            if probes:
                plugins.after_step(0, {})  # step-0 probe: datasets exist before SWMR
            self._log_weights(0)
            rec.flush()
            step = self._train_loop(plugins, bar)
            final = self._last_eval
            plugins.after_task(0, d.train)
            if cfg.record.save_model:
                save_model(rec, self.net, self.rule)
        seconds = time.perf_counter() - t0
        rec.close("done", seconds=seconds, steps=step, **{f"final_{k}": v for k, v in final.items() if "/" not in k})
        figures: list[Path] = []
        if cfg.train.report:
            from bioplaus.report import make_report

            figures = make_report(self.out, self.out.with_suffix("").with_name(self.out.stem + "_figures"))
        return RunResult(self.out, "done", final, seconds, step, figures)

    def _train_loop(self, plugins: PluginList, bar: Progress) -> int:
        cfg, d, rule, rec = self.cfg, self.data, self.rule, self.rec
        step = 0
        swmr = False
        n_batches = len(d.train)
        self._last_eval: dict[str, float] = {}
        for epoch in range(1, cfg.train.epochs + 1):
            te = time.perf_counter()
            run_loss, run_acc, count = 0.0, 0.0, 0
            for b, (x, y) in enumerate(d.train, start=1):
                check_stop()
                m = rule.train_step(x, y)
                rule.after_step()
                step += 1
                if not math.isfinite(m.get("loss", 0.0)):
                    raise RunError(f"loss is {m['loss']} at step {step}: the run diverged")
                run_loss += m.get("loss", 0.0)
                run_acc += m.get("acc", 0.0)
                count += 1
                if step == 1 or step % cfg.train.log_every == 0:
                    rec.log_metrics(step, lr=rule.lr, **{f"train_{k}": v for k, v in m.items()})
                plugins.after_step(step, m)
                bar.update(epoch, b, n_batches, m)
                if cfg.train.max_steps and step >= cfg.train.max_steps:
                    break
            last = (cfg.train.max_steps and step >= cfg.train.max_steps) or epoch == cfg.train.epochs
            summary = {"train_loss_epoch": run_loss / max(count, 1), "train_acc_epoch": run_acc / max(count, 1)}
            if epoch % cfg.train.eval_every == 0 or last:
                summary.update(self._evaluate_and_log(step, epoch))
                self._last_eval = {**summary}
            rec.log_metrics(step, epoch=float(epoch), **{k: v for k, v in summary.items() if k.startswith("train_")})
            if cfg.record.weights_every and (epoch % cfg.record.weights_every == 0 or last):
                self._log_weights(step)
            plugins.after_epoch(epoch, summary)
            rec.flush()
            if not swmr:
                # Every dataset name exists after the first epoch; from here on the file is
                # written in SWMR mode (readable while written, consistent if killed).
                rec.start_swmr()
                swmr = True
            bar.epoch(epoch, summary, time.perf_counter() - te)
            if last:
                break
        return step

    def _evaluate_and_log(self, step: int, epoch: int) -> dict[str, float]:
        d = self.data
        out: dict[str, float] = {}
        for split, loader in (("val", d.val), ("test", d.test)):
            if loader is None:
                continue
            for k, v in self.rule.evaluate(loader).items():
                out[f"{split}_{k}"] = v
        out.update(self.rule.epoch_metrics())
        self.rec.log_metrics(step, **out)
        return out

    def _log_weights(self, step: int) -> None:
        if not self.cfg.record.weights_every:
            return
        for layer in self.net.layers:
            self.rec.log_weights(layer.name, step, layer.weight.detach().numpy())


def run_experiment(
    cfg: ExperimentConfig, out: str | Path | None = None, progress: bool | None = None
) -> RunResult:
    """Run one experiment end to end (plain or, with ``[continual]``, a task stream)."""
    if cfg.continual is not None:
        from bioplaus.continual import ContinualTrainer

        return ContinualTrainer(cfg, out=out, progress=progress).run()
    return Trainer(cfg, out=out, progress=progress).run()
