"""Glauber heat-bath Monte Carlo of the multitasking network, many replicas at once.

Random sequential dynamics: each update picks a site i uniformly at random (a sweep is N
updates), draws x uniform in [0, 1) and sets σ_i = +1 with the heat-bath probability

    P(σ_i = +1) = (1 + tanh(β h_i))/2 = 1/(1 + exp(−2 β h_i)),

and at zero temperature (β = inf) σ_i = sign(h_i), a tie h_i = 0 broken by x < ½. The
field comes from the P coupling rows (`Couplings`, integer rows V and scale c):
h_i = c (Σ_p V_pi u_p − σ_i Σ_p V_pi²), and the integer overlaps u_p = Σ_j V_pj σ_j are
updated when σ_i changes (u_p += 2 σ_i^new V_pi): an update costs O(P), a sweep O(N P).

Exactness and speed. Fields are integers (times c), so they are exact in any summation
order, and exp(−2βc|h|) is read from two small tables (|h| = a·2^b + r: E = A[a] B[r]; 0
beyond exp(−40)); the acceptance test is x (1 + E) < 1 (h ≥ 0) or x (1 + E) < E (h < 0).
Each replica owns two splitmix64 streams (site and acceptance), so a replica's trajectory
does not depend on how replicas are spread over threads, and the pure-Python reference
(`sweep_reference`, O(P) or O(N) field) reproduces the compiled kernel bit for bit.
Each replica packs its rows and its spins into one array ``[N, W]`` (row i: V_1i .. V_Pi,
σ_i), so one update touches one cache line, and the site of the update 16 steps ahead is
prefetched (the site stream is counter-based, so the look-ahead is rewound at the end).

The compiled path is numba (``cache=True``: the first call in a fresh environment
compiles for some seconds, later processes load the cache); replicas run in parallel with
``prange`` over ``numba.set_num_threads`` threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bioplaus.hopfield.couplings import Couplings

MASK64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15  # splitmix64 increment
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_INV53 = 1.0 / 9007199254740992.0  # 2**-53
PARALLEL_MIN_UPDATES = 200_000  # below, replicas run one after the other in the calling thread
LOOKAHEAD = 16  # sites prefetched ahead (a power of two)
EXP_CUT = 40.0  # exp(-40) < 2**-53: beyond it the heat bath is deterministic

try:  # numba is a core dependency; the reference path still works without it
    import numba
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False

INITS = ("random", "mixture", "pattern")


def exp_tables(beta: float, c: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Tables (A, B, b) with exp(−2βc a) ≈ A[a >> b] B[a & (2^b − 1)] for a < len(A) 2^b."""
    y = 2.0 * beta * c
    if not math.isfinite(y) or y <= 0:
        return np.zeros(1), np.zeros(1), 0
    amax = int(EXP_CUT / y) + 1
    b = max(6, (amax.bit_length() + 1) // 2)
    hi = (amax >> b) + 1
    A = np.exp(-y * (np.arange(hi, dtype=np.float64) * (1 << b)))
    B = np.exp(-y * np.arange(1 << b, dtype=np.float64))
    return A, B, b


# ----------------------------------------------------------------------------- compiled

if HAVE_NUMBA:

    @intrinsic
    def _prefetch(typingctx, arr, i):  # noqa: ANN001, ANN202
        """LLVM prefetch of ``arr[i, 0]`` (read, keep in all cache levels)."""
        sig = types.void(arr, i)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            zero = context.get_constant(types.intp, 0)
            ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], zero], wraparound=False)
            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0"
            )
            builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        return sig, codegen

    @njit(cache=True, inline="always")
    def _mix(s):  # noqa: ANN001, ANN202
        z = s
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
        return z ^ (z >> np.uint64(31))

    @njit(cache=True)
    def _run_one(rows, P, u, st, n_updates, zero_t, A, B, b):  # noqa: ANN001, ANN202
        N = rows.shape[0]
        nN = np.uint64(N)
        g = np.uint64(GAMMA)
        s1 = st[0]
        s2 = st[1]
        ring = np.empty(LOOKAHEAD, np.int64)
        for k in range(LOOKAHEAD):
            s1 += g
            ring[k] = np.int64(((_mix(s1) >> np.uint64(32)) * nN) >> np.uint64(32))
            _prefetch(rows, ring[k])
        na = A.shape[0]
        mask = (1 << b) - 1
        # A private copy of the overlaps: replicas on other threads write their own u rows,
        # which share cache lines with this one (false sharing would serialise the threads).
        ul = np.empty(max(P, 16), np.int64)
        for p in range(P):
            ul[p] = u[p]
        for t in range(n_updates):
            slot = t & (LOOKAHEAD - 1)
            i = ring[slot]
            s1 += g
            nxt = np.int64(((_mix(s1) >> np.uint64(32)) * nN) >> np.uint64(32))
            ring[slot] = nxt
            _prefetch(rows, nxt)
            si = np.int64(rows[i, P])
            h = np.int64(0)
            q = np.int64(0)
            for p in range(P):
                v = np.int64(rows[i, p])
                h += v * ul[p]
                q += v * v
            h -= si * q
            s2 += g
            x = np.float64(_mix(s2) >> np.uint64(11)) * _INV53
            if zero_t:
                if h > 0:
                    new = 1
                elif h < 0:
                    new = -1
                else:
                    new = 1 if x < 0.5 else -1
            else:
                a = h if h >= 0 else -h
                hi = a >> b
                E = A[hi] * B[a & mask] if hi < na else 0.0
                lhs = x * (1.0 + E)
                if h >= 0:
                    new = 1 if lhs < 1.0 else -1
                else:
                    new = 1 if lhs < E else -1
            f = np.int64(new) - si
            if f != 0:
                rows[i, P] = new
                for p in range(P):
                    ul[p] += f * np.int64(rows[i, p])
        for p in range(P):
            u[p] = ul[p]
        st[0] = s1 - np.uint64(LOOKAHEAD) * g  # rewind the look-ahead: the stream goes on from here
        st[1] = s2

    @njit(cache=True, parallel=True)
    def _run(rows, P, u, states, n_updates, zero_t, A, B, b):  # noqa: ANN001, ANN202
        for r in prange(rows.shape[0]):
            _run_one(rows[r], P, u[r], states[r], n_updates, zero_t, A, B, b)

    @njit(cache=True)
    def _measure(sigma, xi):  # noqa: ANN001, ANN202
        """Σ_i ξ_i σ_i and Σ_i ξ_i² (ξ_i − σ_i)² per replica and row (integers)."""
        R, N = sigma.shape
        K = xi.shape[0]
        dot = np.zeros((R, K), np.int64)
        sq = np.zeros((R, K), np.int64)
        for r in range(R):
            for k in range(K):
                a = np.int64(0)
                b = np.int64(0)
                for i in range(N):
                    x = np.int64(xi[k, i])
                    sg = np.int64(sigma[r, i])
                    a += x * sg
                    e = x - sg
                    b += x * x * e * e
                dot[r, k] = a
                sq[r, k] = b
        return dot, sq

    @njit(cache=True)
    def _run_serial(rows, P, u, states, n_updates, zero_t, A, B, b):  # noqa: ANN001, ANN202
        for r in range(rows.shape[0]):
            _run_one(rows[r], P, u[r], states[r], n_updates, zero_t, A, B, b)


