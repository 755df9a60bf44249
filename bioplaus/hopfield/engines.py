"""The dynamics a ``hopfield`` run relaxes under (``[hopfield] backend``), one object each.

An engine checks its part of the config (`Engine.check`), declares the metrics it adds
(`Engine.metrics`), fails at build time when it cannot run (`Engine.prepare`), and runs:
``mc`` and ``rate`` relax one set of patterns at a time (`Engine.relax`; a single run or a
scan repeats it, see `bioplaus.experiments.hopfield`), the ``spiking`` twin runs a whole
run itself (`Engine.run`) and has no scan. `ENGINES` is the table the kind reads; the
dynamics themselves are in `bioplaus.hopfield.mc`, `theory` and `spiking`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from bioplaus.config import check_choice
from bioplaus.errors import ConfigError
from bioplaus.metrics import Metric
from bioplaus.resources import check_bytes

MAX_STATE_BYTES = 4 << 30  # packed replica state (replicas x N x row width)


def beta_of(T: float) -> float:
    """β = 1/T; ∞ at T = 0 (zero-temperature dynamics)."""
    return math.inf if T == 0 else 1.0 / T


class Engine:
    """Base of the hopfield engines (see the module docstring); ``exp`` is the running
    `HopfieldExperiment` (its options, patterns, run context and step logger)."""

    name: ClassVar[str] = ""
    scans: ClassVar[bool] = True  # a scan may repeat `relax` over values of d, r or (d, T)

    def check(self, o: Any) -> None:
        """ConfigError naming the field of ``[hopfield]`` (``o``) this engine cannot run."""

    def metrics(self, o: Any) -> list[Metric]:
        """Metrics this engine adds to the kind's."""
        return []

    def prepare(self, o: Any) -> None:
        """Fail before the run file exists when a dependency is missing."""

    def run(self, exp: Any) -> dict[str, float]:
        """The whole run: a single relaxation or a scan of them; returns the final metrics."""
        return exp.run_relaxations()

    def relax(self, exp: Any, ps: Any, rule: str, T: float, log: bool, bar: Any = None) -> dict[str, Any]:
        """Relax patterns ``ps`` stored by ``rule`` at temperature ``T``: averages and theory."""
        raise NotImplementedError

    def final(self, o: Any, seconds: float) -> dict[str, float]:
        """Final metrics of a single relaxation besides the magnetisations (e.g. speed)."""
        return {}


def _grid(o: Any, ps: Any, ex: bool) -> Any:
    from bioplaus.hopfield import theory

    return theory.grid(o.K, ps.d, ps.r if ex else None, ps.M if ex else None)


