"""Mean-field theory of the multitasking network: self-consistency, stability, T = 0 limits.

Storing (J = ξᵀξ/(N(1 − d))). In the low-load limit (K finite, N → ∞) the field on a spin
is h = Σ_ν ξ^ν m_ν/(1 − d), so the Mattis magnetisations solve

    m_μ = E_ξ[ ξ^μ tanh(β Σ_ν ξ^ν m_ν / (1 − d)) ],                           (1)

the stationarity condition of the free energy per spin
f(m) = |m|²/(2(1 − d)) − β⁻¹ E_ξ log 2cosh(β Σ_ν ξ^ν m_ν/(1 − d)). (REFERENCES §4 writes
(1) with the 1/(1 − d) absorbed in β; the critical temperature of a single pattern is
then T_c = 1 in our units.) The expectation is exact: a sum over the 3^K entry vectors.

Examples. Supervised couplings J = η̄ᵀη̄/(N R_d) give the field h = Σ_ν η̄^ν n_ν / R_d with
n_ν = (1/N) Σ_j η̄_j^ν σ_j, hence

    n_μ = E[ η̄^μ tanh(β Σ_ν η̄^ν n_ν / R_d) ],   m_μ = E[ ξ^μ tanh(β Σ_ν η̄^ν n_ν / R_d) ],   (2)

the expectation over ξ and over the mean χ̄ = (2k − M)/M of the M example signs,
k ~ Binomial(M, (1 + r)/2), independently per pattern (η̄ = ξ χ̄). R_d = E[(η̄)²] =
(1 − d)(r² + (1 − r²)/M) plays the role of 1 − d, so (2) reduces to (1) at r = 1.
Unsupervised couplings J = Σ_{μ,a} η^{μ,a} η^{μ,a}ᵀ/(N M R_d) give h = Σ_{μ,a} η^{μ,a}
n_{μ,a}/(M R_d), n_{μ,a} the overlap with example a; on the solutions symmetric under
exchange of the examples of a pattern (n_{μ,a} = n_μ) this is Σ_μ η̄^μ n_μ/R_d and the
equations for n_{μ,a} are (2): in the low-load limit both protocols have the same
solutions (their difference is a finite-N effect).

Stability: a solution is a local minimum of f (with R = 1 − d or R_d) when the Hessian
∂²f/∂n_μ∂n_ν = δ_μν/R − (β/R²) E[η̄^μ η̄^ν (1 − tanh²(β Σ η̄ n/R))] is positive definite.

Zero temperature: tanh → sign (a zero field gives 0). A pure state retrieved from examples
then has m = (1 − d)(P(χ̄ > 0) − P(χ̄ < 0)) ≈ (1 − d) erf(1/√(2ρ)) (signal-to-noise of the
example majority, ρ = (1 − r²)/(M r²)); the hierarchical state σ_i = ξ_i^{k(i)} (k(i) the
first pattern non-zero at i) has m_k = (1 − d) d^{k−1}.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

MAX_GRID = 2_000_000
SAMPLES = 400_000  # sites drawn for the grid when the exact product exceeds MAX_GRID


def _binom_pmf(M: int, p: float) -> np.ndarray:
    """P(k) of Binomial(M, p), k = 0..M (log space: exact enough for M up to thousands)."""
    k = np.arange(M + 1)
    if p <= 0 or p >= 1:
        out = np.zeros(M + 1)
        out[0 if p <= 0 else M] = 1.0
        return out
    lg = np.array([math.lgamma(M + 1) - math.lgamma(i + 1) - math.lgamma(M - i + 1) for i in k])
    return np.exp(lg + k * math.log(p) + (M - k) * math.log1p(-p))  # entry configurations summed exactly; beyond, sampled


@dataclass(frozen=True)
class Grid:
    """The joint law of one site's entries: ξ ``[G, K]``, η̄ ``[G, K]`` and weights ``[G]``."""

    X: np.ndarray
    H: np.ndarray
    w: np.ndarray
    R: float  # normalisation: 1 − d (storing) or R_d (examples)
    exact: bool = True