# ----------------------------------------------------------------------------- reference


def _mix_py(s: int) -> int:
    z = s
    z = ((z ^ (z >> 30)) * _M1) & MASK64
    z = ((z ^ (z >> 27)) * _M2) & MASK64
    return z ^ (z >> 31)


def sweep_reference(
    J: Couplings,
    beta: float,
    sigma: np.ndarray,
    u: np.ndarray,
    states: np.ndarray,
    n_sweeps: int = 1,
    field: str = "lowrank",
) -> None:
    """The compiled kernel in plain Python + numpy, same random streams, in place.

    ``field = "lowrank"`` reads h_i from the P overlaps u (O(P) per update); ``"dense"``
    from the N x N matrix, h_i = Σ_j J_ij σ_j (O(N) per update), for checking they agree.
    ``sigma`` int8 ``[R, N]``, ``u`` int64 ``[R, P]``, ``states`` uint64 ``[R, 2]``.
    """
    zero_t = math.isinf(beta)
    A, B, b = exp_tables(beta, J.c)
    mask = (1 << b) - 1
    Vt = J.Vt.astype(np.int64)
    Jraw = None
    if field == "dense":
        Jraw = Vt @ Vt.T
        np.fill_diagonal(Jraw, 0)
    elif field != "lowrank":
        raise ValueError(f"field must be 'lowrank' or 'dense', got {field!r}")
    N = J.N
    for r in range(sigma.shape[0]):
        s1, s2 = int(states[r, 0]), int(states[r, 1])
        sg, ur = sigma[r], u[r]
        for _ in range(n_sweeps * N):
            s1 = (s1 + GAMMA) & MASK64
            i = ((_mix_py(s1) >> 32) * N) >> 32
            si = int(sg[i])
            if Jraw is None:
                h = int(Vt[i] @ ur) - si * int(Vt[i] @ Vt[i])
            else:
                h = int(Jraw[i] @ sg.astype(np.int64))
            s2 = (s2 + GAMMA) & MASK64
            x = float(_mix_py(s2) >> 11) * _INV53
            if zero_t:
                new = 1 if h > 0 else -1 if h < 0 else (1 if x < 0.5 else -1)
            else:
                a = abs(h)
                E = float(A[a >> b] * B[a & mask]) if (a >> b) < len(A) else 0.0
                lhs = x * (1.0 + E)
                new = 1 if (lhs < 1.0 if h >= 0 else lhs < E) else -1
            if new != si:
                sg[i] = new
                ur += (new - si) * Vt[i]
        states[r, 0], states[r, 1] = np.uint64(s1), np.uint64(s2)


