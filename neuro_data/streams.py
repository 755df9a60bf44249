"""Continual-learning task streams built from a `Dataset`.

- ``permuted``: every task is the whole data set under a fixed pixel permutation π_k,
  x_k[n, i] = x[n, π_k(i)] on the flattened image; π_0 is the identity (the convention of
  GPM and HLOP). Domain-incremental: one shared output head, labels unchanged.
- ``split``: task k holds the samples of a group of classes (consecutive by default:
  {0, 1}, {2, 3}, ... for 10 classes and 5 tasks). Task-incremental: one head per task;
  ``y`` keeps the global labels, ``Task.local_labels`` maps them to 0..k-1.

``permuted(..., lazy=True)`` keeps one copy of the data: each task's ``x_train`` and
``x_test`` are `PermutedArray` views that permute the rows they are indexed with (10
Fashion-MNIST tasks then cost one data set, not about 2 GB).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, overload

import numpy as np
import torch

from neuro_data.datasets import Dataset

__all__ = [
    "STREAMS",
    "SETTINGS",
    "PermutedArray",
    "Task",
    "TaskStream",
    "make_stream",
    "permuted",
    "split",
]

A = TypeVar("A", np.ndarray, torch.Tensor)
SETTINGS = ("task", "domain")


@dataclass(frozen=True, eq=False)
class Task:
    """One task of a stream: its data, the global class ids it contains, and a name."""

    task_id: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[int]
    name: str
    #: Pixel permutation of the flattened image (permuted streams), else None.
    permutation: np.ndarray | None = field(default=None, repr=False)

    def local_labels(self, y: A) -> A:
        """Global labels -> position in ``classes`` (0..k-1); numpy or torch in, same out."""
        lut = np.full(max(self.classes) + 1, -1, dtype=np.int64)
        lut[np.asarray(self.classes)] = np.arange(len(self.classes))
        is_t = isinstance(y, torch.Tensor)
        yn = y.detach().cpu().numpy() if is_t else np.asarray(y)
        bad = (yn < 0) | (yn >= len(lut))
        local = lut[np.where(bad, 0, yn)]
        local[bad] = -1
        if (local < 0).any():
            wrong = np.unique(yn[local < 0]).tolist()
            raise ValueError(f"task {self.task_id}: labels {wrong} not in classes {self.classes}")
        if is_t:
            return torch.from_numpy(local).to(y.device)  # type: ignore[union-attr,return-value]
        return local  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"Task({self.task_id}, {self.name!r}, train={len(self.x_train)}, "
            f"test={len(self.x_test)}, classes={self.classes})"
        )


@dataclass(frozen=True, eq=False)
class TaskStream(Sequence[Task]):
    """An ordered list of tasks with the label space they share.

    ``setting`` is ``"task"`` (task-incremental: a head per task, task id known at test
    time) or ``"domain"`` (one shared head over ``n_classes`` outputs).
    """

    tasks: list[Task]
    n_classes: int
    setting: str
    name: str = ""

    def __post_init__(self) -> None:
        if self.setting not in SETTINGS:
            raise ValueError(f"unknown setting {self.setting!r}; valid: {', '.join(SETTINGS)}")

    @property
    def classes_per_task(self) -> list[int]:
        """Output size of each task's head."""
        return [len(t.classes) for t in self.tasks]

    def __len__(self) -> int:
        return len(self.tasks)

    @overload
    def __getitem__(self, i: int) -> Task: ...
    @overload
    def __getitem__(self, i: slice) -> list[Task]: ...
    def __getitem__(self, i: int | slice) -> Task | list[Task]:
        return self.tasks[i]

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __repr__(self) -> str:
        return (
            f"TaskStream({self.name!r}, tasks={len(self.tasks)}, setting={self.setting!r}, "
            f"n_classes={self.n_classes})"
        )


class PermutedArray:
    """A read-only view of ``base`` whose flattened samples are permuted by ``perm``.

    Row ``n`` is ``base[n].reshape(-1)[perm].reshape(base.shape[1:])``. Indexing with an
    int, slice or index array returns a numpy array of just those rows; ``np.asarray``
    materialises the whole view (a copy).
    """

    def __init__(self, base: np.ndarray, perm: np.ndarray) -> None:
        d = int(np.prod(base.shape[1:]))
        if perm.shape != (d,):
            raise ValueError(f"permutation of length {perm.shape} does not fit samples of size {d}")
        self.base = base
        self.perm = perm

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.base.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    @property
    def ndim(self) -> int:
        return self.base.ndim

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int | slice | np.ndarray) -> np.ndarray:
        rows = self.base[idx]
        single = isinstance(idx, int | np.integer)
        rows2 = rows.reshape(1 if single else len(rows), -1)[:, self.perm]
        return rows2.reshape(rows.shape)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        out = _permute(self.base, self.perm)
        return out if dtype is None else out.astype(dtype)

    def reshape(self, *shape: int) -> np.ndarray:
        return np.asarray(self).reshape(*shape)

    def __repr__(self) -> str:
        return f"PermutedArray(shape={self.shape}, dtype={self.dtype})"


