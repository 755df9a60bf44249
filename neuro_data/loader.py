"""Train/validation split, input normalisation and a seeded in-memory mini-batch loader."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

__all__ = ["ArrayLoader", "NORMALIZER_MODES", "Normalizer", "split"]

A = TypeVar("A", np.ndarray, torch.Tensor)
NORMALIZER_MODES = ("none", "unit", "standard")


def split(x: A, y: A, val_fraction: float, seed: int) -> tuple[A, A, A, A]:
    """Split ``(x, y)`` at random into ``(x_train, y_train, x_val, y_val)``.

    ``n_val = round(val_fraction * N)`` samples chosen by a permutation from
    ``numpy.random.default_rng(seed)``; both parts keep the original sample order.
    Not stratified.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} samples but y has {len(y)}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    val_idx, tr_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if isinstance(x, torch.Tensor):
        ti, vi = torch.from_numpy(tr_idx), torch.from_numpy(val_idx)
        return x[ti], y[ti], x[vi], y[vi]  # type: ignore[return-value]
    return x[tr_idx], y[tr_idx], x[val_idx], y[val_idx]


@dataclass(frozen=True)
class Normalizer:
    """Input normalisation fitted on training data only.

    ``standard``: x' = (x - μ_c) / σ_c with μ_c, σ_c the mean and standard deviation of
    channel c (axis 1) over the training set (one scalar pair for inputs of rank <= 2);
    ``unit`` and ``none``: x' = x (``unit`` states that inputs are already in [0, 1]).
    """

    mode: str
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    @classmethod
    def fit(cls, x: np.ndarray | torch.Tensor, mode: str) -> Normalizer:
        """Fit the statistics of ``mode`` on the training inputs ``x``."""
        if mode not in NORMALIZER_MODES:
            raise ValueError(
                f"unknown normalisation {mode!r}; valid modes: {', '.join(NORMALIZER_MODES)}"
            )
        if mode != "standard":
            return cls(mode)
        a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if a.ndim >= 3:
            axes = (0,) + tuple(range(2, a.ndim))
            shape = (1, a.shape[1]) + (1,) * (a.ndim - 2)
        else:
            axes, shape = tuple(range(a.ndim)), (1,) * a.ndim
        # Accumulate in float64: a float32 sum over 47M pixels loses digits.
        mean = a.mean(axis=axes, dtype=np.float64)
        std = a.std(axis=axes, dtype=np.float64)
        std = np.maximum(std, 1e-8)  # a constant channel must not divide by zero
        return cls(
            mode,
            mean.reshape(shape).astype(np.float32),
            std.reshape(shape).astype(np.float32),
        )

    def __call__(self, x: A) -> A:
        """Normalise ``x`` (numpy or torch; returns the same kind, never in place)."""
        if self.mean is None or self.std is None:
            return x
        if isinstance(x, torch.Tensor):
            m = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)
            s = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)
            return (x - m) / s
        return ((x - self.mean) / self.std).astype(np.float32, copy=False)


def _as_tensor(a: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.to(dtype)
    np_dtype = np.float32 if dtype == torch.float32 else np.int64
    a = np.ascontiguousarray(a, dtype=np_dtype)
    with warnings.catch_warnings():
        # Datasets are cached read-only; sharing their memory is safe because the loader
        # only ever indexes (which copies) and never writes in place.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


class ArrayLoader:
    """Mini-batches ``(x[idx], y[idx])`` over in-memory tensors, reshuffled every epoch.

    The tensors are built once (sharing memory with numpy input where the dtype already
    fits). Each ``iter()`` draws a new permutation from the loader's own
    ``torch.Generator`` seeded with ``seed``, so epoch k's order depends only on the seed.
    """

    def __init__(
        self,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.x = _as_tensor(x, torch.float32)
        self.y = _as_tensor(y, torch.int64)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)

    @property
    def n(self) -> int:
        """Number of samples."""
        return len(self.x)

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.n // self.batch_size
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # The permutation is drawn here, not inside the generator, so that each iter() call
        # advances the seeded stream exactly once even if the epoch is never consumed.
        # The stream is on the CPU whatever the device of x (the same order on every device).
        perm = torch.randperm(self.n, generator=self.generator, device="cpu") if self.shuffle else None
        if perm is not None and perm.device != self.x.device:
            perm = perm.to(self.x.device)
        return self._batches(perm)

    def _batches(self, perm: torch.Tensor | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bs = self.batch_size
        for i in range(0, len(self) * bs, bs):
            if perm is None:
                yield self.x[i : i + bs], self.y[i : i + bs]
            else:
                idx = perm[i : i + bs]
                yield self.x[idx], self.y[idx]

    def subset(self, n: int) -> ArrayLoader:
        """A loader over the first ``n`` samples, in order (no shuffle): fixed probe batches."""
        n = min(int(n), self.n)
        return ArrayLoader(
            self.x[:n],
            self.y[:n],
            batch_size=min(self.batch_size, max(n, 1)),
            shuffle=False,
            seed=self.seed,
            drop_last=False,
        )

    def __repr__(self) -> str:
        return (
            f"ArrayLoader(n={self.n}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"seed={self.seed}, drop_last={self.drop_last}, batches={len(self)})"
        )
