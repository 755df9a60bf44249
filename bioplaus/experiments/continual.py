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
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from torch import Tensor, nn

from bioplaus.config import MAX_TASKS, ExperimentConfig, bounded, check_choice
from bioplaus.data import load_data
from bioplaus.device import to_device
from bioplaus.errors import ConfigError, DataError
from bioplaus.experiments.gradient import GradientExperiment
from bioplaus.metrics import Metric
from bioplaus.record.reader import RunFile
from bioplaus.registry import TRAINING_FIGURES, register_experiment, register_figure
from bioplaus.report import fmt, new_figure, save_figure
from bioplaus.resources import check_bytes
from bioplaus.training.task import TaskInfo

__all__ = ["Continual", "ContinualConfig", "TaskData", "TaskLoader", "acc_metrics", "build_tasks", "per_task_transfer",
           "scenario"]


@dataclass
class ContinualConfig:
    """``[continual]``: a task stream trained in order (see neuro_data.streams)."""

    stream: str = "permuted"  # permuted | split
    n_tasks: int = bounded(10, ge=1, le=MAX_TASKS)
    classes_per_task: int = bounded(0, ge=0)  # split streams; 0 = n_classes / n_tasks
    setting: str = ""  # task | domain | class ; "" = the stream's own (permuted: domain, split: task)
    epochs_per_task: int = bounded(1, ge=1)
    mode: str = "sequential"  # sequential | joint (multitask upper bound)
    reset_optimizer: bool = True  # fresh optimiser state (momentum) at every task
    # BatchNorm layers learn on the first task only (running statistics and affine
    # parameters), then stay fixed, as in GPM: no plugin protects them (`freeze_batchnorm`)
    freeze_norm: bool = False


def _eval_mode(module: nn.Module, args: Any) -> None:
    module.training = False


def freeze_batchnorm(net: nn.Module) -> int:
    """Fix every BatchNorm layer of ``net``: it normalises with its running statistics from
    now on (also while the rest of the net trains) and its affine parameters stop learning
    (``requires_grad`` off, so optimisers and plugins skip them). Returns how many layers."""
    n = 0
    for mod in net.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and not getattr(mod, "_bioplaus_frozen", False):
            mod.register_forward_pre_hook(_eval_mode)
            mod.training = False
            for p in mod.parameters():
                p.requires_grad_(False)
            mod._bioplaus_frozen = True
            n += 1
    return n


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


