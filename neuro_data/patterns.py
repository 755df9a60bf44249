"""Diluted ternary patterns and noisy examples of them (multitasking Hebbian networks).

Conventions (Agliari, Alessandrelli, Barra & Ricci-Tersenghi 2023):

- K patterns ξ^μ ∈ {−1, 0, +1}^N with P(ξ = 0) = d (dilution), P(ξ = ±1) = (1 − d)/2;
- M examples per pattern, η^{μ,a} = χ^{μ,a} ⊙ ξ^μ with P(χ = ±1) = (1 ± r)/2 (quality r),
  so an example shares its pattern's zeros and flips each non-zero entry with
  probability (1 − r)/2;
- the dataset entropy ρ = (1 − r²)/(M r²) (how much the examples leave undecided: the
  zero-temperature overlap of the example majority with the pattern is about
  (1 − d) erf(1/√(2ρ)) for large M).

Everything is seeded (``numpy.random.default_rng(seed)``): the same arguments give the
same arrays. Entries are stored as int8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PATTERNS", "PatternSet", "dataset_entropy", "diluted_patterns", "make_examples", "make_pattern_set"]


def dataset_entropy(r: float, M: int) -> float:
    """ρ = (1 − r²)/(M r²); ``inf`` for r = 0, 0 for r = 1."""
    if r == 0:
        return math.inf
    return (1.0 - r * r) / (M * r * r)


def _check(N: int, K: int, d: float) -> None:
    if not (isinstance(N, int | np.integer) and N >= 1):
        raise ValueError(f"N must be a positive integer, got {N!r}")
    if not (isinstance(K, int | np.integer) and K >= 1):
        raise ValueError(f"K must be a positive integer, got {K!r}")
    if not (0.0 <= d < 1.0):
        raise ValueError(f"d (dilution) must be in [0, 1), got {d!r}")


def diluted_patterns(N: int, K: int, d: float, seed: int | None = 0) -> np.ndarray:
    """K diluted ternary patterns, int8 ``[K, N]``: 0 with probability d, ±1 otherwise."""
    _check(N, K, d)
    rng = np.random.default_rng(seed)
    u = rng.random((K, N))
    xi = np.where(u < d, 0, np.where(u < d + (1.0 - d) / 2.0, 1, -1)).astype(np.int8)
    return xi


def make_examples(xi: np.ndarray, M: int, r: float, seed: int | None = 0) -> np.ndarray:
    """M examples of each pattern, int8 ``[K, M, N]``: η^{μ,a} = χ^{μ,a} ⊙ ξ^μ, P(χ=±1)=(1±r)/2."""
    if not (isinstance(M, int | np.integer) and M >= 1):
        raise ValueError(f"M (examples per pattern) must be a positive integer, got {M!r}")
    if not (0.0 <= r <= 1.0):
        raise ValueError(f"r (example quality) must be in [0, 1], got {r!r}")
    xi = np.asarray(xi, dtype=np.int8)
    rng = np.random.default_rng(seed)
    chi = np.where(rng.random((xi.shape[0], M, xi.shape[1])) < (1.0 + r) / 2.0, 1, -1).astype(np.int8)
    return chi * xi[:, None, :]


@dataclass(frozen=True, eq=False)
class PatternSet:
    """Patterns, and optionally examples of them, with the parameters that made them.

    ``xi`` int8 ``[K, N]``; ``eta`` int8 ``[K, M, N]`` or None (no examples: storing);
    ``rho`` the dataset entropy (``inf`` without examples is not used: it is None then).
    """

    xi: np.ndarray
    d: float
    seed: int | None
    eta: np.ndarray | None = None
    r: float | None = None
    M: int | None = None

    @property
    def N(self) -> int:
        return int(self.xi.shape[1])

    @property
    def K(self) -> int:
        return int(self.xi.shape[0])

    @property
    def rho(self) -> float | None:
        """Dataset entropy ρ = (1 − r²)/(M r²), None without examples."""
        if self.eta is None or self.r is None or self.M is None:
            return None
        return dataset_entropy(self.r, self.M)

    @property
    def eta_mean(self) -> np.ndarray | None:
        """η̄^μ = (1/M) Σ_a η^{μ,a}, float64 ``[K, N]`` (None without examples)."""
        return None if self.eta is None else self.eta.astype(np.float64).mean(axis=1)

    def __repr__(self) -> str:
        ex = f", M={self.M}, r={self.r}, rho={self.rho:.4g}" if self.eta is not None else ""
        return f"PatternSet(N={self.N}, K={self.K}, d={self.d}{ex})"


def make_pattern_set(
    N: int, K: int, d: float, M: int = 0, r: float = 1.0, seed: int | None = 0, **_: Any
) -> PatternSet:
    """K patterns of N entries at dilution d, and M examples of quality r each (M = 0: none).

    Patterns and examples come from two independent streams derived from ``seed``, so the
    patterns do not change when M or r does.
    """
    ss = np.random.SeedSequence(seed)
    s_pat, s_ex = ss.spawn(2)
    xi = diluted_patterns(N, K, d, seed=np.random.default_rng(s_pat).integers(2**63))
    if M:
        eta = make_examples(xi, M, r, seed=np.random.default_rng(s_ex).integers(2**63))
        return PatternSet(xi, float(d), seed, eta, float(r), int(M))
    return PatternSet(xi, float(d), seed)


#: Pattern generators by name: ``f(N, K, d, M=0, r=1.0, seed=0) -> PatternSet``.
PATTERNS = {"diluted_ternary": make_pattern_set}
