"""The multitasking Hebbian network (kind ``hopfield``): data, couplings, dynamics, theory, runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import bioplaus
from bioplaus.cli import main
from bioplaus.config import load_config
from bioplaus.errors import ConfigError, DataError
from bioplaus.hopfield import couplings as C
from bioplaus.hopfield import mc, theory
from neuro_data import dataset_entropy, diluted_patterns, make_examples, make_pattern_set

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- data


def test_patterns_seeded_diluted_ternary() -> None:
    a, b, c = diluted_patterns(20000, 4, 0.3, seed=5), diluted_patterns(20000, 4, 0.3, seed=5), diluted_patterns(20000, 4, 0.3, seed=6)
    assert a.dtype == np.int8 and a.shape == (4, 20000)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert set(np.unique(a)) == {-1, 0, 1}
    tol = 4 * math.sqrt(0.3 * 0.7 / a.size)
    assert abs((a == 0).mean() - 0.3) < tol
    assert abs((a == 1).mean() - 0.35) < tol


def test_examples_share_zeros_and_have_quality_r() -> None:
    xi = diluted_patterns(5000, 3, 0.4, seed=1)
    eta = make_examples(xi, 30, 0.6, seed=2)
    assert eta.shape == (3, 30, 5000)
    assert np.array_equal(eta == 0, np.broadcast_to(xi[:, None, :] == 0, eta.shape))  # same zeros
    nz = np.broadcast_to(xi[:, None, :] != 0, eta.shape)
    agree = (eta == xi[:, None, :])[nz].mean()
    assert abs(agree - 0.8) < 4 * math.sqrt(0.16 / nz.sum())  # P(χ = +1) = (1 + r)/2
    ps = make_pattern_set(100, 2, 0.5, M=10, r=0.5, seed=0)
    assert ps.rho == pytest.approx((1 - 0.25) / (10 * 0.25)) == dataset_entropy(0.5, 10)
    # Patterns do not depend on M or r (two independent streams of the seed).
    assert np.array_equal(ps.xi, make_pattern_set(100, 2, 0.5, seed=0).xi)


def test_pattern_generator_in_datasets_registry_refuses_gradient_use() -> None:
    from bioplaus.registry import DATASETS

    load = DATASETS.get("diluted_ternary")
    assert load(N=50, K=2, d=0.5, seed=1).xi.shape == (2, 50)
    cfg = load_config({"data": {"dataset": "diluted_ternary"}, "train": {"epochs": 1}})
    from bioplaus.data import load_data

    with pytest.raises(DataError, match="generates patterns"):
        load_data(cfg)


# ----------------------------------------------------------------------------- couplings


def test_couplings_equal_the_explicit_formulas() -> None:
    N, K, M, d, r = 40, 3, 5, 0.3, 0.6
    ps = make_pattern_set(N, K, d, M=M, r=r, seed=3)
    Rd = (1 - d) * (r * r + (1 - r * r) / M)
    eta = ps.eta.astype(float)
    J = np.zeros((N, N))
    for mu in range(K):  # supervised: (1/(N R_d)) Σ_μ η̄_i η̄_j, η̄ the mean of the examples
        bar = eta[mu].mean(axis=0)
        for i in range(N):
            for j in range(N):
                if i != j:
                    J[i, j] += bar[i] * bar[j] / (N * Rd)
    assert np.allclose(C.build(ps, "supervised").dense(), J, rtol=1e-12, atol=1e-15)
    Ju = np.einsum("kai,kaj->ij", eta, eta) / (N * M * Rd)
    np.fill_diagonal(Ju, 0)
    assert np.allclose(C.build(ps, "unsupervised").dense(), Ju, rtol=1e-12, atol=1e-15)
    xi = ps.xi.astype(float)
    Js = xi.T @ xi / (N * (1 - d))
    np.fill_diagonal(Js, 0)
    assert np.allclose(C.build(ps, "storing").dense(), Js, rtol=1e-12)
    # Fields and energy from the rows equal the dense ones.
    s = mc.initial_states(ps.xi, 2, "random", seed=1)
    for rule in C.RULES:
        Jc = C.build(ps, rule)
        D = Jc.dense()
        assert np.allclose(Jc.fields(s), s @ D.T)
        assert np.allclose(Jc.energy(s), -0.5 * np.einsum("ri,ij,rj->r", s.astype(float), D, s.astype(float)))


@pytest.mark.parametrize("rule", C.RULES)
@pytest.mark.parametrize("T", [0.5, 0.05, 0.0])
def test_lowrank_update_gives_the_dense_field_trajectory(rule: str, T: float) -> None:
    """Compiled O(P) kernel == Python O(P) reference == Python O(N) dense field, same RNG streams."""
    ps = make_pattern_set(50, 3, 0.4, M=4, r=0.7, seed=2)
    J = C.build(ps, rule)
    beta = math.inf if T == 0 else 1 / T
    s0 = mc.initial_states(ps.xi, 3, "random", seed=4)
    fast, low, dense = (mc.Glauber(J, beta, s0, seed=9) for _ in range(3))
    fast.sweep(2)
    fast.sweep(3)  # across calls: the look-ahead is rewound, the stream goes on
    low.sweep_reference(5)
    dense.sweep_reference(5, field="dense")
    assert np.array_equal(fast.sigma, low.sigma) and np.array_equal(low.sigma, dense.sigma)
    assert np.array_equal(fast.states, low.states)
    assert np.array_equal(fast.u, J.int_overlaps(fast.sigma))  # overlaps kept exact
    assert not np.array_equal(fast.sigma, s0)  # it did move


def test_replicas_do_not_depend_on_threads() -> None:
    ps = make_pattern_set(300, 3, 0.5, seed=1)
    J = C.build(ps, "storing")
    s0 = mc.initial_states(ps.xi, 4, "random", seed=0)
    a, b = mc.Glauber(J, 5.0, s0, seed=1), mc.Glauber(J, 5.0, s0, seed=1)
    old = mc.set_threads(2)
    try:
        a.sweep(4, parallel=True)
    finally:
        mc.set_threads(old)
    b.sweep(4, parallel=False)
    assert np.array_equal(a.sigma, b.sigma)


@pytest.mark.parametrize("rule", C.RULES)
def test_energy_never_increases_at_zero_temperature(rule: str) -> None:
    ps = make_pattern_set(400, 4, 0.5, M=6, r=0.5, seed=7)
    J = C.build(ps, rule)
    g = mc.Glauber(J, math.inf, mc.initial_states(ps.xi, 3, "random", seed=1), seed=2)
    e = g.energy()
    assert np.allclose(e, J.energy(g.sigma) / J.N)
    drops = 0.0
    for _ in range(2000):  # single updates: 5 sweeps
        g.updates(1)
        e2 = g.energy()
        assert (e2 <= e + 1e-12).all()
        drops += float((e - e2).sum())
        e = e2
    assert drops > 0
    assert np.allclose(e, J.energy(g.sigma) / J.N)


def test_loss_identity() -> None:
    """L_μ = (1/2N) Σ_i ξ² (ξ − σ)² = (1 − d_μ) − m_μ, d_μ the fraction of zeros of ξ^μ."""
    ps = make_pattern_set(3000, 5, 0.6, seed=1)
    J = C.build(ps, "storing")
    g = mc.Glauber(J, 10.0, mc.initial_states(ps.xi, 4, "mixture", seed=0), seed=0)
    for _ in range(3):
        g.sweep(1)
        ob = g.observe(ps.xi)
        d_emp = (ps.xi == 0).mean(axis=1)
        assert np.allclose(ob.loss, (1 - d_emp)[None, :] - ob.m, atol=1e-12)
    assert ob.loss.min() < 0.6 - 1e-3  # a retrieved pattern has a small loss


def test_initial_states() -> None:
    ps = make_pattern_set(1000, 3, 0.5, seed=0)
    s = mc.initial_states(ps.xi, 2, "pattern", seed=0, pattern=1)
    nz = ps.xi[1] != 0
    assert np.array_equal(s[:, nz], np.broadcast_to(ps.xi[1][nz], (2, nz.sum())))
    mix = mc.initial_states(ps.xi, 1, "mixture", seed=0)[0]
    tot = ps.xi.astype(int).sum(0)
    assert np.array_equal(mix[tot != 0], np.sign(tot[tot != 0]))
    noisy = mc.initial_states(ps.xi, 1, "pattern", seed=0, noise=0.2)[0]
    nz0 = ps.xi[0] != 0
    assert 0.1 < (noisy[nz0] != ps.xi[0][nz0]).mean() < 0.3


# ----------------------------------------------------------------------------- theory


def test_theory_examples_reduce_to_storing_and_hessian_matches_finite_differences() -> None:
    beta, d = 4.0, 0.5
    g = theory.grid(3, d)
    ge = theory.grid(3, d, r=1.0, M=5)  # perfect examples: η̄ = ξ, R_d = 1 − d
    n = np.array([0.3, 0.1, 0.05])
    assert np.allclose(theory.rhs(n, beta, g)[0], theory.rhs(n, beta, ge)[0])

    def f(x: np.ndarray) -> float:
        y = beta * (g.H @ x) / g.R
        return float(x @ x / (2 * g.R) - (g.w * np.log(2 * np.cosh(y))).sum() / beta)

    eps, K = 1e-4, 3
    H = np.zeros((K, K))
    for a in range(K):
        for b in range(K):
            ea, eb = np.eye(K)[a] * eps, np.eye(K)[b] * eps
            H[a, b] = (f(n + ea + eb) - f(n + ea - eb) - f(n - ea + eb) + f(n - ea - eb)) / (4 * eps * eps)
    assert np.allclose(H, theory.hessian(n, beta, g), atol=1e-5)
    # A fixed point of (1) is stationary: gradient of f = n/R − E[ξ tanh]/R = 0.
    sol = theory.solve(beta, np.array([0.4, 0.2, 0.1]), g)
    assert sol.converged and np.allclose(theory.rhs(sol.n, beta, g)[0], sol.n, atol=1e-9)


def test_theory_limits() -> None:
    # Low T: the hierarchical amplitudes (1 − d) d^{k−1}.
    sol = theory.hierarchical(50.0, theory.grid(3, 0.5), 0.5)
    assert np.allclose(sol.m_sorted, [0.5, 0.25, 0.125], atol=1e-3)
    # Strong dilution, moderate T: the symmetric state is the stable one.
    ph = theory.phase(0.8, 0.4, 3)
    assert ph["phase"] == "parallel" and np.ptp(ph["symmetric"]) < 1e-9
    assert theory.phase(0.5, 0.1, 3)["phase"] == "hierarchical"
    assert theory.phase(0.5, 1.5, 3)["phase"] == "paramagnetic"
    # T = 0 example majority vs its signal-to-noise (Gaussian) form at large M.
    assert theory.majority_overlap(0.5, 0.2, 400) == pytest.approx(theory.snr_overlap(0.5, 0.2, 400), abs=0.01)
    assert theory.capacity(10**4, 0.5, 3.0) == 1 + int(math.log(0.5 * 100 / 3) / math.log(2))


@pytest.mark.parametrize("d, T", [(0.5, 0.1), (0.8, 0.4)])
def test_monte_carlo_agrees_with_mean_field_at_small_N(d: float, T: float) -> None:
    """Hierarchical and parallel regime; tolerance 3/sqrt(N) (finite-size fluctuations ~ 1/sqrt(N))."""
    N = 4000
    ps = make_pattern_set(N, 3, d, seed=11)
    J = C.build(ps, "storing")
    s0 = mc.initial_states(ps.xi, 4, "random", seed=3)
    g = mc.Glauber(J, 1 / T, s0, seed=5)
    mf = theory.solve(1 / T, g.observe(ps.xi).m[0], theory.grid(3, d)).m_sorted
    g.sweep(60)
    acc = []
    for _ in range(20):
        g.sweep(2)
        acc.append(np.sort(np.abs(g.observe(ps.xi).m), axis=1)[:, ::-1].mean(0))
    assert np.abs(np.mean(acc, 0) - mf).max() < 3 / math.sqrt(N)


# ----------------------------------------------------------------------------- the kind


def _cfg(**hop: object) -> dict:
    base = {"N": 1500, "K": 3, "d": 0.5, "T": 0.1, "sweeps": 30, "burn_in": 10, "replicas": 2}
    base.update(hop)
    return {"name": "h", "kind": "hopfield", "train": {"report": True}, "hopfield": base}


def test_run_streams_observables_and_figures(tmp_path: Path) -> None:
    res = bioplaus.run(_cfg(), out=tmp_path / "h.h5", progress=False)
    assert res.headline[0] == "m_sorted_1" and res.metrics["m_sorted_1"] > 0.4
    assert abs(res.metrics["theory_gap"]) < 0.1
    with bioplaus.open_run(res.path) as f:
        assert len(f.metric("m_sorted_1")) == 30 and len(f.metric("loss_2")) == 30
        assert f.trace("hopfield.m").shape == (30, 2, 3)
        assert f.attrs["kind"] == "hopfield"
    assert {p.name for p in res.figures} >= {"hopfield_magnetisations.png", "learning_curves.png"}


def test_rate_backend_follows_mean_field(tmp_path: Path) -> None:
    res = bioplaus.run(_cfg(backend="rate", sweeps=200, burn_in=100, T=0.1, init="pattern"), out=tmp_path / "r.h5",
                       progress=False)
    assert [res.metrics[f"m_sorted_{k}"] for k in (1, 2, 3)] == pytest.approx([0.5, 0.25, 0.125], abs=2e-3)


@pytest.mark.parametrize("scan, extra, figure", [
    ("d", {"values": [0.4, 0.8]}, "hopfield_scan_d.png"),
    ("r", {"values": [0.5], "rules": ["supervised", "unsupervised"], "M": 5, "rule": "supervised"}, "hopfield_scan_r.png"),
    ("phase", {"values": [0.5, 0.8], "T_values": [0.1, 0.4], "map_points": 4}, "hopfield_phase.png"),
])
def test_scans_write_theory_and_draw(tmp_path: Path, scan: str, extra: dict, figure: str) -> None:
    res = bioplaus.run(_cfg(scan=scan, sweeps=20, **extra), out=tmp_path / f"{scan}.h5", progress=False)
    assert figure in {p.name for p in res.figures}
    with bioplaus.open_run(res.path) as f:
        mcm, thm = f.array("/hopfield/scan/mc_m"), f.array("/hopfield/scan/theory_m")
        assert mcm.shape == thm.shape and np.isfinite(mcm).all()


def test_spiking_twin_writes_population_rates(tmp_path: Path) -> None:
    pytest.importorskip("brian2")
    cfg = _cfg(N=300, d=0.8, backend="spiking")
    cfg["hopfield"]["spiking"] = {"duration": 0.1, "bin": 0.02}
    res = bioplaus.run(cfg, out=tmp_path / "s.h5", progress=False)
    with bioplaus.open_run(res.path) as f:
        rates = f.array("/hopfield/spiking/rates")
        assert rates.shape == (5, 3, 2) and (rates >= 0).all() and rates.max() > 10
        assert len(f.metric("rate_1_plus")) == 5
    assert "hopfield_spiking_rates.png" in {p.name for p in res.figures}


@pytest.mark.slow
def test_spiking_sim_retrieves_two_patterns_at_once(tmp_path: Path) -> None:
    res = bioplaus.run(load_config(ROOT / "sims" / "hopfield_spiking_brian2.toml", ["train.report=false"]),
                       out=tmp_path / "s.h5", progress=False)
    assert res.metrics["retrieved"] >= 2


@pytest.mark.parametrize("over, message", [
    ("hopfield.d=1.0", "hopfield.d: must be in [0, 1)"),
    ("hopfield.rule=hebb", "hopfield.rule: unknown value 'hebb'"),
    ("hopfield.backend=gpu", "hopfield.backend: unknown value"),
    ("hopfield.burn_in=500", "hopfield.burn_in: must be < sweeps"),
    ("hopfield.init_pattern=7", None),
    ("hopfield.r=1.5", "hopfield.r: must be in [0, 1]"),
    ("hopfield.K=0", "hopfield.K: must be"),
    ("hopfield.scan=phase", "hopfield.T_values: scan = 'phase' needs"),
    ("hopfield.values=[]", "hopfield.values: scan = 'd' needs"),
    ("hopfield.patterns=digits", "not a pattern generator"),
    ("hopfield.patterns=nope", "hopfield.patterns: unknown value 'nope'"),
    ("hopfield.replicas=4096", "GiB"),
])
def test_bad_values_are_one_line_config_errors(over: str, message: str | None) -> None:
    extra = ["hopfield.init=pattern"] if "init_pattern" in over else []
    extra += ["hopfield.N=10000000"] if "replicas" in over else []
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "sims" / "hopfield_hierarchical.toml", [over, *extra])
    assert "\n" not in str(e.value)
    if message:
        assert message in str(e.value)


def test_cli_bad_value_exit_code_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["run", str(ROOT / "sims" / "hopfield_parallel.toml"), "--set", "hopfield.T=-1",
                 "--out", str(tmp_path / "x.h5")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hopfield.T" in err[0]


@pytest.mark.parametrize("sim", sorted(p.name for p in (ROOT / "sims").glob("hopfield_*.toml")))
def test_sims_are_valid_configs(sim: str) -> None:
    cfg = load_config(ROOT / "sims" / sim)
    assert cfg.kind == "hopfield" and cfg.section("hopfield").N >= 800


def test_hopfield_config_holds_its_own_tables_only(tmp_path: Path) -> None:
    """The gradient kinds' tables are refused in one line, and the run file's config lacks them."""
    for table in ("data", "network", "rule", "plugins"):
        with pytest.raises(ConfigError, match=rf"^{table}: this table belongs to kinds 'continual', 'supervised', but kind = 'hopfield'$"):
            load_config({**_cfg(), table: [] if table == "plugins" else {}})
    with pytest.raises(ConfigError, match="^nope: unknown key; valid keys in \\[top level\\] of kind 'hopfield': .*hopfield$"):
        load_config({**_cfg(), "nope": {}})
    cfg = load_config(_cfg(sweeps=2, burn_in=0, N=200))
    assert list(cfg.to_dict()) == ["name", "seed", "description", "kind", "train", "record", "hopfield"]
    with pytest.raises(AttributeError, match="has no table or field 'rule'"):
        cfg.rule  # noqa: B018
    res = bioplaus.run(cfg, out=tmp_path / "h.h5", progress=False, report=False)
    with bioplaus.open_run(res.path) as f:
        assert set(f.config) == {"name", "seed", "description", "kind", "train", "record", "hopfield"}


def test_engines_are_one_table() -> None:
    """Each backend is an engine object; the kind's checks, metrics and scans come from it."""
    from bioplaus.hopfield.engines import ENGINES, Engine

    assert list(ENGINES) == ["mc", "rate", "spiking"]
    assert all(isinstance(e, Engine) and e.name == k for k, e in ENGINES.items())
    assert [e.scans for e in ENGINES.values()] == [True, True, False]
    with pytest.raises(ConfigError, match="^hopfield.scan: not available with backend = 'spiking'$"):
        load_config(_cfg(backend="spiking", N=100, scan="d", values=[0.5]))
    with pytest.raises(ConfigError, match="^hopfield.backend: unknown value 'gibbs'; valid: mc, rate, spiking$"):
        load_config(_cfg(backend="gibbs"))
    with pytest.raises(ConfigError, match="^hopfield.replicas x N: the replica state would take"):
        load_config(_cfg(replicas=4096, N=2_000_000))
    names = {m.name for m in bioplaus.experiments.hopfield.HopfieldExperiment.declared_metrics(
        load_config(_cfg(backend="spiking", N=100)))}
    assert {"rate_*", "retrieved"} <= names
    assert "retrieved" not in {m.name for m in bioplaus.experiments.hopfield.HopfieldExperiment.declared_metrics(
        load_config(_cfg()))}