def site_law(d: float, r: float | None = None, M: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One pattern's entry law: values ξ, η̄ and probabilities (storing when M is None)."""
    if M is None or r is None:
        return np.array([0.0, 1.0, -1.0]), np.array([0.0, 1.0, -1.0]), np.array([d, (1 - d) / 2, (1 - d) / 2])
    k = np.arange(M + 1)
    pk = _binom_pmf(M, (1 + r) / 2)
    chi = (2 * k - M) / M
    xs = np.concatenate([[0.0], np.ones(M + 1), -np.ones(M + 1)])
    hs = np.concatenate([[0.0], chi, -chi])
    ws = np.concatenate([[d], (1 - d) / 2 * pk, (1 - d) / 2 * pk])
    return xs, hs, ws


@functools.lru_cache(maxsize=64)
def grid(K: int, d: float, r: float | None = None, M: int | None = None, samples: int = SAMPLES, seed: int = 0) -> Grid:
    """The entry law of K independent patterns: exact product, or ``samples`` draws if huge (cached)."""
    xs, hs, ws = site_law(d, r, M)
    R = (1 - d) if M is None or r is None else (1 - d) * (r * r + (1 - r * r) / M)
    n = len(xs)
    if n**K <= MAX_GRID:
        idx = np.array(list(itertools.product(range(n), repeat=K)), dtype=np.int64).reshape(-1, K)
        return Grid(xs[idx], hs[idx], np.prod(ws[idx], axis=1), R, True)
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, size=(samples, K), p=ws)
    return Grid(xs[idx], hs[idx], np.full(samples, 1.0 / samples), R, False)


def _act(y: np.ndarray, beta: float) -> np.ndarray:
    return np.sign(y) if math.isinf(beta) else np.tanh(beta * y)


def rhs(n: np.ndarray, beta: float, g: Grid) -> tuple[np.ndarray, np.ndarray]:
    """One map of (1)/(2): returns (new n, Mattis m) for overlaps ``n`` (``[K]`` or ``[B, K]``)."""
    n = np.asarray(n, dtype=np.float64)
    t = _act(n @ g.H.T / g.R, beta) * g.w  # [..., G]
    return t @ g.H, t @ g.X


@dataclass
class Solution:
    """A fixed point of the mean-field map (``n`` overlaps, ``m`` Mattis) and how it was reached."""

    n: np.ndarray
    m: np.ndarray
    iterations: int
    converged: bool
    history: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def m_sorted(self) -> np.ndarray:
        return np.sort(np.abs(self.m))[::-1]


def solve(
    beta: float, n0: np.ndarray, g: Grid, damping: float = 0.0, tol: float = 1e-11, max_iter: int = 20000,
    keep_history: bool = False, escape: int = 5, kick: float = 1e-3, check: Callable[[], None] | None = None,
) -> Solution:
    """Iterate n ← (1 − damping) F(n) + damping n from ``n0`` (the rate dynamics) to a fixed point.

    A fixed point that is a saddle of f (Hessian not positive definite, finite β) is left
    along its most unstable direction with a ``kick`` (up to ``escape`` times), as the
    fluctuations of a finite network leave it; a component may otherwise shrink below the
    tolerance during the transient and be taken for converged while it still grows.
    ``check`` is called before every iteration (a run's stop check: a large grid takes
    seconds per thousand iterations, SIGTERM must not wait for the fixed point).
    """
    n = np.asarray(n0, dtype=np.float64).copy()
    hist = [n.copy()] if keep_history else []
    it = 0
    converged = False
    for _ in range(escape + 1):
        converged = False
        while it < max_iter:
            if check is not None:
                check()
            it += 1
            new, _ = rhs(n, beta, g)
            new = (1 - damping) * new + damping * n
            delta = float(np.abs(new - n).max())
            n = new
            if keep_history:
                hist.append(n.copy())
            if delta < tol:
                converged = True
                break
        if not converged or math.isinf(beta) or np.abs(n).max() < 1e-8:
            break
        w, v = np.linalg.eigh(hessian(n, beta, g))
        if w[0] > 1e-9:
            break
        n = n + kick * g.R * v[:, 0] * (1 if v[:, 0] @ np.sign(n + 1e-300) >= 0 else -1)
    return Solution(n, rhs(n, beta, g)[1], it, converged, hist)


def hessian(n: np.ndarray, beta: float, g: Grid) -> np.ndarray:
    """∂²f/∂n∂n at ``n`` (finite β)."""
    t = np.tanh(beta * (np.asarray(n) @ g.H.T) / g.R)
    K = g.H.shape[1]
    return np.eye(K) / g.R - (beta / g.R**2) * (g.H * (g.w * (1 - t * t))[:, None]).T @ g.H


def is_stable(n: np.ndarray, beta: float, g: Grid, tol: float = 1e-9) -> bool:
    """True if the Hessian at ``n`` is positive definite (a local minimum of f)."""
    if math.isinf(beta):
        raise ValueError("the Hessian needs a finite beta")
    return bool(np.linalg.eigvalsh(hessian(n, beta, g)).min() > tol)