# ----------------------------------------------------------------------------- driver


def initial_states(
    xi: np.ndarray, replicas: int, init: str = "random", seed: int = 0, pattern: int = 0, noise: float = 0.0
) -> np.ndarray:
    """Starting spins int8 ``[R, N]``.

    ``random``: ±1 with probability ½; ``mixture``: sign(Σ_μ ξ^μ), ties (all-zero or
    cancelling entries) ±1 at random; ``pattern``: ξ^pattern where it is non-zero, ±1 at
    random elsewhere. Then each spin is flipped with probability ``noise``.
    """
    xi = np.asarray(xi)
    K, N = xi.shape
    rng = np.random.default_rng(seed)
    coin = np.where(rng.random((replicas, N)) < 0.5, 1, -1).astype(np.int8)
    if init == "random":
        s = coin
    elif init == "mixture":
        tot = np.sign(xi.astype(np.int64).sum(axis=0)).astype(np.int8)
        s = np.where(tot != 0, tot[None, :], coin).astype(np.int8)
    elif init == "pattern":
        if not 0 <= pattern < K:
            raise ValueError(f"pattern index {pattern} out of range 0..{K - 1}")
        s = np.where(xi[pattern] != 0, xi[pattern][None, :], coin).astype(np.int8)
    else:
        raise ValueError(f"unknown initial state {init!r}; valid: {', '.join(INITS)}")
    if noise > 0:
        s = np.where(rng.random((replicas, N)) < noise, -s, s).astype(np.int8)
    return np.ascontiguousarray(s)


@dataclass
class Observables:
    """Per-replica observables of one configuration (arrays ``[R, ...]``)."""

    m: np.ndarray  # Mattis magnetisations [R, K]
    energy: np.ndarray  # energy per spin [R]
    loss: np.ndarray  # squared loss per pattern [R, K]
    n: np.ndarray | None = None  # example overlaps [R, K, M] (None without examples)


