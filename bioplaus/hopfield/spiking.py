"""Spiking Brian2 twin of the multitasking network: LIF neurons carrying the Hebbian couplings.

Built on the generic `bioplaus.simulators.brian2_runner.Brian2Runner` (discrete-time LIF,
v ← β v + I, spike when v > θ, reset to 0, β = exp(−dt/τ); a spike reaches its targets
one step later). Neuron i stands for spin σ_i: firing is σ_i = +1, silence σ_i = −1. With
s_j = (rate of j)/ν_on the field of the binary network is h_i = Σ_j J_ij (2 s_j − 1), so
the LIF receives, per step,

    I_i = θ(1 − β) + a h_i + noise,   a = I_on − θ(1 − β),

i.e. recurrent weights W_ij = 2 a J_ij / (ν_on dt) on each spike and a constant current
θ(1 − β) − a Σ_j J_ij. θ(1 − β) is the rheobase (the smallest constant input that fires)
and I_on = θ(1 − β)/(1 − β^{1/(ν_on dt)}) the constant input that fires every
1/(ν_on dt) steps, so a neuron with field h = 1 fires at about ν_on and one with h < 0 is
silent. The transfer (reset to zero, leak) is concave, so the recurrent loop settles at
moderate rates instead of running away. Gaussian current noise (std ``noise`` · a per step)
plays the role of temperature. A cue (drive ``cue`` · a ξ^μ) during the first
``cue_time`` starts the network near one pattern.

Read-out: for each pattern μ the populations P_μ^± = {i : ξ_i^μ = ±1} (a neuron belongs to
several); their rates per bin go to the run file (``/hopfield/spiking/rates``
[bins, K, 2]) and the spiking Mattis overlap m_μ = (1/N) Σ_i ξ_i^μ (2 min(ν_i/ν_on, 1) − 1)
(ν_i over the bin) is streamed as the sorted |m| of the kind. A pattern counts as retrieved
when its two populations differ by more than ν_on/4 over the second half of the run.

The twin builds the N x N coupling matrix (`Couplings.dense`): keep N to a few thousand.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np


def lif_currents(J: np.ndarray, dt: float, tau: float, theta: float, rate_on: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(W [N, N] per spike, constant current [N], a): the mapping in the module docstring."""
    beta = math.exp(-dt / tau)
    rheo = theta * (1 - beta)
    q = rate_on * dt  # spikes per step of an active neuron
    i_on = rheo / (1 - beta ** (1 / q))
    a = i_on - rheo
    return 2 * a * J / q, rheo - a * J.sum(axis=1), a


def run_twin(exp: Any) -> dict[str, float]:
    """Run the Brian2 twin for a `HopfieldExperiment` (backend = "spiking"); stream and store rates."""
    from bioplaus.hopfield import couplings as C
    from bioplaus.simulators.brian2_runner import Brian2Runner

    o, sp, ctx = exp.options, exp.options.spiking, exp.ctx
    ps = exp.patterns
    N, K = ps.N, ps.K
    J = C.build(ps, o.rule).dense()
    W, const, a = lif_currents(J, sp.dt, sp.tau, sp.threshold, sp.rate_on)
    steps = int(round(sp.duration / sp.dt))
    rng = np.random.default_rng(exp.cfg.seed)
    cur = const[None, :] + sp.noise * a * rng.standard_normal((steps, N))
    n_cue = min(steps, int(round(sp.cue_time / sp.dt)))
    cur[:n_cue] += sp.cue * a * ps.xi[sp.cue_pattern][None, :]
    sim = Brian2Runner(dt=sp.dt, mode=sp.mode)
    sim.add_population("hopfield", N, tau=sp.tau, threshold=sp.threshold, reset="zero")
    sim.add_current_input("hopfield", cur)
    sim.connect("hopfield", "hopfield", W)
    sim.record("hopfield", spikes=True, rate=True)
    bar = ctx.progress(1)
    t0 = time.perf_counter()
    res = sim.run(steps)
    bar.update("brian2", {})
    bar.close()
    ras = res.spike_raster("hopfield")  # [steps, N] bool
    per_bin = max(1, int(round(sp.bin / sp.dt)))
    nb = steps // per_bin
    counts = ras[: nb * per_bin].reshape(nb, per_bin, N).sum(axis=1) / (per_bin * sp.dt)  # Hz [bins, N]
    plus = (ps.xi == 1).astype(np.float64)
    minus = (ps.xi == -1).astype(np.float64)
    rates = np.stack([counts @ plus.T / np.maximum(plus.sum(1), 1), counts @ minus.T / np.maximum(minus.sum(1), 1)], axis=-1)
    s = np.clip(counts / sp.rate_on, 0, 1)
    m = (2 * s - 1) @ ps.xi.T.astype(np.float64) / N  # [bins, K]
    for b in range(nb):
        ctx.step = (b + 1) * per_bin
        ms = np.sort(np.abs(m[b]))[::-1]
        vals = {f"m_sorted_{k + 1}": float(ms[k]) for k in range(K)}
        vals.update({f"rate_{k + 1}_plus": float(rates[b, k, 0]) for k in range(K)})
        vals.update({f"rate_{k + 1}_minus": float(rates[b, k, 1]) for k in range(K)})
        vals["rate_mean"] = float(counts[b].mean())
        ctx.log(**vals)
        ctx.log_trace("hopfield.m", m[b][None, :], unit="", dt=None, every=per_bin, dims=("replica", "pattern"))
    late = rates[nb // 2:].mean(axis=0)  # [K, 2]
    gap = np.abs(late[:, 0] - late[:, 1])
    retrieved = int((gap > sp.rate_on / 4).sum())
    ctx.log_array("/hopfield/spiking/rates", rates, unit="Hz", dims="bin,pattern,sign(+,-)")
    ctx.log_array("/hopfield/spiking/t", (np.arange(nb) + 0.5) * per_bin * sp.dt, unit="s")
    ctx.log_array("/hopfield/spiking/neuron_rates", counts[nb // 2:].mean(axis=0), unit="Hz")
    ctx.log_array("/hopfield/spiking/late_rates", late, unit="Hz", dims="pattern,sign(+,-)")
    ctx.log_array("/hopfield/xi", ps.xi)
    ms_late = np.sort(np.abs(m[nb // 2:].mean(axis=0)))[::-1]
    final = {f"m_sorted_{k + 1}": float(ms_late[k]) for k in range(K)}
    final.update({"retrieved": float(retrieved), "rate_mean": float(counts[nb // 2:].mean()),
                  "wall_build_s": res.wall_build, "wall_run_s": res.wall_run})
    bar.line("spiking twin", final, time.perf_counter() - t0)
    return final
