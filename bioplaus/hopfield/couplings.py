"""Hebbian couplings of the multitasking network, kept as low-rank factors.

Every coupling matrix here has the form (J_ii = 0)

    J_ij = c Σ_p V_pi V_pj          (i ≠ j),

with P rows V (K patterns, K mean examples or K·M examples) and one scale c. The rows are
stored as integers held in float64 (sums of ±1, 0 entries), so fields computed in any
order are exact and the O(P) update and the O(N) dense field agree bit for bit:

- storing:       V = ξ (K rows),            c = 1/(N (1 − d));
- supervised:    V = Σ_a η^{μ,a} = M η̄^μ,   c = 1/(N R_d M²)   (J = η̄ᵀη̄ / (N R_d));
- unsupervised:  V = η^{μ,a} (K·M rows),    c = 1/(N M R_d);

with R_d = (1 − d)(r² + (1 − r²)/M) = E[(η̄)²], the normalisation that makes the mean field
of a retrieved pattern the same for all three (REFERENCES §4). d, r and M are the nominal
parameters of the generator, not their empirical values.

The field on spin i is h_i = c (Σ_p V_pi u_p − σ_i Σ_p V_pi²) with the overlaps
u_p = Σ_j V_pj σ_j; the energy is H = −(c/2) (Σ_p u_p² − Σ_p Σ_i V_pi²). The N x N matrix
is only built by `Couplings.dense` (tests, small N).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neuro_data.patterns import PatternSet

RULES = ("storing", "supervised", "unsupervised")


def r_d(d: float, r: float, M: int) -> float:
    """R_d = (1 − d)(r² + (1 − r²)/M)."""
    return (1.0 - d) * (r * r + (1.0 - r * r) / M)


@dataclass(frozen=True, eq=False)
class Couplings:
    """J = c VᵀV with a zero diagonal, as rows ``V`` (float64 holding integers) and ``c``.

    ``Vt`` is the transposed copy ``[N, P]`` (C order) that the Monte Carlo kernel reads one
    site at a time; ``diag[i] = Σ_p V_pi²`` is the self-coupling that is removed.
    """

    V: np.ndarray  # [P, N] float64 (integer values)
    c: float
    rule: str
    Vt: np.ndarray  # [N, P] the narrowest integer type that holds the rows (int8 usually)
    diag: np.ndarray  # [N] int64

    @classmethod
    def from_rows(cls, V: np.ndarray, c: float, rule: str = "custom") -> Couplings:
        """Rows ``V`` [P, N] of integer values and the scale ``c``."""
        V = np.ascontiguousarray(V, dtype=np.float64)
        if V.ndim != 2:
            raise ValueError(f"coupling rows must be [P, N], got shape {V.shape}")
        if not np.array_equal(V, np.round(V)):
            raise ValueError("coupling rows must hold integers (fold fractions into c)")
        big = float(np.abs(V).max(initial=0.0))
        dt = np.int8 if big <= 127 else np.int16 if big <= 32767 else np.int32
        Vi = V.astype(np.int64)
        return cls(V, float(c), rule, np.ascontiguousarray(V.T.astype(dt)), np.einsum("pi,pi->i", Vi, Vi))

    def int_overlaps(self, sigma: np.ndarray) -> np.ndarray:
        """u = V σ as int64 ``[R, P]`` (the exact state the Monte Carlo kernel updates)."""
        s = np.asarray(sigma, dtype=np.int64)
        return np.ascontiguousarray(s @ self.Vt.astype(np.int64))

    @property
    def N(self) -> int:
        return int(self.V.shape[1])

    @property
    def P(self) -> int:
        return int(self.V.shape[0])

    def overlaps(self, sigma: np.ndarray) -> np.ndarray:
        """u = V σ (``[..., P]`` for σ ``[..., N]``)."""
        return np.asarray(sigma, dtype=np.float64) @ self.V.T

    def fields(self, sigma: np.ndarray) -> np.ndarray:
        """h = J σ from the rows (O(N P)); σ ``[N]`` or ``[R, N]``."""
        s = np.asarray(sigma, dtype=np.float64)
        return self.c * (self.overlaps(s) @ self.V - s * self.diag)

    def energy(self, sigma: np.ndarray) -> np.ndarray | float:
        """H(σ) = −½ Σ_{i≠j} J_ij σ_i σ_j (total, not per spin)."""
        u = self.overlaps(sigma)
        return -0.5 * self.c * ((u * u).sum(axis=-1) - float(self.diag.sum()))

    def dense(self) -> np.ndarray:
        """The N x N matrix (tests and small N only: N² memory)."""
        if self.N > 20000:
            raise MemoryError(f"dense() of N = {self.N} would take {self.N**2 * 8 / 1e9:.1f} GB")
        J = self.c * (self.V.T @ self.V)
        np.fill_diagonal(J, 0.0)
        return J


def storing(xi: np.ndarray, d: float) -> Couplings:
    """J = ξᵀξ / (N (1 − d)), zero diagonal."""
    xi = np.asarray(xi)
    return Couplings.from_rows(xi, 1.0 / (xi.shape[1] * (1.0 - d)), "storing")


def supervised(eta: np.ndarray, d: float, r: float) -> Couplings:
    """J = (1/(N R_d)) Σ_μ η̄^μ η̄^μᵀ with η̄^μ the mean of the M examples ``eta[μ]``."""
    K, M, N = eta.shape
    S = eta.astype(np.float64).sum(axis=1)  # M η̄, integers
    return Couplings.from_rows(S, 1.0 / (N * r_d(d, r, M) * M * M), "supervised")


def unsupervised(eta: np.ndarray, d: float, r: float) -> Couplings:
    """J = (1/(N M R_d)) Σ_μ Σ_a η^{μ,a} η^{μ,a}ᵀ (K·M rows)."""
    K, M, N = eta.shape
    return Couplings.from_rows(eta.reshape(K * M, N), 1.0 / (N * M * r_d(d, r, M)), "unsupervised")


def build(patterns: PatternSet, rule: str) -> Couplings:
    """The couplings of ``rule`` (storing | supervised | unsupervised) from a `PatternSet`."""
    if rule == "storing":
        return storing(patterns.xi, patterns.d)
    if patterns.eta is None or patterns.r is None:
        raise ValueError(f"rule {rule!r} learns from examples; the pattern set has none (M = 0)")
    if rule == "supervised":
        return supervised(patterns.eta, patterns.d, patterns.r)
    if rule == "unsupervised":
        return unsupervised(patterns.eta, patterns.d, patterns.r)
    raise ValueError(f"unknown coupling rule {rule!r}; valid: {', '.join(RULES)}")