class MonteCarlo(Engine):
    """Glauber heat-bath Monte Carlo of ``replicas`` copies (numba); T = 0 dynamics at T = 0."""

    name = "mc"

    def check(self, o: Any) -> None:
        row = -(-(o.K * (o.M if "unsupervised" in (o.rule, *o.rules) else 1) + 1) // 8) * 8
        if o.replicas * o.N * row > MAX_STATE_BYTES:
            raise ConfigError(
                f"hopfield.replicas x N: the replica state would take {o.replicas * o.N * row / 2**30:.1f} GiB "
                f"(limit {MAX_STATE_BYTES / 2**30:.0f} GiB)"
            )

    def prepare(self, o: Any) -> None:
        from bioplaus.hopfield import mc

        if not mc.HAVE_NUMBA:  # pragma: no cover
            raise ConfigError("hopfield.backend = 'mc' needs numba (pip install numba)")

    def relax(self, exp: Any, ps: Any, rule: str, T: float, log: bool, bar: Any = None) -> dict[str, Any]:
        from bioplaus.hopfield import couplings as C
        from bioplaus.hopfield import mc, theory

        o, ctx = exp.options, exp.ctx
        beta = beta_of(T)
        ex = rule != "storing"
        eta = ps.eta if ex else None
        g = _grid(o, ps, ex)
        acc_m, acc_n, nacc = np.zeros(o.K), np.zeros(o.K), 0
        ctx.check_stop()  # each piece of the set-up takes seconds at large N or K: stop between them
        J = C.build(ps, rule)
        ctx.check_stop()
        sig0 = mc.initial_states(ps.xi, o.replicas, o.init, exp.cfg.seed, o.init_pattern, o.init_noise)
        glauber = mc.Glauber(J, beta, sig0, seed=exp.cfg.seed)
        ctx.check_stop()
        m0 = glauber.observe(ps.xi).m
        th_m = None
        if o.theory:
            # The mean-field flow from replica 0's initial overlaps (with examples: n = overlap with η̄).
            if ex:
                n0 = sig0[0].astype(np.float64) @ ps.eta_mean.T / ps.N
            else:
                n0 = m0[0]
            th_m = theory.solve(beta, n0, g, tol=1e-9, max_iter=1000 if not math.isinf(beta) else 200,
                                check=ctx.check_stop).m_sorted
        if not log and o.burn_in:  # a scan point: nothing to stream before the averages start
            for _ in range(0, o.burn_in, 50):
                ctx.check_stop()
                glauber.sweep(min(50, o.burn_in - glauber.sweeps_done))
            eta = None
        while glauber.sweeps_done < o.sweeps:
            ctx.check_stop()
            k = min(o.measure_every, o.sweeps - glauber.sweeps_done)
            glauber.sweep(k)
            ob = glauber.observe(ps.xi, eta)
            ms = np.sort(np.abs(ob.m), axis=1)[:, ::-1]
            if glauber.sweeps_done > o.burn_in:
                acc_m += ms.mean(axis=0)
                if ob.n is not None:
                    acc_n += np.abs(ob.n).mean(axis=(0, 2))
                nacc += 1
            if log:
                exp.log_step(ob.m, ob.energy, ob.loss, ob.n, th_m, bar)
        m_avg = acc_m / max(nacc, 1)
        return {"m": m_avg, "n": acc_n / max(nacc, 1), "theory": th_m, "m0": m0, "replicas_m": np.abs(ob.m), "sigma": glauber.sigma}

    def final(self, o: Any, seconds: float) -> dict[str, float]:
        return {"updates_per_s": o.replicas * o.N * o.sweeps / max(seconds, 1e-9)}


class MeanField(Engine):
    """The mean-field dynamics n ← E[η̄ tanh(β Σ η̄ n / R)], one iteration per "sweep"."""

    name = "rate"

    def relax(self, exp: Any, ps: Any, rule: str, T: float, log: bool, bar: Any = None) -> dict[str, Any]:
        from bioplaus.hopfield import mc, theory

        o, ctx = exp.options, exp.ctx
        beta = beta_of(T)
        g = _grid(o, ps, rule != "storing")
        acc_m, nacc = np.zeros(o.K), 0
        init_s = mc.initial_states(ps.xi, 1, o.init, exp.cfg.seed, o.init_pattern, o.init_noise)
        m0 = init_s[0].astype(np.float64) @ ps.xi.T.astype(np.float64) / ps.N
        n = m0 * g.R / (1 - ps.d)
        traj = []
        for it in range(1, o.sweeps + 1):
            ctx.check_stop()
            n, m = theory.rhs(n, beta, g)
            traj.append(m)
            if it > o.burn_in and it % o.measure_every == 0:
                acc_m += np.sort(np.abs(m))[::-1]
                nacc += 1
            if log and it % o.measure_every == 0:
                exp.log_step(m[None, :], None, None, None, theory_m=None, bar=bar)
        m_avg = acc_m / max(nacc, 1)
        return {"m": m_avg, "theory": m_avg, "m0": m0, "replicas_m": np.array(traj[-1])[None, :]}


def twin_bytes(N: int, steps: int) -> int:
    """Bytes the Brian2 twin holds at its peak: per step and neuron the noise draw, the
    current, the runner's padded copy and Brian2's TimedArray (float64 each) and the spike
    raster (bool), 33 B; per pair of neurons J and W (float64) and a Brian2 synapse (~60 B)."""
    return 33 * steps * N + (16 + 60) * N * N


class SpikingTwin(Engine):
    """The Brian2 LIF twin (`bioplaus.hopfield.spiking`); ``[hopfield.spiking]`` sets it up."""

    name = "spiking"
    scans = False

    def check(self, o: Any) -> None:
        sp = o.spiking
        check_choice(sp.mode, ("numpy", "runtime", "standalone"), "hopfield.spiking.mode")
        if sp.cue_pattern >= o.K:
            raise ConfigError(f"hopfield.spiking.cue_pattern: must be < K = {o.K}, got {sp.cue_pattern}")
        if sp.dt * sp.rate_on >= 1:
            raise ConfigError(f"hopfield.spiking.rate_on: at most one spike per step, need rate_on < 1/dt = {1 / sp.dt:g} Hz")
        if sp.duration / sp.dt > 1_000_000 or sp.bin < sp.dt or sp.bin > sp.duration:
            raise ConfigError("hopfield.spiking: need dt <= bin <= duration and at most 1e6 steps")
        if o.N > sp.max_neurons:
            raise ConfigError(f"hopfield.N: the spiking twin takes at most spiking.max_neurons = {sp.max_neurons}, got {o.N}")
        if o.rule != "storing" and o.M * o.K * o.N > 10**8:
            raise ConfigError("hopfield.M x K x N: too many example entries for the spiking twin")
        steps = int(round(sp.duration / sp.dt))
        check_bytes(twin_bytes(o.N, steps), "hopfield.N x spiking.duration",
                    f"the Brian2 twin of {o.N} neurons for {steps} steps of {sp.dt:g} s")

    def metrics(self, o: Any) -> list[Metric]:
        return [
            Metric("rate_*", "none", unit="Hz", panel="population rate"),
            Metric("retrieved", "max", summary=True, description="patterns whose +/- populations differ by > rate_on/4"),
        ]

    def prepare(self, o: Any) -> None:
        from bioplaus.hopfield import spiking  # noqa: F401  (fails now if Brian2 is missing)

    def run(self, exp: Any) -> dict[str, float]:
        from bioplaus.hopfield import spiking

        return spiking.run_twin(exp)


ENGINES: dict[str, Engine] = {e.name: e for e in (MonteCarlo(), MeanField(), SpikingTwin())}
