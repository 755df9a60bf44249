"""Multitasking Hebbian network: Monte Carlo against theory (REFERENCES §4).

    python benchmarks/hopfield_theory.py [--N 20000] [--quick]

1. Sorted |m| from Glauber Monte Carlo (K = 3, storing, N spins, 4 replicas, averages over
   the second half of the sweeps) against the mean-field solution reached from the same
   initial overlaps, at several (d, T) in the hierarchical and the parallel regime; and at
   low T against the hierarchical amplitudes (1 − d) d^{k−1} for d <= 0.5 (cued with
   pattern 1, its zeros random).
2. Supervised vs unsupervised couplings on the same examples (K = 3, M = 20), r in
   {0.3, 0.5, 0.8}: sorted |m| of both protocols and the mean-field solution with example noise.
3. Capacity at fixed N: how many patterns have |m_k| above 4/√N (cued with pattern 1, T = 0.02),
   as K grows, for two N, against the prediction from the amplitudes
   (1 + log((1 − d)√N/4)/log(1/d), i.e. K ~ log N).
Writes results/hopfield_theory.{json,md}.
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
from bioplaus.hopfield import mc, theory  # noqa: E402
from neuro_data import make_pattern_set  # noqa: E402


def relax(ps, rule: str, T: float, init: str, sweeps: int, replicas: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001
    """(MC sorted |m| mean over replicas and the second half, per-replica, MF from replica 0's start)."""
    J = C.build(ps, rule)
    s0 = mc.initial_states(ps.xi, replicas, init, seed=seed)
    beta = math.inf if T == 0 else 1.0 / T
    g = mc.Glauber(J, beta, s0, seed=seed)
    ex = rule != "storing"
    gr = theory.grid(ps.K, ps.d, ps.r if ex else None, ps.M if ex else None)
    n0 = (s0[0].astype(float) @ (ps.eta_mean if ex else ps.xi).T.astype(float)) / ps.N
    mf = theory.solve(beta, n0, gr, tol=1e-10, max_iter=20000).m_sorted
    g.sweep(sweeps // 2)
    acc = []
    for _ in range(sweeps // 2 // 2):
        g.sweep(2)
        acc.append(np.sort(np.abs(g.observe(ps.xi).m), axis=1)[:, ::-1])
    per = np.mean(acc, axis=0)
    return per.mean(axis=0), per, mf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--N", type=int, default=20000)
    ap.add_argument("--sweeps", type=int, default=400)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--capacity-N", type=int, nargs="+", default=[2000, 50000])
    a = ap.parse_args()
    t_start = time.perf_counter()
    load = os.getloadavg()
    N, sweeps = a.N, (100 if a.quick else a.sweeps)
    rows, rows_amp, rows_ex, rows_cap = [], [], [], []

    # 1a. MC vs mean field, both regimes (random start).
    points = [("hierarchical", 0.5, 0.1), ("hierarchical", 0.6, 0.2), ("hierarchical", 0.4, 0.05),
              ("parallel", 0.8, 0.3), ("parallel", 0.9, 0.3), ("parallel", 0.8, 0.5), ("parallel", 0.9, 0.5)]
    for regime, d, T in points:
        ps = make_pattern_set(N, 3, d, seed=1)
        m, per, mf = relax(ps, "storing", T, "random", sweeps)
        ph = theory.phase(d, T, 3)["phase"]
        rows.append({"regime": regime, "theory phase": ph, "d": d, "T": T, "MC |m| sorted": np.round(m, 4).tolist(),
                     "MF |m| sorted": np.round(mf, 4).tolist(), "max |MC - MF|": float(np.abs(m - mf).max()),
                     "replica spread": float((per.max(0) - per.min(0)).max())})
        print(rows[-1], flush=True)

    # 1b. Low T against (1 - d) d^(k-1), cued with pattern 1.
    for d, T in [(0.2, 0.01), (0.3, 0.02), (0.4, 0.05), (0.5, 0.05)]:
        ps = make_pattern_set(N, 3, d, seed=2)
        m, per, mf = relax(ps, "storing", T, "pattern", sweeps)
        amp = theory.hierarchical_amplitudes(d, 3)
        rows_amp.append({"d": d, "T": T, "MC |m| sorted": np.round(m, 4).tolist(), "(1-d) d^(k-1)": np.round(amp, 4).tolist(),
                         "MF |m| sorted": np.round(mf, 4).tolist(), "max |MC - amp|": float(np.abs(m - amp).max()),
                         "max |MC - MF|": float(np.abs(m - mf).max())})
        print(rows_amp[-1], flush=True)

    # 2. Supervised vs unsupervised on the same examples.
    for r in (0.3, 0.5, 0.8):
        ps = make_pattern_set(N, 3, 0.5, M=20, r=r, seed=3)
        ms, _, mf = relax(ps, "supervised", 0.1, "random", sweeps)
        mu, _, _ = relax(ps, "unsupervised", 0.1, "random", sweeps)
        rows_ex.append({"r": r, "rho": round(ps.rho, 4), "supervised": np.round(ms, 4).tolist(), "unsupervised": np.round(mu, 4).tolist(),
                        "MF": np.round(mf, 4).tolist(), "max |sup - unsup|": float(np.abs(ms - mu).max()),
                        "max |sup - MF|": float(np.abs(ms - mf).max())})
        print(rows_ex[-1], flush=True)

    # 3. Capacity: patterns retrieved at once as K grows, fixed N.
    d = 0.5
    for Nc in a.capacity_N:
        thr = 4.0 / math.sqrt(Nc)
        for K in (2, 4, 6, 8, 10, 12):
            ps = make_pattern_set(Nc, K, d, seed=4)
            m, _, _ = relax(ps, "storing", 0.02, "pattern", 60 if a.quick else 200)
            amp = theory.hierarchical_amplitudes(d, K)
            ok = np.abs(m - amp) < 0.3 * amp
            lead = int(np.argmin(ok)) if not ok.all() else K
            rows_cap.append({"N": Nc, "K": K, "retrieved (|m| > 4/sqrt N)": int((m > thr).sum()),
                             "hierarchical (|m_k - amp_k| < 0.3 amp_k, leading)": lead,
                             "predicted min(K, K_max)": min(K, theory.capacity(Nc, d, 4.0)),
                             "|m| sorted": np.round(m, 4).tolist()})
            print(rows_cap[-1], flush=True)

    seconds = time.perf_counter() - t_start
    text = "\n\n".join([
        f"# Hopfield multitasking network: Monte Carlo vs theory (N = {N}, K = 3, {sweeps} sweeps, 4 replicas)",
        f"Load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; {seconds:.0f} s. "
        "Command: `python benchmarks/hopfield_theory.py" + (" --quick" if a.quick else "") + f" --N {N}`.",
        "## MC vs mean field (random start; MF from replica 0's initial overlaps)",
        table(rows, ["regime", "theory phase", "d", "T", "MC |m| sorted", "MF |m| sorted", "max |MC - MF|", "replica spread"]),
        "## Low T vs (1 - d) d^(k-1) (cued with pattern 1)",
        table(rows_amp, ["d", "T", "MC |m| sorted", "(1-d) d^(k-1)", "MF |m| sorted", "max |MC - amp|", "max |MC - MF|"]),
        "## Supervised vs unsupervised (K = 3, M = 20, d = 0.5, T = 0.1, same examples)",
        table(rows_ex, ["r", "rho", "supervised", "unsupervised", "MF", "max |sup - unsup|", "max |sup - MF|"]),
        "## Capacity (d = 0.5, T = 0.02, cued with pattern 1)",
        table(rows_cap, ["N", "K", "retrieved (|m| > 4/sqrt N)", "hierarchical (|m_k - amp_k| < 0.3 amp_k, leading)",
                         "predicted min(K, K_max)", "|m| sorted"]),
    ])
    save("hopfield_theory", {"N": N, "sweeps": sweeps, "load": load, "seconds": seconds, "mc_vs_mf": rows,
                             "amplitudes": rows_amp, "examples": rows_ex, "capacity": rows_cap}, text)


if __name__ == "__main__":
    main()