def symmetric(beta: float, g: Grid, start: float | None = None, check: Callable[[], None] | None = None) -> Solution:
    """The symmetric (parallel) solution n_μ = n for all μ, from n = ``start`` (default R)."""
    K = g.H.shape[1]
    s = g.R if start is None else start
    return solve(beta, np.full(K, s), g, escape=0, check=check)  # stays on the symmetric line (stable or not)


def hierarchical_amplitudes(d: float, K: int) -> np.ndarray:
    """m_k = (1 − d) d^{k−1}, k = 1..K (the T = 0 hierarchical state)."""
    return (1 - d) * d ** np.arange(K)


def hierarchical(beta: float, g: Grid, d: float, check: Callable[[], None] | None = None) -> Solution:
    """The solution reached from the hierarchical amplitudes (overlaps scaled by R/(1 − d))."""
    K = g.H.shape[1]
    return solve(beta, hierarchical_amplitudes(d, K) * g.R / (1 - d), g, check=check)


def majority_overlap(d: float, r: float, M: int) -> float:
    """T = 0 overlap of the example majority sign(Σ_a η^a) with ξ: (1 − d)(P(χ̄>0) − P(χ̄<0))."""
    k = np.arange(M + 1)
    pk = _binom_pmf(M, (1 + r) / 2)
    return float((1 - d) * (pk[2 * k > M].sum() - pk[2 * k < M].sum()))


def snr_overlap(d: float, r: float, M: int) -> float:
    """Signal-to-noise (Gaussian) version of `majority_overlap`: (1 − d) erf(1/√(2ρ))."""
    rho = (1 - r * r) / (M * r * r) if r > 0 else math.inf
    return float((1 - d) * math.erf(1.0 / math.sqrt(2 * rho))) if rho > 0 else float(1 - d)


def capacity(N: int, d: float, z: float = 3.0) -> int:
    """Patterns retrievable at once at T = 0 from the hierarchical amplitudes: the number of
    k with (1 − d) d^{k−1} above z finite-size noise units 1/√N, i.e.
    1 + ⌊log((1 − d)√N / z) / log(1/d)⌋ (≈ log N / (2 log(1/d)): K ~ log N)."""
    if d <= 0:
        return 1
    top = math.log((1 - d) * math.sqrt(N) / z)
    return 0 if top < 0 else 1 + int(math.floor(top / math.log(1 / d)))


PHASES = ("paramagnetic", "pure", "partial", "hierarchical", "parallel", "both")


def phase(
    d: float, T: float, K: int = 3, r: float | None = None, M: int | None = None, eps: float = 1e-4,
    check: Callable[[], None] | None = None,
) -> dict[str, object]:
    """The mean-field phase at (d, T): which of the symmetric (parallel) solution and the
    solution reached from the hierarchical amplitudes are non-zero local minima of f.

    ``parallel``: the symmetric solution n_μ = n ≠ 0 is stable; ``hierarchical``: the
    solution reached from (1 − d) d^{k−1} has K distinct non-zero amplitudes and is stable;
    ``both``: both are; otherwise the state reached from the hierarchical amplitudes names
    it: ``partial`` (1 < k < K patterns retrieved), ``pure`` (one) or ``paramagnetic``.
    """
    beta = 1.0 / T
    g = grid(K, d, r, M)
    sym = symmetric(beta, g, check=check)
    sym_ok = bool(np.abs(sym.m).max() > eps and is_stable(sym.n, beta, g))
    hie = hierarchical(beta, g, d, check=check)
    ms = hie.m_sorted
    k_ret = int((ms > eps).sum())
    hie_stable = is_stable(hie.n, beta, g) if k_ret else True
    hie_ok = bool(k_ret == K and ms[0] - ms[-1] > eps and hie_stable)
    if sym_ok and hie_ok:
        name = "both"
    elif sym_ok:
        name = "parallel"
    elif hie_ok:
        name = "hierarchical"
    else:
        name = "paramagnetic" if k_ret == 0 else "pure" if k_ret == 1 else "partial"
    return {
        "phase": name, "symmetric": sym.m_sorted, "hierarchical": ms, "retrieved": k_ret,
        "sym_stable": sym_ok, "hie_stable": bool(hie_stable),
    }


def phase_diagram(ds: np.ndarray, Ts: np.ndarray, K: int = 3, check: Callable[[], None] | None = None) -> np.ndarray:
    """Phase index (into `PHASES`) on the grid ``[len(Ts), len(ds)]``."""
    out = np.zeros((len(Ts), len(ds)), dtype=np.int64)
    for a, T in enumerate(Ts):
        for b, d in enumerate(ds):
            out[a, b] = PHASES.index(phase(float(d), float(T), K, check=check)["phase"])
    return out
