"""Continual learning: train a rule on a task stream, evaluate every task after each one.

The accuracy matrix ``R[i, j]`` is the test accuracy on task ``j`` after training tasks
``0..i``. With ``i`` the last row trained (``T - 1`` at the end of a stream of ``T`` tasks):

    ACC        = (1 / (i+1)) Σ_{j<=i} R[i, j]
    BWT        = (1 / i)     Σ_{j<i}  (R[i, j] - R[j, j])                 (Lopez-Paz & Ranzato)
    forgetting = (1 / i)     Σ_{j<i}  (max_{l in [j, i-1]} R[l, j] - R[i, j])   (Chaudhry et al.)
    FWT        = (1 / i)     Σ_{0<j<=i} (R[j-1, j] - b_j)      b_j: accuracy before any training

``train.max_steps`` (if set) caps the steps of each task (joint: of the whole run).
``mode = "joint"`` is the multitask upper bound: the batches of every task interleaved
round-robin (one task per batch, so task-incremental heads stay masked per batch), the same
number of steps as the whole sequential stream, and one row of the matrix.

Everything is streamed to the run file: per-task metrics ``task<j>/test_acc`` and
``task<j>/test_loss`` (logged at step 0 and at the end of every task), ``test_acc`` (mean
over the tasks seen so far), ``bwt``, ``forgetting``, ``task`` (index of the task just
finished) and ``/continual/acc_matrix`` with ACC, BWT, forgetting, FWT as attributes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bioplaus.config import ExperimentConfig
from bioplaus.errors import ConfigError, DataError, RunError
from bioplaus.nets import build_net
from bioplaus.plugins.base import PluginList
from bioplaus.rules.base import RuleContext
from bioplaus.train import (
    Progress,
    RunResult,
    build_plugins,
    build_rule,
    check_stop,
    closing_run,
    default_out,
    load_data,
    save_model,
    set_threads,
)

__all__ = ["ContinualTrainer", "TaskData", "TaskLoader", "acc_metrics", "build_tasks"]


# ----------------------------------------------------------------------------- metrics


def acc_metrics(R: np.ndarray, initial: np.ndarray | None = None) -> dict[str, float]:
    """ACC, BWT, forgetting (and FWT given ``initial`` = b_j) of an accuracy matrix.

    ``R`` is ``[rows, T]`` with row ``i`` measured after task ``i`` (sequential training);
    the metrics use the last row. See the module docstring for the formulas.
    """
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] == 0 or R.shape[0] > R.shape[1]:
        raise ValueError(f"accuracy matrix must be [rows <= tasks, tasks], got {R.shape}")
    i = R.shape[0] - 1
    out = {"ACC": float(np.mean(R[i, : i + 1]))}
    if i == 0:
        out.update(BWT=math.nan, forgetting=math.nan, FWT=math.nan)
        return out
    diag = np.diag(R)[:i]
    out["BWT"] = float(np.mean(R[i, :i] - diag))
    best = np.array([np.max(R[j:i, j]) for j in range(i)])
    out["forgetting"] = float(np.mean(best - R[i, :i]))
    if initial is not None:
        b = np.asarray(initial, dtype=float)
        out["FWT"] = float(np.mean([R[j - 1, j] - b[j] for j in range(1, i + 1)]))
    else:
        out["FWT"] = math.nan
    return out


# ----------------------------------------------------------------------------- data


class TaskLoader:
    """Mini-batches of one task; rows of a shared data set, pixel-permuted on the fly.

    Wraps a ``neuro_data.ArrayLoader``; with ``perm`` each batch is
    ``x.flatten(1)[:, perm].reshape(x.shape)`` so permuted tasks share one copy of the data.
    """

    def __init__(self, inner: Any, perm: np.ndarray | None = None) -> None:
        self.inner = inner
        self.perm = None if perm is None else torch.as_tensor(np.asarray(perm), dtype=torch.long)

    @property
    def n(self) -> int:
        return int(self.inner.n)

    @property
    def batch_size(self) -> int:
        return int(self.inner.batch_size)

    def __len__(self) -> int:
        return len(self.inner)

    def _apply(self, x: Tensor) -> Tensor:
        if self.perm is None:
            return x
        return x.flatten(1)[:, self.perm].reshape(x.shape)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.inner:
            yield self._apply(x), y

    def subset(self, n: int) -> TaskLoader:
        """The first ``n`` samples in order (fixed batches for statistics)."""
        return TaskLoader(self.inner.subset(n), None if self.perm is None else self.perm.numpy())


@dataclass
class TaskData:
    """Loaders and label set of one task."""

    task_id: int
    name: str
    classes: list[int]
    train: TaskLoader
    test: TaskLoader


def build_tasks(cfg: ExperimentConfig, dataset: Any | None = None) -> tuple[list[TaskData], Any, tuple[int, ...]]:
    """The configured task stream as loaders: ``(tasks, stream, input_shape)``.

    Seeded train/validation split and normalisation are fitted on the base data set (pixel
    statistics do not change under a permutation); ``data.evaluate_on = "val"`` evaluates on
    the held-out part instead of the test set; ``limit_train`` / ``limit_test`` apply per task.
    """
    import neuro_data
    from neuro_data.datasets import Dataset

    c, d = cfg.continual, cfg.data
    assert c is not None
    ds = dataset if dataset is not None else load_data(cfg)
    if d.val_fraction > 0:
        x_tr, y_tr, x_val, y_val = neuro_data.split(ds.x_train, ds.y_train, d.val_fraction, cfg.seed)
    else:
        x_tr, y_tr, x_val, y_val = ds.x_train, ds.y_train, None, None
    if d.evaluate_on == "val":
        if x_val is None or not len(x_val):
            raise ConfigError("data.evaluate_on: 'val' needs data.val_fraction > 0")
        x_ev, y_ev = x_val, y_val
    else:
        x_ev, y_ev = ds.x_test, ds.y_test
    norm = neuro_data.Normalizer.fit(x_tr, d.normalize)
    x_tr = np.ascontiguousarray(norm(x_tr), dtype=np.float32)
    x_ev = np.ascontiguousarray(norm(x_ev), dtype=np.float32)
    base = Dataset(ds.name, x_tr, np.asarray(y_tr), x_ev, np.asarray(y_ev), list(ds.classes), tuple(ds.shape))
    try:
        if c.stream == "permuted":
            stream = neuro_data.streams.permuted(base, c.n_tasks, seed=cfg.seed, lazy=True)
        else:
            cpt = c.classes_per_task or None
            stream = neuro_data.streams.split(base, c.n_tasks, cpt)
    except ValueError as e:
        raise DataError(f"continual.stream = {c.stream!r}: {e}") from None
    tasks: list[TaskData] = []
    for task in stream:
        if c.stream == "permuted":
            xtr, ytr, xte, yte = base.x_train, base.y_train, base.x_test, base.y_test
            perm = None if task.task_id == 0 else task.permutation
        else:
            xtr, ytr, xte, yte = task.x_train, task.y_train, task.x_test, task.y_test
            perm = None
        if d.limit_train:
            xtr, ytr = xtr[: d.limit_train], ytr[: d.limit_train]
        if d.limit_test:
            xte, yte = xte[: d.limit_test], yte[: d.limit_test]
        # A different shuffle per task, fixed by the run seed.
        train = neuro_data.ArrayLoader(xtr, ytr, d.batch_size, shuffle=True, seed=cfg.seed + 7 * (task.task_id + 1))
        test = neuro_data.ArrayLoader(xte, yte, d.eval_batch_size, shuffle=False)
        tasks.append(TaskData(task.task_id, task.name, list(task.classes), TaskLoader(train, perm), TaskLoader(test, perm)))
    return tasks, stream, tuple(ds.shape)


# ----------------------------------------------------------------------------- trainer


class ContinualTrainer:
    """Trains ``cfg``'s rule over ``cfg.continual``'s task stream and records everything."""

    def __init__(
        self, cfg: ExperimentConfig, out: str | Path | None = None, progress: bool | None = None
    ) -> None:
        if cfg.continual is None:
            raise ConfigError("continual: ContinualTrainer needs a [continual] table")
        self.cfg = cfg
        self.out = Path(out) if out else default_out(cfg)
        self.progress_enabled = cfg.train.progress if progress is None else progress

    # -- helpers ---------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self.progress_enabled:
            print(text, file=sys.stderr, flush=True)

    def _set_task(self, k: int | None) -> None:
        """Task-incremental setting: mask the logits to task ``k``'s classes (None: all)."""
        if self.setting != "task" or k is None:
            self.rule.active_classes = None
        else:
            self.rule.active_classes = torch.tensor(self.tasks[k].classes, dtype=torch.long)

    def _evaluate_all(self) -> tuple[np.ndarray, np.ndarray]:
        accs = np.zeros(len(self.tasks))
        losses = np.zeros(len(self.tasks))
        t0 = time.perf_counter()
        for j, task in enumerate(self.tasks):
            self._set_task(j)
            m = self.rule.evaluate(task.test)
            accs[j], losses[j] = m.get("acc", math.nan), m.get("loss", math.nan)
        self._set_task(None)
        self.eval_seconds += time.perf_counter() - t0
        return accs, losses

    def _log_eval(self, step: int, accs: np.ndarray, losses: np.ndarray) -> None:
        vals: dict[str, float] = {}
        for j in range(len(self.tasks)):
            vals[f"task{j}/test_acc"] = float(accs[j])
            vals[f"task{j}/test_loss"] = float(losses[j])
        self.rec.log_metrics(step, **vals)

    def _write_matrix(self) -> dict[str, float]:
        R = np.array(self.rows)
        if self.mode == "joint":
            summary = {"ACC": float(np.mean(R[-1])), "BWT": math.nan, "forgetting": math.nan, "FWT": math.nan}
        else:
            summary = acc_metrics(R, self.initial)
        self.rec.log_array(
            "/continual/acc_matrix",
            R,
            **summary,
            mode=self.mode,
            setting=self.setting,
            initial=self.initial,
            train_seconds=self.train_seconds,
        )
        return summary

    def _step(self, x: Tensor, y: Tensor, plugins: PluginList) -> dict[str, float]:
        check_stop()
        m = self.rule.train_step(x, y)
        self.rule.after_step()
        self.step += 1
        if not math.isfinite(m.get("loss", 0.0)):
            raise RunError(f"loss is {m['loss']} at step {self.step}: the run diverged")
        if self.step == 1 or self.step % self.cfg.train.log_every == 0:
            self.rec.log_metrics(self.step, lr=self.rule.lr, **{f"train_{k}": v for k, v in m.items()})
        plugins.after_step(self.step, m)
        return m

    def _train_sequential(self, plugins: PluginList, bar: Progress) -> dict[str, float]:
        c = self.cfg.continual
        assert c is not None
        summary: dict[str, float] = {}
        for k, task in enumerate(self.tasks):
            t0 = time.perf_counter()
            if k > 0 and c.reset_optimizer:
                # Momentum of the last task holds unprotected directions of that task.
                self.rule.reset_optimizer()
            self._set_task(k)
            plugins.before_task(k, task.train)
            loss_sum, acc_sum, count = 0.0, 0.0, 0
            cap = self.cfg.train.max_steps  # per task
            for epoch in range(1, c.epochs_per_task + 1):
                self._set_task(k)
                for b, (x, y) in enumerate(task.train, start=1):
                    m = self._step(x, y, plugins)
                    loss_sum += m.get("loss", 0.0)
                    acc_sum += m.get("acc", 0.0)
                    count += 1
                    bar.update(k, b, len(task.train), m)
                    if cap and count >= cap:
                        break
                plugins.after_epoch(epoch, {"train_loss_epoch": loss_sum / max(count, 1)})
                if cap and count >= cap:
                    break
            self._set_task(k)
            plugins.after_task(k, task.train)
            self._set_task(None)
            self.train_seconds += time.perf_counter() - t0
            accs, losses = self._evaluate_all()
            self.rows.append(accs)
            summary = self._write_matrix()
            self._log_eval(self.step, accs, losses)
            seen = float(np.mean(accs[: k + 1]))
            self.rec.log_metrics(
                self.step,
                task=float(k),
                test_acc=seen,
                train_loss_task=loss_sum / max(count, 1),
                train_acc_task=acc_sum / max(count, 1),
                bwt=summary["BWT"] if k > 0 else 0.0,
                forgetting=summary["forgetting"] if k > 0 else 0.0,
            )
            self.rec.flush()
            row = " ".join(f"{a * 100:5.1f}" for a in accs[: k + 1])
            self._say(
                f"task {k} ({task.name}): train_loss={loss_sum / max(count, 1):.4f} "
                f"ACC={seen * 100:.2f} BWT={summary['BWT'] * 100 if k else 0.0:+.2f} "
                f"[{row}] ({time.perf_counter() - t0:.1f} s)"
            )
        return summary

    def _train_joint(self, plugins: PluginList, bar: Progress) -> dict[str, float]:
        c = self.cfg.continual
        assert c is not None
        t0 = time.perf_counter()
        plugins.before_task(0, self.tasks[0].train)
        total = sum(len(t.train) for t in self.tasks)
        loss_sum, acc_sum, count = 0.0, 0.0, 0
        for epoch in range(1, c.epochs_per_task + 1):
            iters = [iter(t.train) for t in self.tasks]
            live = list(range(len(self.tasks)))
            b = 0
            while live:
                # Round-robin over the tasks that still have batches this epoch.
                for k in list(live):
                    try:
                        x, y = next(iters[k])
                    except StopIteration:
                        live.remove(k)
                        continue
                    if self.cfg.train.max_steps and self.step >= self.cfg.train.max_steps:
                        live = []
                        break
                    self._set_task(k)
                    m = self._step(x, y, plugins)
                    b += 1
                    loss_sum += m.get("loss", 0.0)
                    acc_sum += m.get("acc", 0.0)
                    count += 1
                    bar.update(epoch, b, total, m)
            plugins.after_epoch(epoch, {"train_loss_epoch": loss_sum / max(count, 1)})
        self._set_task(None)
        plugins.after_task(0, self.tasks[0].train)
        self.train_seconds += time.perf_counter() - t0
        accs, losses = self._evaluate_all()
        self.rows.append(accs)
        summary = self._write_matrix()
        self._log_eval(self.step, accs, losses)
        self.rec.log_metrics(
            self.step, task=float(len(self.tasks) - 1), test_acc=summary["ACC"],
            train_loss_task=loss_sum / max(count, 1), train_acc_task=acc_sum / max(count, 1),
        )
        self.rec.flush()
        self._say(f"joint: ACC={summary['ACC'] * 100:.2f} ({time.perf_counter() - t0:.1f} s)")
        return summary

    # -- main ------------------------------------------------------------------------
    def run(self) -> RunResult:
        from bioplaus.plugins.probes import Probes
        from bioplaus.record import Recorder

        cfg = self.cfg
        c = cfg.continual
        assert c is not None
        set_threads(cfg)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        self.tasks, stream, input_shape = build_tasks(cfg)
        self.setting = c.setting or stream.setting
        self.mode = c.mode
        self.net = build_net(cfg.network, input_shape, stream.n_classes, seed=cfg.seed)
        self.rule = build_rule(cfg)
        user_plugins = build_plugins(cfg)
        steps_task = len(self.tasks[0].train) * c.epochs_per_task
        if cfg.train.max_steps:
            steps_task = min(steps_task, cfg.train.max_steps)
        total = steps_task * len(self.tasks)
        # The schedule (if any) restarts with every task's fresh optimiser.
        ctx_steps = total if c.mode == "joint" else steps_task
        ctx = RuleContext(cfg, len(self.tasks[0].train), ctx_steps, stream.n_classes)
        ctx.extra.update(
            n_tasks=len(self.tasks),
            setting=self.setting,
            task_classes=[t.classes for t in self.tasks],
            mode=c.mode,
        )
        meta = {
            "network": self.net.describe(),
            "rule": cfg.rule.name,
            "dataset": cfg.data.dataset,
            "stream": stream.name,
            "setting": self.setting,
            "n_tasks": len(self.tasks),
            "n_train": self.tasks[0].train.n,
        }
        rec = Recorder(self.out, cfg.to_dict(), cfg.seed, meta=meta, flush_every_s=cfg.record.flush_every_s)
        ctx.recorder = rec
        self.rec = rec
        probe_x = next(iter(self.tasks[0].test))[0][:64]
        probes = Probes(cfg.record.probes, self.net, rec, probe_x) if cfg.record.probes else None
        plugins = PluginList(user_plugins + ([probes] if probes else []))
        self.rule.plugins = plugins
        self.step = 0
        self.rows: list[np.ndarray] = []
        self.train_seconds = 0.0
        self.eval_seconds = 0.0
        t_start = time.perf_counter()
        bar = Progress(total, self.progress_enabled and sys.stderr.isatty(), cfg.name)
        summary: dict[str, float] = {}
        with closing_run(rec, lambda: self.step, bar, plugins):
            self.rule.setup(self.net, ctx)
            for p in plugins:
                p.setup(self.rule, ctx)
            accs, losses = self._evaluate_all()
            self.initial = accs.copy()
            self._log_eval(0, accs, losses)
            rec.flush()
            # The file stays in the lazy phase (closed between flushes): metric names
            # appear task by task (plugins log after each task), which SWMR cannot create.
            if c.mode == "joint":
                summary = self._train_joint(plugins, bar)
            else:
                summary = self._train_sequential(plugins, bar)
            if cfg.record.save_model:
                save_model(rec, self.net, self.rule)
        seconds = time.perf_counter() - t_start
        final = {
            "test_acc": summary.get("ACC", math.nan),
            "ACC": summary.get("ACC", math.nan),
            "BWT": summary.get("BWT", math.nan),
            "forgetting": summary.get("forgetting", math.nan),
            "FWT": summary.get("FWT", math.nan),
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
        }
        rec.close("done", seconds=seconds, steps=self.step, **{f"final_{k}": v for k, v in final.items()})
        figures: list[Path] = []
        if cfg.train.report:
            from bioplaus.report import make_report

            figures = make_report(self.out, self.out.with_suffix("").with_name(self.out.stem + "_figures"))
        return RunResult(self.out, "done", final, seconds, self.step, figures)