class Glauber:
    """Heat-bath dynamics of R independent replicas on couplings ``J``.

    ``beta`` may be ``math.inf`` (zero temperature). The state of replica r is its packed
    array ``rows[r]`` (coupling rows and spins, see the module docstring), its integer
    overlaps ``u[r]`` and its two random streams ``states[r]``; ``sigma`` is a view.
    """

    def __init__(self, J: Couplings, beta: float, sigma: np.ndarray, seed: int = 0) -> None:
        if not (beta > 0):
            raise ValueError(f"beta must be > 0 (math.inf for zero temperature), got {beta}")
        self.J = J
        self.beta = float(beta)
        sigma = np.asarray(sigma)
        if sigma.ndim != 2 or sigma.shape[1] != J.N:
            raise ValueError(f"sigma must be [R, {J.N}], got {sigma.shape}")
        R, P = sigma.shape[0], J.P
        W = -(-(P + 1) // 8) * 8  # row width: coupling rows, the spin, padding to 8 entries
        self.rows = np.zeros((R, J.N, W), dtype=J.Vt.dtype)
        self.rows[:, :, :P] = J.Vt[None]
        self.rows[:, :, P] = sigma
        self.u = J.int_overlaps(sigma)
        st = np.random.SeedSequence([seed, 0x486F70]).generate_state(2 * R, dtype=np.uint64)
        self.states = np.ascontiguousarray(st.reshape(R, 2))
        self.tables = exp_tables(self.beta, J.c)
        self.sweeps_done = 0

    @property
    def sigma(self) -> np.ndarray:
        """The spins ``[R, N]`` (a view into the packed state)."""
        return self.rows[:, :, self.J.P]

    @property
    def replicas(self) -> int:
        return int(self.rows.shape[0])

    def sweep(self, n: int = 1, parallel: bool = True) -> None:
        """``n`` sweeps (N updates each) of every replica, compiled (replicas in parallel)."""
        if not HAVE_NUMBA:  # pragma: no cover
            return self.sweep_reference(n)
        A, B, b = self.tables
        # A parallel region costs a thread hand-off; not worth it for a few thousand updates.
        big = self.replicas * int(n) * self.J.N >= PARALLEL_MIN_UPDATES
        fn = _run if parallel and self.replicas > 1 and big else _run_serial
        fn(self.rows, self.J.P, self.u, self.states, int(n) * self.J.N, math.isinf(self.beta), A, B, b)
        self.sweeps_done += n

    def updates(self, n: int) -> None:
        """``n`` single-spin updates of every replica (a sweep is N of them), compiled, serial."""
        A, B, b = self.tables
        _run_serial(self.rows, self.J.P, self.u, self.states, int(n), math.isinf(self.beta), A, B, b)

    def sweep_reference(self, n: int = 1, field: str = "lowrank") -> None:
        """The same sweeps in plain Python (see `sweep_reference`)."""
        sigma = np.ascontiguousarray(self.sigma)
        sweep_reference(self.J, self.beta, sigma, self.u, self.states, n, field)
        self.rows[:, :, self.J.P] = sigma
        self.sweeps_done += n

    def energy(self) -> np.ndarray:
        """Energy per spin of each replica from the overlaps: −(c/2N)(Σ_p u_p² − Σ_pi V_pi²)."""
        u = self.u.astype(np.float64)
        return -0.5 * self.J.c * ((u * u).sum(axis=1) - float(self.J.diag.sum())) / self.J.N

    def observe(self, xi: np.ndarray, eta: np.ndarray | None = None) -> Observables:
        """Mattis magnetisations, energy per spin, squared loss per pattern (and example overlaps)."""
        return observe(self.sigma, xi, self.energy(), eta)


def observe(sigma: np.ndarray, xi: np.ndarray, energy: np.ndarray, eta: np.ndarray | None = None) -> Observables:
    """`Observables` of spins ``sigma`` [R, N] against patterns ``xi`` [K, N].

    L_μ = (1/2N) Σ_i (ξ_i^μ)² (ξ_i^μ − σ_i)² is computed from its definition (the identity
    L_μ = (1 − d_μ) − m_μ, d_μ the empirical dilution, is checked by the tests).
    """
    sigma = np.ascontiguousarray(sigma, dtype=np.int8)
    xi = np.ascontiguousarray(xi, dtype=np.int8)
    N = xi.shape[1]
    if HAVE_NUMBA:
        dot, sq = _measure(sigma, xi)
    else:  # pragma: no cover
        s, x = sigma.astype(np.int64), xi.astype(np.int64)
        dot = s @ x.T
        sq = np.einsum("kn,rkn->rk", x * x, (x[None] - s[:, None]) ** 2)
    m = dot / N
    loss = 0.5 * sq / N
    n = None
    if eta is not None:
        K, M, _ = eta.shape
        rows = np.ascontiguousarray(eta.reshape(K * M, N), dtype=np.int8)
        dn = _measure(sigma, rows)[0] if HAVE_NUMBA else sigma.astype(np.int64) @ rows.T.astype(np.int64)
        n = (dn / N).reshape(-1, K, M)
    return Observables(m, np.asarray(energy, dtype=np.float64), loss, n)


def set_threads(n: int) -> int:
    """Use ``n`` numba threads (0: all); returns the previous count."""
    if not HAVE_NUMBA:  # pragma: no cover
        return 1
    old = numba.get_num_threads()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS if n <= 0 else min(n, numba.config.NUMBA_NUM_THREADS))
    return old