def per_task_transfer(R: np.ndarray, initial: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-task forgetting f_j and forward transfer t_j after the last row i of ``R``.

    f_j = max_{l in [j, i-1]} R[l, j] - R[i, j] for j < i (NaN for j >= i);
    t_j = R[j-1, j] - b_j for 0 < j <= i (NaN otherwise, and without ``initial``).
    Their means over the defined entries are ``acc_metrics``' forgetting and FWT.
    """
    R = np.asarray(R, dtype=float)
    i, n = R.shape[0] - 1, R.shape[1]
    forget = np.full(n, np.nan)
    fwt = np.full(n, np.nan)
    for j in range(i):
        forget[j] = np.max(R[j:i, j]) - R[i, j]
    if initial is not None:
        b = np.asarray(initial, dtype=float)
        for j in range(1, i + 1):
            fwt[j] = R[j - 1, j] - b[j]
    return forget, fwt


# What each setting means at test time (van de Ven, Tuytelaars & Tolias 2022's three scenarios).
SCENARIOS = {
    "task": ("task-incremental", True, "multi"),
    "domain": ("domain-incremental", False, "single"),
    "class": ("class-incremental", False, "single"),
}


def scenario(stream: str, setting: str) -> dict[str, Any]:
    """The scenario a stream and a setting make: its name, whether the task id is given at
    test time, and the heads (multi: the logits masked to the task's classes; single: one
    head over every class). A split stream without task ids (``domain`` or ``class``) is
    class-incremental: its tasks have disjoint classes and one head must tell them apart."""
    key = "class" if stream == "split" and setting == "domain" else setting
    name, task_id, heads = SCENARIOS[key]
    return {"scenario": name, "task_id_at_test": task_id, "heads": heads}


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
        return TaskLoader(self.inner.subset(n), None if self.perm is None else self.perm.cpu().numpy())


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

    c, d = cfg.section("continual"), cfg.data
    if c is None:
        raise ConfigError("continual: a task stream needs kind = 'continual' (or a [continual] table)")
    ds = load_data(cfg, dataset)
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
    if c.stream == "permuted":
        # Each task keeps its permutation twice (numpy and torch int64).
        check_bytes(16 * c.n_tasks * int(np.prod(ds.shape)), "continual.n_tasks",
                    f"{c.n_tasks} permutations of {int(np.prod(ds.shape))} inputs", share=0.5)
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


# ----------------------------------------------------------------------------- the kind


@register_experiment("continual")
class Continual(GradientExperiment):
    """Train ``[rule]`` over ``[continual]``'s task stream; evaluate every task after each one.

    Writes ``/continual/acc_matrix`` (ACC, BWT, forgetting, FWT as attributes) and the
    metrics of the module docstring; ``mode = "joint"`` is the multitask upper bound.
    """

    Config = ContinualConfig
    section = "continual"
    figures = (*TRAINING_FIGURES, "acc_matrix", "task_curves", "transfer")

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        """Two tasks of split digits (bioplaus.conformance)."""
        return {"continual": {"stream": "split", "n_tasks": 2, "epochs_per_task": 1}}

    @classmethod
    def validate(cls, cfg: ExperimentConfig) -> None:
        super().validate(cfg)
        c = cfg.section("continual")
        check_choice(c.stream, ["permuted", "split"], "continual.stream")
        check_choice(c.mode, ["sequential", "joint"], "continual.mode")
        if c.setting:
            check_choice(c.setting, list(SCENARIOS), "continual.setting")
        if c.stream == "permuted" and c.setting in ("task", "class"):
            raise ConfigError(
                f"continual.setting: permuted tasks share one label set, so {SCENARIOS[c.setting][0]} "
                "learning is not defined on them; use setting = 'domain' (or leave it empty)"
            )

    @classmethod
    def declared_metrics(cls, cfg: ExperimentConfig) -> list[Metric]:
        out = cls.rule_metrics(cfg, (), "")
        out += [
            Metric("ACC", "max", unit="fraction", headline=True, summary=True,
                   description="mean accuracy over all tasks after the last one"),
            Metric("BWT", "max", unit="fraction", summary=True, description="backward transfer"),
            Metric("FWT", "max", unit="fraction", description="forward transfer"),
            Metric("task*/test_acc", "max", unit="fraction", panel="task accuracy"),
            Metric("task*/test_loss", "min", panel="task loss"),
            Metric("test_acc", "max", unit="fraction", panel="accuracy", description="mean over the tasks seen so far"),
            Metric("bwt", "max", unit="fraction", panel="transfer"),
            Metric("forgetting", "min", unit="fraction", panel="transfer", description="mean drop from each task's best"),
            Metric("fwt", "max", unit="fraction", panel="transfer",
                   description="forward transfer: mean of R[j-1, j] - b_j over the tasks reached"),
            Metric("task*/forgetting", "min", unit="fraction", panel="task forgetting",
                   description="max_{l<i} R[l, j] - R[i, j] after task i > j"),
            Metric("train_loss_task", "min", panel="loss"),
            Metric("train_acc_task", "max", unit="fraction", panel="accuracy"),
            Metric("task", description="index of the task just finished"),
            Metric("train_seconds", "min", unit="s"),
            Metric("eval_seconds", "min", unit="s"),
        ]
        return out

    # -- set-up -----------------------------------------------------------------------
    def build(self) -> None:
        cfg = self.cfg
        c = self.options
        self.tasks, stream, input_shape = build_tasks(cfg, self.user_data)
        self.stream = stream
        self.setting = c.setting or stream.setting
        self.mode = c.mode
        steps_task = self.steps_per_epoch(len(self.tasks[0].train)) * c.epochs_per_task
        if cfg.train.max_steps:
            steps_task = min(steps_task, cfg.train.max_steps)
        self.total_steps = steps_task * len(self.tasks)
        # The schedule (if any) restarts with every task's fresh optimiser.
        ctx_steps = self.total_steps if c.mode == "joint" else steps_task
        self.task_info = TaskInfo(
            index=0,
            n_tasks=len(self.tasks),
            setting=self.setting,
            mode=c.mode,
            task_classes=tuple(tuple(int(k) for k in t.classes) for t in self.tasks),
        )
        n_max = max(self.tasks[0].train.n, self.tasks[0].test.n)
        self.build_rule(stream.n_classes, input_shape, len(self.tasks[0].train), ctx_steps, self.task_info, n_samples=n_max)
        for task in self.tasks:
            to_device(task.train, self.ctx.device)
            to_device(task.test, self.ctx.device)
        probe_x, probe_y = next(iter(self.tasks[0].test))[:2]
        self.setup_rule(probe_x[:64], probe_y[:64])

    def meta(self) -> dict[str, Any]:
        return {
            **self.model_meta(),
            "stream": self.stream.name,
            "setting": self.setting,
            **scenario(self.options.stream, self.setting),
            "n_tasks": len(self.tasks),
            "n_train": self.tasks[0].train.n,
        }

    # -- helpers ----------------------------------------------------------------------
    def _say(self, text: str) -> None:
        self.bar.write(text)

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
        self.ctx.log(step, **vals)

    def _write_matrix(self) -> dict[str, float]:
        R = np.array(self.rows)
        if self.mode == "joint":
            summary = {"ACC": float(np.mean(R[-1])), "BWT": math.nan, "forgetting": math.nan, "FWT": math.nan}
        else:
            summary = acc_metrics(R, self.initial)
        forget, fwt = per_task_transfer(R, self.initial) if self.mode != "joint" else (np.full(R.shape[1], np.nan),) * 2
        self.ctx.log_array(
            "/continual/acc_matrix",
            R,
            **summary,
            mode=self.mode,
            setting=self.setting,
            initial=self.initial,
            forgetting_per_task=forget,
            fwt_per_task=fwt,
            train_seconds=self.train_seconds,
            **scenario(self.options.stream, self.setting),
        )
        return summary

    def _matrix_row(self) -> tuple[np.ndarray, dict[str, float]]:
        """Evaluate every task, append the row to the matrix, write it and the per-task metrics."""
        accs, losses = self._evaluate_all()
        self.rows.append(accs)
        summary = self._write_matrix()
        self._log_eval(self.ctx.step, accs, losses)
        return accs, summary

    def _train_sequential(self) -> dict[str, float]:
        c = self.options
        summary: dict[str, float] = {}
        plugins = self.plugins
        for k, task in enumerate(self.tasks):
            t0 = time.perf_counter()
            if k > 0 and c.reset_optimizer:
                # Momentum of the last task holds unprotected directions of that task.
                self.rule.reset_optimizer()
            self._set_task(k)
            plugins.before_task(self.rule, self.task_info.at(k), task.train)
            self.reset_divergence()  # a new task's loss starts high again
            loss_sum, acc_sum, count = 0.0, 0.0, 0
            cap = self.cfg.train.max_steps  # per task
            for epoch in range(1, c.epochs_per_task + 1):
                self._set_task(k)
                # the rule's own plan of the epoch if it has one (NoProp's blocks in order)
                for b, m in enumerate(self.epoch_steps(task.train), start=1):
                    loss_sum += m.get("loss", 0.0)
                    acc_sum += m.get("acc", 0.0)
                    count += 1
                    self.bar.update(f"task {k} batch {b}/{len(task.train)}", {f"train_{n}": v for n, v in m.items()})
                    if cap and count >= cap:
                        break
                plugins.after_epoch(self.rule, epoch, {"train_loss_epoch": loss_sum / max(count, 1)})
                if cap and count >= cap:
                    break
            self._set_task(k)
            plugins.after_task(self.rule, self.task_info.at(k), task.train)
            self._set_task(None)
            if k == 0 and c.freeze_norm and len(self.tasks) > 1:
                n = freeze_batchnorm(self.rule.net)
                self._say(f"continual.freeze_norm: {n} BatchNorm layers fixed after task 0")
            self.train_seconds += time.perf_counter() - t0
            accs, summary = self._matrix_row()
            step = self.ctx.step
            seen = float(np.mean(accs[: k + 1]))
            self.ctx.log(
                step,
                task=float(k),
                test_acc=seen,
                train_loss_task=loss_sum / max(count, 1),
                train_acc_task=acc_sum / max(count, 1),
                bwt=summary["BWT"] if k > 0 else 0.0,
                forgetting=summary["forgetting"] if k > 0 else 0.0,
                **({"fwt": summary["FWT"]} if k > 0 else {}),
                **{f"task{j}/forgetting": float(v) for j, v in enumerate(per_task_transfer(np.array(self.rows))[0][:k])},
            )
            self.ctx.flush()
            row = " ".join(f"{a * 100:5.1f}" for a in accs[: k + 1])
            self._say(
                f"task {k} ({task.name}): train_loss={loss_sum / max(count, 1):.4f} "
                f"ACC={seen * 100:.2f} BWT={summary['BWT'] * 100 if k else 0.0:+.2f} "
                f"[{row}] ({time.perf_counter() - t0:.1f} s)"
            )
        return summary

    def _train_joint(self) -> dict[str, float]:
        c = self.options
        plugins = self.plugins
        t0 = time.perf_counter()
        plugins.before_task(self.rule, self.task_info, self.tasks[0].train)
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
                    if self.cfg.train.max_steps and self.ctx.step >= self.cfg.train.max_steps:
                        live = []
                        break
                    self._set_task(k)
                    m = self.train_step(x, y)
                    b += 1
                    loss_sum += m.get("loss", 0.0)
                    acc_sum += m.get("acc", 0.0)
                    count += 1
                    self.bar.update(f"epoch {epoch} batch {b}/{total}", {f"train_{n}": v for n, v in m.items()})
            plugins.after_epoch(self.rule, epoch, {"train_loss_epoch": loss_sum / max(count, 1)})
        self._set_task(None)
        plugins.after_task(self.rule, self.task_info, self.tasks[0].train)
        self.train_seconds += time.perf_counter() - t0
        accs, summary = self._matrix_row()
        step = self.ctx.step
        self.ctx.log(
            step, task=float(len(self.tasks) - 1), test_acc=summary["ACC"],
            train_loss_task=loss_sum / max(count, 1), train_acc_task=acc_sum / max(count, 1),
        )
        self.ctx.flush()
        self._say(f"joint: ACC={summary['ACC'] * 100:.2f} ({time.perf_counter() - t0:.1f} s)")
        return summary

    # -- main -------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        self.rows: list[np.ndarray] = []
        self.train_seconds = 0.0
        self.eval_seconds = 0.0
        self.bar = self.ctx.progress(self.total_steps)
        accs, losses = self._evaluate_all()
        self.initial = accs.copy()
        self._log_eval(0, accs, losses)
        self.ctx.flush()
        # The file stays in the lazy phase (closed between flushes): metric names appear
        # task by task (plugins log after each task), which SWMR cannot create.
        summary = self._train_joint() if self.mode == "joint" else self._train_sequential()
        self.save_model()
        return {
            "test_acc": summary.get("ACC", math.nan),
            "ACC": summary.get("ACC", math.nan),
            "BWT": summary.get("BWT", math.nan),
            "forgetting": summary.get("forgetting", math.nan),
            "FWT": summary.get("FWT", math.nan),
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
        }


# ----------------------------------------------------------------------------- figures


@register_figure("acc_matrix", needs=("/continual/acc_matrix",))
def acc_matrix_figure(run: RunFile, out_dir: Path) -> list[Path]:
    """The accuracy matrix R[i, j] with ACC and BWT in the title."""
    path = "/continual/acc_matrix"
    if not run.has(path) or run.array(path).dtype.kind not in "iuf":
        return []
    mat = np.asarray(run.array(path), dtype=float)
    if mat.ndim != 2 or mat.size == 0:
        return []
    attrs = run.attrs_of(path)
    percent = np.nanmax(mat) > 1.0 if np.isfinite(mat).any() else False
    rows, cols = mat.shape
    fig = new_figure(1.6 + 0.7 * cols, 1.4 + 0.6 * rows)
    ax = fig.subplots()
    img = ax.imshow(np.ma.masked_invalid(mat), cmap="viridis", vmin=0, vmax=100 if percent else 1)
    if rows * cols <= 400:
        for i in range(rows):
            for j in range(cols):
                if np.isfinite(mat[i, j]):
                    dark = mat[i, j] < (50 if percent else 0.5)
                    ax.text(
                        j,
                        i,
                        f"{mat[i, j]:.2f}" if not percent else f"{mat[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="w" if dark else "k",
                    )
    ax.set_xticks(range(cols))
    ax.set_yticks(range(rows))
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after training task")
    fig.colorbar(img, ax=ax, label="accuracy (%)" if percent else "accuracy (fraction)")
    title = "Accuracy matrix"
    parts = [f"{k} = {fmt(attrs[k])}" for k in ("ACC", "BWT") if k in attrs]
    if parts:
        title += "\n" + ", ".join(parts)
    ax.set_title(title)
    return save_figure(fig, out_dir, "acc_matrix.png")


# Task indices of a sane size only: int() of a 5000-digit string raises.
_TASK_METRIC = re.compile(r"^task(\d{1,6})/test_acc$")


@register_figure("task_curves", needs=("/metrics",))
def task_curves_figure(run: RunFile, out_dir: Path) -> list[Path]:
    """Per-task test accuracy against the training step (continual runs)."""
    tasks = sorted(
        (int(m.group(1)), n) for n in run.metrics if (m := _TASK_METRIC.match(n)) is not None
    )
    series = {n: np.asarray(run.metric(n), dtype=float) for _, n in tasks}
    tasks = [(j, n) for j, n in tasks if np.isfinite(series[n]).any()]  # empty or all-NaN: no line
    if not tasks:
        return []
    fig = new_figure(7.5, 4.2)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"]
    for i, (j, name) in enumerate(tasks):
        y = series[name]
        scale = 100.0 if np.nanmax(y) <= 1.0 else 1.0
        ax.plot(run.metric_steps(name), scale * y, marker=("o", "s", "^", "D", "v")[i % 5], ms=4,
                ls=("-", "--", ":", "-.")[(i // 5) % 4], color=cmap(0.9 * i / max(len(tasks) - 1, 1)),
                label=f"task {j}")
    if "task" in run.metrics:
        # a dotted line where each new task starts
        for st in run.metric_steps("task")[:-1]:
            ax.axvline(st, color="0.6", lw=0.8, ls=":")
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"{run.name[:60]}: accuracy on each task while the stream is learned", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(tasks) > 5 else 1, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0)
    return save_figure(fig, out_dir, "task_curves.png")


@register_figure("transfer", needs=("/continual/acc_matrix",))
def transfer_figure(run: RunFile, out_dir: Path) -> list[Path]:
    """Per-task forgetting and forward transfer after the last task (bars, in points)."""
    path = "/continual/acc_matrix"
    if not run.has(path) or run.array(path).dtype.kind not in "iuf":
        return []
    mat = np.asarray(run.array(path), dtype=float)
    if mat.ndim != 2 or mat.size == 0 or mat.shape[0] > mat.shape[1] or run.attrs_of(path).get("mode") == "joint":
        return []
    initial = run.attrs_of(path).get("initial")
    b = np.asarray(initial, dtype=float) if initial is not None and np.size(initial) == mat.shape[1] else None
    forget, fwt = per_task_transfer(mat, b)
    if not (np.isfinite(forget).any() or np.isfinite(fwt).any()):
        return []
    scale = 1.0 if np.nanmax(mat) > 1.0 else 100.0
    tasks = np.arange(mat.shape[1])
    fig = new_figure(1.8 + 0.55 * len(tasks), 3.6)
    ax = fig.subplots()
    ax.bar(tasks - 0.2, np.nan_to_num(scale * forget), 0.4, label="forgetting (best - final)", color="tab:red")
    ax.bar(tasks + 0.2, np.nan_to_num(scale * fwt), 0.4, label="forward transfer (R[j-1, j] - b_j)", color="tab:blue")
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(tasks)
    ax.set_xlabel("task")
    ax.set_ylabel("points")
    ax.set_title(f"{run.name[:60]}: per-task forgetting and forward transfer", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, out_dir, "transfer.png")