def _permute(x: np.ndarray, perm: np.ndarray) -> np.ndarray:
    n = len(x)
    out = x.reshape(n, -1)[:, perm].reshape(x.shape)
    out.flags.writeable = False
    return out


def permuted(dataset: Dataset, n_tasks: int, seed: int, lazy: bool = False) -> TaskStream:
    """Permuted-input stream: task 0 unpermuted, task k>0 under π_k ~ seeded permutation.

    π_1..π_{n-1} come in order from ``numpy.random.default_rng(seed)``, so the same seed
    gives the same permutations; images keep their ``[N, C, H, W]`` shape. ``lazy``: tasks
    hold `PermutedArray` views of the data set instead of permuted copies.
    """
    if n_tasks < 1:
        raise ValueError(f"permuted stream needs n_tasks >= 1, got {n_tasks}")
    d = int(np.prod(dataset.shape))
    rng = np.random.default_rng(seed)
    classes = list(range(len(dataset.classes)))
    tasks = []
    for k in range(n_tasks):
        if k == 0:
            perm = np.arange(d)
            # The identity task shares the (read-only) data set arrays: no copy.
            xtr, xte = dataset.x_train, dataset.x_test
        else:
            perm = rng.permutation(d)
            if lazy:
                xtr, xte = PermutedArray(dataset.x_train, perm), PermutedArray(dataset.x_test, perm)
            else:
                xtr, xte = _permute(dataset.x_train, perm), _permute(dataset.x_test, perm)
        perm.flags.writeable = False
        tasks.append(
            Task(
                k,
                xtr,
                dataset.y_train,
                xte,
                dataset.y_test,
                classes,
                f"{dataset.name}-permuted-{k}",
                permutation=perm,
            )
        )
    return TaskStream(tasks, len(classes), "domain", f"permuted-{dataset.name}")


def split(
    dataset: Dataset, n_tasks: int, classes_per_task: int | None = None, seed: int | None = None
) -> TaskStream:
    """Split-classes stream: task k holds classes order[k·c : (k+1)·c].

    ``order`` is 0..C-1, or a permutation from ``numpy.random.default_rng(seed)`` when a
    seed is given; ``c = classes_per_task`` defaults to C // n_tasks and must satisfy
    n_tasks · c <= C (leftover classes are unused).
    """
    n_all = len(dataset.classes)
    if n_tasks < 1:
        raise ValueError(f"split stream needs n_tasks >= 1, got {n_tasks}")
    c = n_all // n_tasks if classes_per_task is None else int(classes_per_task)
    if c < 1 or n_tasks * c > n_all:
        raise ValueError(
            f"split stream: {n_tasks} tasks x {c} classes does not fit the {n_all} classes "
            f"of {dataset.name!r}"
        )
    order = np.arange(n_all) if seed is None else np.random.default_rng(seed).permutation(n_all)
    tasks = []
    for k in range(n_tasks):
        cls = sorted(int(v) for v in order[k * c : (k + 1) * c])
        tr = np.isin(dataset.y_train, cls)
        te = np.isin(dataset.y_test, cls)
        arrays = [dataset.x_train[tr], dataset.y_train[tr], dataset.x_test[te], dataset.y_test[te]]
        for a in arrays:
            a.flags.writeable = False
        names = "+".join(dataset.classes[i] for i in cls)
        tasks.append(Task(k, *arrays, classes=cls, name=f"{dataset.name}-split-{k} ({names})"))
    return TaskStream(tasks, n_all, "task", f"split-{dataset.name}")


#: Stream name -> builder ``f(dataset, **opts) -> TaskStream``.
STREAMS: dict[str, Callable[..., TaskStream]] = {"permuted": permuted, "split": split}


def make_stream(name: str, dataset: Dataset, **opts: object) -> TaskStream:
    """Build the stream ``name`` (a key of `STREAMS`) from ``dataset`` with builder options."""
    fn = STREAMS.get(name)
    if fn is None:
        raise ValueError(f"unknown task stream {name!r}; valid names: {', '.join(STREAMS)}")
    return fn(dataset, **opts)
