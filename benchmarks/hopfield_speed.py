"""Monte Carlo speed of the multitasking Hebbian network, measured side by side in one process.

    python benchmarks/hopfield_speed.py [--N 100000] [--repeat 7]

Spin updates per second per core of the compiled Glauber kernel (`bioplaus.hopfield.mc`)
at N spins, K = 5 patterns, storing couplings, T = 0.5 (β = 2), against a plain numpy loop
over spins (same rows, numpy draws the sites and the uniforms; the O(K) field per update as
a numpy dot, the overlaps updated on a flip), which runs on a short stretch of updates.
Also: K·M = 100 example rows (unsupervised, K = 5, M = 20), T = 0 dynamics, and R replicas
on 1 thread vs on 2 threads (numba threads; the ratio is what "replicas over the cores" gives).
Each figure is the best of ``repeat`` timings (the machine is shared); the load average is
recorded. Writes results/hopfield_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import save, table  # noqa: E402
from bioplaus.hopfield import couplings as C  # noqa: E402
from bioplaus.hopfield import mc  # noqa: E402
from neuro_data import make_pattern_set  # noqa: E402


def best_rate(g: mc.Glauber, sweeps: int, repeat: int, parallel: bool) -> float:
    g.sweep(1, parallel=parallel)  # compile / load the cache
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        g.sweep(sweeps, parallel=parallel)
        best = min(best, time.perf_counter() - t0)
    return g.replicas * sweeps * g.J.N / best


def numpy_loop_rate(J: C.Couplings, beta: float, sigma: np.ndarray, updates: int, repeat: int) -> float:
    """A plain numpy loop over spins: site and uniform from numpy, field V[:, i] · u."""
    rng = np.random.default_rng(0)
    V = J.V  # [P, N] float64
    s = sigma.astype(np.float64).copy()
    u = V @ s
    diag = J.diag.astype(np.float64)
    best = math.inf
    for _ in range(repeat):
        sites = rng.integers(0, J.N, updates)
        xs = rng.random(updates)
        t0 = time.perf_counter()
        for t in range(updates):
            i = sites[t]
            h = J.c * (V[:, i] @ u - s[i] * diag[i])
            new = 1.0 if xs[t] < 1.0 / (1.0 + math.exp(-2.0 * beta * h)) else -1.0
            if new != s[i]:
                u += (new - s[i]) * V[:, i]
                s[i] = new
        best = min(best, time.perf_counter() - t0)
    return updates / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--N", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    N, rep = a.N, a.repeat
    load0 = os.getloadavg()
    rows = []
    ps = make_pattern_set(N, 5, 0.5, seed=1)
    J = C.build(ps, "storing")
    beta = 2.0
    mc.set_threads(1)
    g1 = mc.Glauber(J, beta, mc.initial_states(ps.xi, 1, "random", seed=2), seed=3)
    fast = best_rate(g1, 5, rep, parallel=False)
    slow = numpy_loop_rate(J, beta, mc.initial_states(ps.xi, 1, "random", seed=2)[0], 20_000, 3)
    rows.append({"case": "storing K=5, T=0.5, 1 replica, 1 thread", "updates/s": fast, "per core": fast})
    rows.append({"case": "plain numpy loop over spins (same couplings)", "updates/s": slow, "per core": slow})
    g0 = mc.Glauber(J, math.inf, mc.initial_states(ps.xi, 1, "random", seed=2), seed=3)
    r0 = best_rate(g0, 5, rep, parallel=False)
    rows.append({"case": "storing K=5, T=0, 1 replica, 1 thread", "updates/s": r0, "per core": r0})
    pe = make_pattern_set(N, 5, 0.5, M=20, r=0.5, seed=1)
    Ju = C.build(pe, "unsupervised")
    gu = mc.Glauber(Ju, beta, mc.initial_states(pe.xi, 1, "random", seed=2), seed=3)
    ru = best_rate(gu, 2, rep, parallel=False)
    rows.append({"case": "unsupervised K*M=100, T=0.5, 1 replica, 1 thread", "updates/s": ru, "per core": ru})
    # Replicas: 1 thread vs 2 threads, interleaved repeats.
    R = 4
    gR = mc.Glauber(J, beta, mc.initial_states(ps.xi, R, "random", seed=2), seed=3)
    t1s, t2s = [], []
    # Equilibrate first: the cost of an update depends on how often spins flip, which falls
    # as the replicas settle, so timing the first sweeps would favour whichever ran later.
    gR.sweep(20, parallel=True)
    S = 10
    for _ in range(rep):
        for th, acc in ((1, t1s), (2, t2s)):
            mc.set_threads(th)
            t0 = time.perf_counter()
            gR.sweep(S, parallel=True)
            acc.append(time.perf_counter() - t0)
    r1, r2 = R * S * N / min(t1s), R * S * N / min(t2s)
    rows.append({"case": f"{R} replicas, 1 thread", "updates/s": r1, "per core": r1})
    rows.append({"case": f"{R} replicas, 2 threads", "updates/s": r2, "per core": r2 / 2})
    load1 = os.getloadavg()
    ratio = fast / slow
    text = "\n\n".join([
        f"# Hopfield Monte Carlo speed (N = {N}, K = 5, d = 0.5)",
        f"Load average {load0[0]:.2f} at start, {load1[0]:.2f} at end (2 cores, shared machine). "
        f"Command: `python benchmarks/hopfield_speed.py --N {N}`; best of {rep}.",
        table(rows, ["case", "updates/s", "per core"]),
        f"Compiled / numpy loop: **{ratio:.0f}x**. 2 threads / 1 thread with {R} replicas: **{r2 / r1:.2f}x**.",
    ])
    save("hopfield_speed", {"N": N, "rows": rows, "ratio_vs_numpy": ratio, "threads_ratio": r2 / r1,
                            "load_start": load0, "load_end": load1}, text)


if __name__ == "__main__":
    main()
