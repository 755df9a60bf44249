"""Experiment kind ``hopfield``: the multitasking Hebbian network (REFERENCES §4).

No gradients, no classes, no epochs: K diluted ternary patterns (or M noisy examples of
each) are stored in Hebbian couplings (``rule``: storing | supervised | unsupervised), and
the network relaxes under a ``backend`` (an engine of `bioplaus.hopfield.engines.ENGINES`):

- ``mc``: Glauber heat-bath Monte Carlo of ``replicas`` independent copies (numba, O(P)
  per spin update, replicas spread over the cores), T = 0 dynamics for ``T = 0``;
- ``rate``: the mean-field dynamics n ← E[η̄ tanh(β Σ η̄ n / R)] (exact averages over the
  entry configurations), one iteration per "sweep";
- ``spiking``: a Brian2 network of LIF neurons whose synapses carry the couplings
  (`bioplaus.hopfield.spiking`).

Streamed per measurement (every ``measure_every`` sweeps): the sorted |m| (mean over
replicas), the Mattis magnetisations per replica (trace ``hopfield.m``), the energy per
spin, the squared loss per pattern and, with examples, the mean example overlap per
pattern. The mean-field theory from the same initial overlaps is written beside
(``/hopfield/theory_m``) and the distance to it is a metric. A ``scan`` repeats the run
over ``values`` of d, r (for each of ``rules``) or a (d, T) grid (``phase``), writing
``/hopfield/scan/*`` with theory curves; registered figures draw all of it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bioplaus.config import ExperimentConfig, bounded, check_choice
from bioplaus.errors import ConfigError
from bioplaus.experiments.base import Experiment
from bioplaus.hopfield.engines import ENGINES, beta_of
from bioplaus.metrics import Metric
from bioplaus.registry import DATASETS, register_experiment, register_figure
from bioplaus.resources import check_bytes

RULES = ("storing", "supervised", "unsupervised")
INITS = ("random", "mixture", "pattern")
SCANS = ("none", "d", "r", "phase")
MAX_N = 50_000_000
MAX_K = 64
MAX_M = 1000
MAX_SCAN = 400


def pattern_bytes(N: int, K: int, M: int = 0, per_example: bool = False) -> int:
    """Bytes a relaxation holds at its peak for K patterns (and K·M examples) of N neurons.

    Drawing an int8 entry takes a float64 uniform and two int64 `np.where` results (25 B);
    the couplings keep P rows of N as float64, their transpose and two int64 copies (32 B),
    P = K, or K·M for the unsupervised rule (one row per example); the mean-field grid holds
    at most max(MAX_GRID, its samples) sites of K float64 pairs.
    """
    from bioplaus.hopfield.theory import MAX_GRID, SAMPLES

    rows = K * M if per_example and M else K
    return 25 * K * N * (1 + M) + 32 * rows * N + 16 * K * max(MAX_GRID, SAMPLES)


@dataclass
class SpikingTwinConfig:
    """``[hopfield.spiking]``: the Brian2 LIF twin (see `bioplaus.hopfield.spiking`)."""

    duration: float = bounded(0.8, gt=0, le=100.0)  # s of simulated time
    dt: float = bounded(1e-3, gt=0, le=1e-2)  # s
    tau: float = bounded(10e-3, gt=0)  # membrane time constant (s)
    threshold: float = bounded(1.0, gt=0)  # v_th (reset to 0), dimensionless membrane
    rate_on: float = bounded(80.0, gt=0)  # Hz of a neuron whose field is h = 1 (σ = +1)
    noise: float = bounded(0.3, ge=0)  # current noise per step, in units of (I_on - rheobase)
    cue: float = bounded(0.5, ge=0)  # drive towards ξ^cue_pattern during cue_time, same units
    cue_pattern: int = bounded(0, ge=0)
    cue_time: float = bounded(0.1, ge=0)  # s
    bin: float = bounded(0.02, gt=0)  # s, population rate bins
    mode: str = "numpy"  # Brian2 code generation: numpy | runtime | standalone
    max_neurons: int = bounded(4000, ge=2, le=100_000)


@dataclass
class HopfieldConfig:
    """``[hopfield]``: patterns, couplings, dynamics, measurement, scan."""

    patterns: str = "diluted_ternary"  # pattern generator (datasets registry)
    N: int = bounded(10000, ge=2, le=MAX_N)
    K: int = bounded(3, ge=1, le=MAX_K)
    d: float = bounded(0.5, ge=0, lt=1)  # dilution P(ξ = 0)
    rule: str = "storing"  # storing | supervised | unsupervised
    M: int = bounded(20, ge=1, le=MAX_M)  # examples per pattern (supervised, unsupervised)
    r: float = bounded(0.5, ge=0, le=1)  # example quality
    backend: str = "mc"  # mc | rate | spiking
    T: float = bounded(0.1, ge=0, le=100)  # temperature; 0 = zero-temperature dynamics
    sweeps: int = bounded(200, ge=1, le=10_000_000)
    burn_in: int = bounded(100, ge=0)  # sweeps left out of the averages
    measure_every: int = bounded(1, ge=1)
    replicas: int = bounded(4, ge=1, le=4096)
    threads: int = bounded(0, ge=0, le=256)  # numba threads; 0 = all cores
    init: str = "random"  # random | mixture | pattern
    init_pattern: int = bounded(0, ge=0)
    init_noise: float = bounded(0.0, ge=0, le=1)
    theory: bool = True  # mean-field solution from the same initial overlaps
    scan: str = "none"  # none | d | r | phase
    values: list[float] = bounded(default_factory=list, ge=0, le=1, max_items=MAX_SCAN)  # d or r values
    T_values: list[float] = bounded(default_factory=list, gt=0, le=100, max_items=MAX_SCAN)  # phase scan
    rules: list[str] = field(default_factory=list)  # r scan: protocols compared (default [rule])
    map_points: int = bounded(20, ge=2, le=200)  # phase scan: theory map resolution (T points; d gets 5 more)
    spiking: SpikingTwinConfig = field(default_factory=SpikingTwinConfig)


@register_experiment("hopfield")
class HopfieldExperiment(Experiment):
    """Multitasking Hebbian network: Monte Carlo / mean-field / spiking, theory alongside."""

    Config = HopfieldConfig
    figures = ("learning_curves", "hopfield_magnetisations", "hopfield_scan_d", "hopfield_scan_r", "hopfield_phase",
               "hopfield_spiking_rates")

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        """A small network retrieving one pattern (bioplaus.conformance): a second on one core."""
        return {"hopfield": {"N": 400, "K": 2, "d": 0.3, "T": 0.05, "sweeps": 10, "burn_in": 4,
                             "replicas": 1, "threads": 1, "init": "pattern"}}

    @classmethod
    def validate(cls, cfg: ExperimentConfig) -> None:
        o = cfg.section("hopfield")
        check_choice(o.rule, RULES, "hopfield.rule")
        check_choice(o.backend, ENGINES, "hopfield.backend")
        check_choice(o.init, INITS, "hopfield.init")
        check_choice(o.scan, SCANS, "hopfield.scan")
        loader = DATASETS.get(o.patterns, "hopfield.patterns")
        if not getattr(loader, "generates_patterns", False):
            raise ConfigError(f"hopfield.patterns: {o.patterns!r} is a labelled data set, not a pattern generator")
        for i, rl in enumerate(o.rules):
            check_choice(rl, RULES, f"hopfield.rules[{i}]")
        if o.init == "pattern" and o.init_pattern >= o.K:
            raise ConfigError(f"hopfield.init_pattern: must be < K = {o.K}, got {o.init_pattern}")
        if o.burn_in >= o.sweeps:
            raise ConfigError(f"hopfield.burn_in: must be < sweeps = {o.sweeps}, got {o.burn_in}")
        if o.measure_every > o.sweeps:
            raise ConfigError(f"hopfield.measure_every: must be <= sweeps = {o.sweeps}, got {o.measure_every}")
        if o.scan in ("d", "r", "phase") and not o.values:
            raise ConfigError(f"hopfield.values: scan = {o.scan!r} needs a non-empty list of values")
        if o.scan in ("d", "phase") and any(v >= 1 for v in o.values):
            raise ConfigError("hopfield.values: a dilution d must be < 1")
        if o.scan == "phase" and not o.T_values:
            raise ConfigError("hopfield.T_values: scan = 'phase' needs a non-empty list of temperatures")
        if o.scan == "phase" and len(o.values) * len(o.T_values) > MAX_SCAN:
            raise ConfigError(f"hopfield.values x T_values: at most {MAX_SCAN} grid points")
        engine = ENGINES[o.backend]
        if o.scan != "none" and not engine.scans:
            raise ConfigError(f"hopfield.scan: not available with backend = {o.backend!r}")
        ex = o.rule != "storing" or any(r != "storing" for r in o.rules) or o.scan == "r"
        check_bytes(pattern_bytes(o.N, o.K, o.M if ex else 0, o.rule == "unsupervised" or "unsupervised" in o.rules),
                    "hopfield.N x K" + (" x M" if ex else ""),
                    f"{o.K} patterns of {o.N} neurons" + (f" with {o.M} examples each" if ex else ""))
        engine.check(o)

    @classmethod
    def declared_metrics(cls, cfg: ExperimentConfig) -> list[Metric]:
        o = cfg.section("hopfield")
        out = [
            Metric("m_sorted_1", "max", headline=True, progress=True, summary=True, panel="sorted |m|",
                   description="largest |Mattis magnetisation|, mean over replicas"),
            Metric("m_sorted_*", "none", panel="sorted |m|", summary=True),
            Metric("energy", "min", unit="per spin", panel="energy", progress=True),
            Metric("loss_*", "min", panel="squared loss per pattern"),
            Metric("theory_gap", "min", summary=True, panel="theory",
                   description="max_k | <|m|_k> (after burn-in) - mean-field |m|_k |"),
        ]
        if o.rule != "storing":
            out.append(Metric("n_*", "none", panel="example overlap"))
        return out + ENGINES[o.backend].metrics(o)

    def meta(self) -> dict[str, Any]:
        o = self.options
        ps = self.patterns
        out: dict[str, Any] = {"N": o.N, "K": o.K, "d": o.d, "rule": o.rule, "backend": o.backend, "T": o.T}
        if ps.rho is not None:
            out["rho"] = float(ps.rho)
            out["M"], out["r"] = o.M, o.r
        return out

    # -- build -----------------------------------------------------------------------
    def _make_patterns(self, d: float | None = None, r: float | None = None, with_examples: bool | None = None) -> Any:
        o = self.options
        ex = (o.rule != "storing" or any(x != "storing" for x in o.rules)) if with_examples is None else with_examples
        loader = DATASETS.get(o.patterns, "hopfield.patterns")
        return loader(N=o.N, K=o.K, d=o.d if d is None else d, M=o.M if ex else 0, r=o.r if r is None else r, seed=self.cfg.seed)

    def build(self) -> None:
        o = self.options
        try:
            self.patterns = self._make_patterns()
        except ValueError as e:
            raise ConfigError(f"hopfield.patterns: {e}") from None
        self.engine = ENGINES[o.backend]
        self.engine.prepare(o)

    # -- streaming -----------------------------------------------------------------
    def log_step(self, m: np.ndarray, energy: Any, loss: Any, n: Any, theory_m: Any, bar: Any) -> None:
        """Stream one measurement: sorted |m| (mean over replicas), energy, losses, overlaps."""
        o, ctx = self.options, self.ctx
        ctx.step += o.measure_every
        ms = np.sort(np.abs(m), axis=1)[:, ::-1].mean(axis=0)
        vals: dict[str, float] = {f"m_sorted_{k + 1}": float(ms[k]) for k in range(o.K)}
        if energy is not None:
            vals["energy"] = float(np.mean(energy))
        if loss is not None:
            vals.update({f"loss_{k + 1}": float(v) for k, v in enumerate(loss.mean(axis=0))})
        if n is not None:
            vals.update({f"n_{k + 1}": float(v) for k, v in enumerate(np.abs(n).mean(axis=(0, 2)))})
        if theory_m is not None:
            vals["theory_gap"] = float(np.abs(ms - theory_m).max())
        ctx.log(**vals)
        ctx.log_trace("hopfield.m", m, unit="", dt=None, every=o.measure_every, dims=("replica", "pattern"))
        if bar is not None:
            bar.update(f"sweep {ctx.step}/{o.sweeps}", vals)

    # -- run -------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        from bioplaus.hopfield import mc

        o = self.options
        old = mc.set_threads(o.threads)
        try:
            return self.engine.run(self)
        finally:
            mc.set_threads(old)

    def run_relaxations(self) -> dict[str, float]:
        """The engine's relaxation once (``scan = "none"``) or over the scan's points."""
        return self._run_single() if self.options.scan == "none" else self._run_scan()

    def _run_single(self) -> dict[str, float]:
        o, ctx = self.options, self.ctx
        ps = self.patterns
        bar = ctx.progress(o.sweeps // o.measure_every)
        t0 = time.perf_counter()
        res = self.engine.relax(self, ps, o.rule, o.T, log=True, bar=bar)
        bar.close()
        seconds = time.perf_counter() - t0
        final = {f"m_sorted_{k + 1}": float(v) for k, v in enumerate(res["m"])}
        if res.get("theory") is not None:
            ctx.log_array("/hopfield/theory_m", np.asarray(res["theory"]), what="mean-field |m| sorted from replica 0's initial overlaps")
            final["theory_gap"] = float(np.abs(res["m"] - res["theory"]).max())
        ctx.log_array("/hopfield/m_avg", res["m"], what="|m| sorted, mean over replicas and measurements after burn-in")
        ctx.log_array("/hopfield/m_final", res["replicas_m"], what="|m| per replica at the end")
        if o.N * o.K <= 10**7:
            ctx.log_array("/hopfield/xi", ps.xi)
        final.update(self.engine.final(o, seconds))
        bar.line("hopfield", final, seconds)
        return final

    def _run_scan(self) -> dict[str, float]:
        from bioplaus.hopfield import theory

        o, ctx = self.options, self.ctx
        if o.scan == "phase":
            points = [(d, T) for T in o.T_values for d in o.values]
            rules = [o.rule]
        else:
            points = [(v, o.T) for v in o.values]
            rules = o.rules or [o.rule]
        bar = ctx.progress(len(points) * len(rules))
        mc_m = np.zeros((len(rules), len(points), o.K))
        th_m = np.full((len(rules), len(points), o.K), np.nan)
        t0 = time.perf_counter()
        for a, rule in enumerate(rules):
            for b, (v, T) in enumerate(points):
                if o.scan == "r":
                    ps = self._make_patterns(r=v, with_examples=True)
                else:
                    ps = self._make_patterns(d=v)
                res = self.engine.relax(self, ps, rule, T, log=False)
                mc_m[a, b] = res["m"]
                if res.get("theory") is not None:
                    th_m[a, b] = res["theory"]
                ctx.step += 1
                vals = {f"m_sorted_{k + 1}": float(x) for k, x in enumerate(res["m"])}
                if res.get("theory") is not None:
                    vals["theory_gap"] = float(np.abs(res["m"] - res["theory"]).max())
                ctx.log(**vals)
                bar.update(f"{o.scan} {v:.3g}" + (f" T {T:.3g}" if o.scan == "phase" else "") + f" ({rule})", vals)
        bar.close()
        ctx.log_array("/hopfield/scan/kind", o.scan)
        ctx.log_array("/hopfield/scan/values", np.array([p[0] for p in points]))
        ctx.log_array("/hopfield/scan/T", np.array([p[1] for p in points]))
        ctx.log_array("/hopfield/scan/rules", ",".join(rules))
        ctx.log_array("/hopfield/scan/mc_m", mc_m, what="[rule, point, k] |m| sorted, mean after burn-in")
        ctx.log_array("/hopfield/scan/theory_m", th_m, what="[rule, point, k] mean-field from the same initial overlaps")
        # Theory curves on a fine grid.
        if o.scan == "d":
            ds = np.linspace(0.0, max(0.95, max(o.values)), 60)
            beta = beta_of(o.T)
            sym = np.full((len(ds), o.K), np.nan)
            sym_stable = np.zeros(len(ds), dtype=bool)
            if not math.isinf(beta):
                for i, d in enumerate(ds):
                    ctx.check_stop()
                    sol = theory.symmetric(beta, theory.grid(o.K, float(d)), check=ctx.check_stop)
                    sym[i] = sol.m_sorted
                    sym_stable[i] = sol.m_sorted[0] > 1e-6 and theory.is_stable(sol.n, beta, theory.grid(o.K, float(d)))
            ctx.log_array("/hopfield/scan/curve_symmetric_stable", sym_stable.astype(np.int8))
            hie = np.array([theory.hierarchical(beta, theory.grid(o.K, d), d, check=ctx.check_stop).m_sorted if not math.isinf(beta) else theory.hierarchical_amplitudes(d, o.K) for d in ds])
            ctx.log_array("/hopfield/scan/curve_x", ds)
            ctx.log_array("/hopfield/scan/curve_symmetric", sym)
            ctx.log_array("/hopfield/scan/curve_hierarchical", hie)
            ctx.log_array("/hopfield/scan/curve_amplitudes", np.array([theory.hierarchical_amplitudes(d, o.K) for d in ds]))
        elif o.scan == "r":
            rs = np.linspace(0.05, 1.0, 20)
            beta = beta_of(o.T)
            curve = np.zeros((len(rs), o.K))
            for i, r in enumerate(rs):
                ctx.check_stop()
                g = theory.grid(o.K, o.d, float(r), o.M)
                if math.isinf(beta):
                    curve[i, 0] = theory.majority_overlap(o.d, float(r), o.M)
                else:
                    start = theory.hierarchical_amplitudes(o.d, o.K) * g.R / (1 - o.d)
                    curve[i] = theory.solve(beta, start, g, tol=1e-9, max_iter=500, check=ctx.check_stop).m_sorted
            ctx.log_array("/hopfield/scan/curve_x", rs)
            ctx.log_array("/hopfield/scan/curve_pure", curve, what="[r, k] mean field from the hierarchical amplitudes")
            ctx.log_array("/hopfield/scan/curve_snr", np.array([theory.snr_overlap(o.d, r, o.M) for r in rs]))
        else:
            ds = np.linspace(min(o.values), max(o.values), o.map_points + 5)
            Ts = np.linspace(min(o.T_values), max(o.T_values), o.map_points)
            ctx.log_array("/hopfield/scan/map", theory.phase_diagram(ds, Ts, o.K, check=ctx.check_stop), phases=",".join(theory.PHASES))
            ctx.log_array("/hopfield/scan/map_d", ds)
            ctx.log_array("/hopfield/scan/map_T", Ts)
        gaps = np.abs(mc_m - th_m)
        final = {f"m_sorted_{k + 1}": float(mc_m[0, 0, k]) for k in range(o.K)}
        if np.isfinite(gaps).any():
            final["theory_gap"] = float(np.nanmax(gaps))
        bar.line(f"scan {o.scan}", final, time.perf_counter() - t0)
        return final


# ----------------------------------------------------------------------------- figures


def _new(w: float, h: float) -> Any:
    from bioplaus.report import new_figure

    return new_figure(w, h)


@register_figure("hopfield_magnetisations", needs=("/traces/hopfield.m",))
def hopfield_magnetisations(run: Any, out_dir: Path) -> list[Path]:
    """Mattis magnetisations |m_μ| of each replica over sweeps, theory dashed."""
    from bioplaus.report import save_figure

    if "hopfield.m" not in run.traces:
        return []
    m = np.abs(run.trace("hopfield.m"))  # [records, R, K]
    info = run.trace_info("hopfield.m")
    steps = np.asarray(info.get("steps", np.arange(1, len(m) + 1)))
    if m.ndim != 3 or len(m) == 0:
        return []
    fig = _new(7, 3.8)
    ax = fig.subplots()
    R, K = m.shape[1], m.shape[2]
    for k in range(min(K, 10)):
        for r in range(min(R, 8)):
            ax.plot(steps[: len(m)], m[:, r, k], color=f"C{k}", lw=0.8, alpha=0.7, label=f"pattern {k + 1}" if r == 0 else None)
    if run.has("/hopfield/theory_m"):
        for k, v in enumerate(np.atleast_1d(run.array("/hopfield/theory_m"))[:10]):
            ax.axhline(v, color="k", ls="--", lw=0.8, label="mean field (sorted)" if k == 0 else None)
    ax.set_xlabel("sweep")
    ax.set_ylabel("|m_μ|")
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, out_dir, "hopfield_magnetisations.png")


def _scan(run: Any) -> str | None:
    if not run.has("/hopfield/scan/kind"):
        return None
    v = run.array("/hopfield/scan/kind")
    return v.decode() if isinstance(v, bytes) else str(v.item() if hasattr(v, "item") else v)


def _str(run: Any, path: str) -> str:
    v = run.array(path)
    v = v.item() if hasattr(v, "item") else v
    return v.decode() if isinstance(v, bytes) else str(v)


@register_figure("hopfield_scan_d", needs=("/hopfield/scan/kind",))
def hopfield_scan_d(run: Any, out_dir: Path) -> list[Path]:
    """Sorted |m_k| against the dilution d: Monte Carlo points, mean-field lines, (1−d)d^{k−1}."""
    from bioplaus.report import save_figure

    if _scan(run) != "d":
        return []
    x = run.array("/hopfield/scan/values")
    mcm = run.array("/hopfield/scan/mc_m")[0]
    cx = run.array("/hopfield/scan/curve_x")
    hie = run.array("/hopfield/scan/curve_hierarchical")
    sym = run.array("/hopfield/scan/curve_symmetric")
    amp = run.array("/hopfield/scan/curve_amplitudes")
    fig = _new(7, 4.2)
    ax = fig.subplots()
    K = mcm.shape[1]
    for k in range(K):
        ax.plot(cx, hie[:, k], color=f"C{k}", lw=1.2, label="mean field (from hierarchical)" if k == 0 else None)
        ax.plot(cx, amp[:, k], color=f"C{k}", lw=0.8, ls=":", label="(1-d) d^(k-1)" if k == 0 else None)
        ax.plot(x, mcm[:, k], "o", color=f"C{k}", ms=5, label=f"MC |m|_{k + 1}")
    if np.isfinite(sym).any():
        stable = run.array("/hopfield/scan/curve_symmetric_stable").astype(bool) if run.has("/hopfield/scan/curve_symmetric_stable") else np.ones(len(cx), bool)
        ax.plot(cx, np.where(stable, np.nan, sym[:, 0]), color="0.5", ls=":", lw=1.0, label="symmetric solution (unstable)")
        ax.plot(cx, np.where(stable, sym[:, 0], np.nan), color="k", ls="--", lw=1.4, label="symmetric solution (stable: parallel)")
    ax.set_xlabel("dilution d")
    ax.set_ylabel("sorted |m_k|")
    ax.legend(fontsize=7)
    return save_figure(fig, out_dir, "hopfield_scan_d.png")


@register_figure("hopfield_scan_r", needs=("/hopfield/scan/kind",))
def hopfield_scan_r(run: Any, out_dir: Path) -> list[Path]:
    """|m|_1 against example quality r for each protocol, with the mean-field and SNR lines."""
    from bioplaus.report import save_figure

    if _scan(run) != "r":
        return []
    x = run.array("/hopfield/scan/values")
    mcm = run.array("/hopfield/scan/mc_m")
    rules = _str(run, "/hopfield/scan/rules").split(",")
    fig = _new(7, 4.2)
    ax = fig.subplots()
    cx, curve = run.array("/hopfield/scan/curve_x"), np.atleast_2d(run.array("/hopfield/scan/curve_pure").T).T
    K = mcm.shape[2]
    for k in range(min(K, curve.shape[1])):
        ax.plot(cx, curve[:, k], color=f"C{k}", lw=1, label="mean field (hierarchical start)" if k == 0 else None)
    for a, rule in enumerate(rules):
        for k in range(K):
            ax.plot(x, mcm[a, :, k], "os^D"[a % 4], color=f"C{k}", mfc="none" if a else f"C{k}", ms=6 - a,
                    label=f"MC {rule}" if k == 0 else None)
    ax.plot(cx, run.array("/hopfield/scan/curve_snr"), "k:", lw=1, label="pure state, T=0: (1-d) erf(1/sqrt(2 rho))")
    ax.set_xlabel("example quality r")
    ax.set_ylabel("sorted |m_k|")
    ax.legend(fontsize=7)
    return save_figure(fig, out_dir, "hopfield_scan_r.png")


def classify(m: np.ndarray, N: int) -> str:
    """Name the state of sorted amplitudes ``m`` measured at size N (see `theory.PHASES`)."""
    noise = 4.0 / math.sqrt(N)
    k_ret = int((m > max(noise, 0.02)).sum())
    if k_ret == 0:
        return "paramagnetic"
    if k_ret == 1:
        return "pure"
    if k_ret < len(m):
        return "partial"
    return "parallel" if m[0] - m[-1] < max(0.05 * m[0], 3 * noise) else "hierarchical"


@register_figure("hopfield_phase", needs=("/hopfield/scan/kind",))
def hopfield_phase(run: Any, out_dir: Path) -> list[Path]:
    """The (d, T) map of mean-field phases with the Monte Carlo states on it."""
    from matplotlib.colors import ListedColormap

    from bioplaus.hopfield.theory import PHASES
    from bioplaus.report import save_figure

    if _scan(run) != "phase":
        return []
    mp = run.array("/hopfield/scan/map")
    md, mT = run.array("/hopfield/scan/map_d"), run.array("/hopfield/scan/map_T")
    colors = ["#f0f0f0", "#c6dbef", "#fdd0a2", "#fc8d59", "#74c476", "#b39ddb"]
    fig = _new(7, 4.8)
    ax = fig.subplots()
    ax.pcolormesh(md, mT, mp, cmap=ListedColormap(colors), vmin=-0.5, vmax=len(PHASES) - 0.5, shading="nearest")
    N = int(run.attrs.get("N", 10000))
    x, T = run.array("/hopfield/scan/values"), run.array("/hopfield/scan/T")
    mcm = run.array("/hopfield/scan/mc_m")[0]
    markers = {"paramagnetic": "x", "pure": "v", "partial": "s", "hierarchical": "o", "parallel": "D"}
    seen = set()
    for xi, Ti, m in zip(x, T, mcm):
        c = classify(m, N)
        ax.plot(xi, Ti, markers.get(c, "o"), color="k", mfc="none" if c != "parallel" else "k", ms=6,
                label=f"MC: {c}" if c not in seen else None)
        seen.add(c)
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    handles += [Patch(color=colors[i], label=f"theory: {p}") for i, p in enumerate(PHASES) if (mp == i).any()]
    ax.legend(handles=handles, fontsize=7, loc="upper left")
    ax.set_xlabel("dilution d")
    ax.set_ylabel("temperature T")
    return save_figure(fig, out_dir, "hopfield_phase.png")


@register_figure("hopfield_spiking_rates", needs=("/hopfield/spiking/rates",))
def hopfield_spiking_rates(run: Any, out_dir: Path) -> list[Path]:
    """Population rates of the Brian2 twin: one line per pattern population (and its anti-population)."""
    from bioplaus.report import save_figure

    if not run.has("/hopfield/spiking/rates"):
        return []
    rates = run.array("/hopfield/spiking/rates")  # [bins, K, 2]
    t = run.array("/hopfield/spiking/t")
    fig = _new(7, 4.0)
    ax = fig.subplots()
    for k in range(min(rates.shape[1], 10)):
        ax.plot(t, rates[:, k, 0], color=f"C{k}", lw=1.2, label=f"ξ^{k + 1} = +1 population")
        ax.plot(t, rates[:, k, 1], color=f"C{k}", lw=0.8, ls="--", label=f"ξ^{k + 1} = -1 population")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("rate (Hz)")
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, out_dir, "hopfield_spiking_rates.png")
