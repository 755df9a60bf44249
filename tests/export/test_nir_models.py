"""The NIR-exact neuron models (lif_nir, if_nir, cuba_lif): closed-form solutions of their
ODEs, NIR round trips, the other integration rule, config errors, training on digits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bioplaus.config import NetworkConfig, SpikingConfig
from bioplaus.errors import ConfigError, NIRFileError
from bioplaus.neurons import NotStatable, neuron_model

nir = pytest.importorskip("nir")

DT, TAU = 1e-3, 5e-3
MODELS = ("lif_nir", "if_nir", "cuba_lif")
RULES = ("exact", "euler")


def params(model: str, is_output: bool = False, *, T: int = 60, threshold: float = 1.0, tau: float = TAU,
           output_spikes: bool = False, **neuron: object):
    net = NetworkConfig(backend=model, spiking=SpikingConfig(T=T, dt=DT, tau=tau, threshold=threshold,
                                                            output_spikes=output_spikes), neuron=dict(neuron))
    m = neuron_model(model)
    m.check(net)
    return m, m.params_from(net, is_output)


def run_const(model: str, current: float, T: int, **kw: object) -> tuple[np.ndarray, np.ndarray]:
    """Spikes and membrane [T] of one neuron driven by a constant current (float64)."""
    m, p = params(model, T=T, **kw)
    out, mem = m.scan(torch.full((T, 1, 1), current, dtype=torch.float64), p)
    return out[:, 0, 0].numpy(), mem[:, 0, 0].numpy()


def first_above(v: np.ndarray, thr: float) -> int:
    return int(np.argmax(v > thr))


# ----------------------------------------------------------------------------- LIF
@pytest.mark.parametrize("rule", RULES)
def test_lif_nir_closed_form(rule: str) -> None:
    """v_k = v_inf + (v_0 − v_inf) g^k, g = e^{−dt/τ} (exact) or 1 − dt/τ (euler), until the
    first spike; then v = v_reset in that step, and the same curve from v_reset."""
    cur, r, v_leak, v_reset, thr = 0.6, 3.0, 0.1, -0.2, 1.0
    v_inf = v_leak + r * cur  # 1.9 > θ: it fires
    g = math.exp(-DT / TAU) if rule == "exact" else 1 - DT / TAU
    T = 40
    spk, v = run_const("lif_nir", cur, T, r=r, v_leak=v_leak, v_reset=v_reset, integration=rule)
    k = np.arange(1, T + 1)
    free = v_inf + (0.0 - v_inf) * g ** k  # v(k dt) from v_0 = 0 (the grid sample of the ODE for "exact")
    k1 = first_above(free, thr)  # index of the first spike
    if rule == "exact":  # the continuous crossing t* = −τ ln(1 − (θ − 0)/(v_inf − 0)) lies in step k1
        t_star = -TAU * math.log((v_inf - thr) / v_inf)
        assert k1 * DT < t_star <= (k1 + 1) * DT
    np.testing.assert_allclose(v[:k1], free[:k1], rtol=0, atol=1e-12)
    assert spk[:k1].sum() == 0 and spk[k1] == 1
    assert v[k1] == v_reset
    # after the reset: v_inf + (v_reset − v_inf) g^j, the next spike one period later
    j = np.arange(1, T - k1)
    after = v_inf + (v_reset - v_inf) * g ** j
    k2 = first_above(after, thr)
    np.testing.assert_allclose(v[k1 + 1:k1 + 1 + k2], after[:k2], rtol=0, atol=1e-12)
    assert spk[k1 + 1:k1 + 1 + k2].sum() == 0 and spk[k1 + 1 + k2] == 1
    # the two rules differ: exact reaches θ later (its one-step gain 1 − e^{−dt/τ} < dt/τ)
    spk_o, _ = run_const("lif_nir", cur, T, r=r, v_leak=v_leak, v_reset=v_reset,
                         integration="euler" if rule == "exact" else "exact")
    assert not np.array_equal(spk, spk_o)


def test_lif_nir_default_r_matches_discrete_lif_scale() -> None:
    """r defaults to τ/dt: with "euler", u_k = β v + I_k exactly (the discrete LIF's input)."""
    _, p = params("lif_nir", integration="euler")
    assert p.r == TAU / DT and math.isclose((1 - p.beta) * p.r, 1.0, rel_tol=1e-12)


@pytest.mark.parametrize("rule", RULES)
def test_li_readout_closed_form(rule: str) -> None:
    """The non-firing output layer is NIR's LI: v_k = v_inf (1 − g^k), no spike, no reset."""
    m, p = params("lif_nir", True, r=2.0, integration=rule)
    assert math.isinf(p.threshold)
    out, v = m.scan(torch.full((30, 1, 1), 1.5, dtype=torch.float64), p)
    g = math.exp(-DT / TAU) if rule == "exact" else 1 - DT / TAU
    np.testing.assert_allclose(v[:, 0, 0].numpy(), 3.0 * (1 - g ** np.arange(1, 31)), rtol=0, atol=1e-12)
    assert out.sum() == 0


# ----------------------------------------------------------------------------- IF
@pytest.mark.parametrize("rule", RULES)
def test_if_nir_closed_form(rule: str) -> None:
    """dv/dt = r I: v_k = k dt r I; first spike at k = ⌊θ / (dt r I)⌋ + 1 (steps from 1), then
    v_reset; both rules are the same for IF."""
    cur, r, v_reset, thr = 0.3, 1000.0, 0.25, 1.0
    spk, v = run_const("if_nir", cur, 20, r=r, v_reset=v_reset, integration=rule)
    ramp = DT * r * cur * np.arange(1, 21)
    k1 = math.floor(thr / (DT * r * cur))  # index (0-based) of the first step above θ
    assert first_above(ramp, thr) == k1
    np.testing.assert_allclose(v[:k1], ramp[:k1], rtol=0, atol=1e-12)
    assert spk[:k1].sum() == 0 and spk[k1] == 1 and v[k1] == v_reset
    k2 = math.floor((thr - v_reset) / (DT * r * cur))  # steps after the reset to the next spike
    np.testing.assert_allclose(v[k1 + 1:k1 + 1 + k2], v_reset + ramp[:k2], rtol=0, atol=1e-12)
    assert spk[k1 + 1 + k2] == 1


def test_if_nir_default_r_adds_the_input() -> None:
    _, p = params("if_nir")
    assert p.r == 1 / DT
    spk, v = run_const("if_nir", 0.25, 3)
    np.testing.assert_allclose(v, [0.25, 0.5, 0.75], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- CubaLIF
def cuba_closed(t: np.ndarray, S: float, w: float, r: float, ts: float, tm: float) -> tuple[np.ndarray, np.ndarray]:
    """I(t), v(t) from rest for a step input S: the ODE's solution."""
    i = w * S * (1 - np.exp(-t / ts))
    if math.isclose(ts, tm):
        v = r * w * S * (1 - np.exp(-t / tm) * (1 + t / tm))
    else:
        v = r * w * S * (1 - (tm * np.exp(-t / tm) - ts * np.exp(-t / ts)) / (tm - ts))
    return i, v


@pytest.mark.parametrize("tau_syn", [2e-3, 8e-3, TAU])
def test_cuba_lif_exact_closed_form(tau_syn: float) -> None:
    """"exact": the grid samples of I(t) and v(t) for a step input, the first spike in the
    step where v(t) crosses θ, then v = v_reset (I continues)."""
    S, w, r, thr, T = 0.4, 1.5, 2.0, 1.0, 40
    m, p = params("cuba_lif", T=T, tau_syn=tau_syn, w_in=w, r=r, integration="exact", threshold=thr)
    state = m.initial_state(torch.zeros(1, 1, dtype=torch.float64), p)
    spk, vs, cur = [], [], []
    for _ in range(T):
        s, state = m.step(torch.full((1, 1), S, dtype=torch.float64), state, p)
        spk.append(float(s)), vs.append(float(state.v)), cur.append(float(state.i))
    t = DT * np.arange(1, T + 1)
    i_ref, v_ref = cuba_closed(t, S, w, r, tau_syn, TAU)
    np.testing.assert_allclose(cur, i_ref, rtol=0, atol=1e-12)  # never reset
    k1 = first_above(v_ref, thr)
    assert 0 < k1 < T - 1
    np.testing.assert_allclose(vs[:k1], v_ref[:k1], rtol=0, atol=1e-12)
    assert sum(spk[:k1]) == 0 and spk[k1] == 1 and vs[k1] == 0.0


def test_cuba_lif_euler_closed_form() -> None:
    """"euler": I_k = wS(1 − α^k), v_k = rwS[(1 − β^k) − (1 − β)(β^k − α^k)/(β − α)]
    (forward Euler feeds v the previous step's I), α = 1 − dt/τ_syn, β = 1 − dt/τ_mem."""
    S, w, r, ts, T = 0.4, 1.5, 2.0, 2e-3, 25
    m, p = params("cuba_lif", T=T, tau_syn=ts, w_in=w, r=r, integration="euler", threshold=100.0)
    state = m.initial_state(torch.zeros(1, 1, dtype=torch.float64), p)
    vs, cur = [], []
    for _ in range(T):
        _, state = m.step(torch.full((1, 1), S, dtype=torch.float64), state, p)
        vs.append(float(state.v)), cur.append(float(state.i))
    a, b, k = 1 - DT / ts, 1 - DT / TAU, np.arange(1, T + 1)
    np.testing.assert_allclose(cur, w * S * (1 - a ** k), rtol=0, atol=1e-12)
    v_ref = r * w * S * ((1 - b ** k) - (1 - b) * (b ** k - a ** k) / (b - a))
    np.testing.assert_allclose(vs, v_ref, rtol=0, atol=1e-12)


def test_cuba_li_readout_never_fires() -> None:
    m, p = params("cuba_lif", True)
    out, mem = m.scan(torch.full((30, 2, 3), 5.0), p)
    assert math.isinf(p.threshold) and out.sum() == 0 and float(mem.max()) > 1.0


# ----------------------------------------------------------------------------- NIR round trips
def small_net(model: str, rule: str, *, seed: int = 0, **neuron: object):
    """A 12-16-8-4 net of ``model`` with weights large enough that every layer fires."""
    from bioplaus.nets import build_net

    cfg = NetworkConfig(backend=model, hidden=[16, 8], bias=True,
                        spiking=SpikingConfig(T=25, dt=DT, tau=TAU, output_spikes=False),
                        neuron={"integration": rule, **neuron})
    net = build_net(cfg, (12,), 4, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for la in net.layers:
            la.synapse.weight.copy_(torch.randn(la.synapse.weight.shape, generator=g) * 0.9 + 0.15)
            la.synapse.bias.copy_(torch.randn(la.synapse.bias.shape, generator=g) * 0.2)
    return net


def spikes_of(net, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    with torch.no_grad():
        logits = net(x)
    return [la.state.out.clone() for la in net.layers[:-1]], logits


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("model", MODELS)
def test_nir_round_trip_identical(model: str, rule: str, tmp_path) -> None:
    """to_nir → file → from_nir rebuilds the same model, the same parameters, the same spikes
    and logits; the nodes are NIR's own with the model's parameters, the synapse as is."""
    from bioplaus.export.nir import from_nir, read_nir, to_nir

    net = small_net(model, rule)
    graph = to_nir(net, fold_r=False)  # the model's r in the nodes, the synapse as is
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    want = {"lif_nir": {"LIF", "LI"}, "if_nir": {"IF", "LI"}, "cuba_lif": {"CubaLIF", "CubaLI"}}[model]
    assert want <= kinds
    assert graph.metadata["neuron_model"] == model and graph.metadata["integration"] == rule
    assert graph.metadata["reset_delay"] is False and "boxcar of area dt" in graph.metadata["spike"]
    np.testing.assert_array_equal(graph.nodes["syn0"].weight, net.layers[0].synapse.weight.detach().double().numpy())
    path = tmp_path / "g.nir"
    nir.write(path, graph)
    back = from_nir(read_nir(path))
    assert back.backend == model
    assert back.layers[0].neuron.params == net.layers[0].neuron.params
    assert back.layers[-1].neuron.params == net.layers[-1].neuron.params
    x = torch.rand(32, 12, generator=torch.Generator().manual_seed(1))
    s0, l0 = spikes_of(net, x)
    s1, l1 = spikes_of(back, x)
    assert all(float(s.sum()) > 0 for s in s0), "every hidden layer fires"
    for a, b in zip(s0, s1):
        assert torch.equal(a, b)
    assert torch.equal(l0, l1)


@pytest.mark.parametrize("model", ["lif_nir", "cuba_lif"])
def test_other_integration_rule_differs(model: str) -> None:
    """Reading an "exact" graph with "euler" (and back) gives other spikes; how many spike
    counts differ on this small net is printed (pytest -s)."""
    from bioplaus.export.nir import from_nir, to_nir

    net = small_net(model, "exact")
    x = torch.rand(64, 12, generator=torch.Generator().manual_seed(2))
    s0, l0 = spikes_of(net, x)
    other = from_nir(to_nir(net), integration="euler")
    assert other.layers[0].neuron.params.integration == "euler"
    s1, l1 = spikes_of(other, x)
    c0 = torch.cat([s.sum(0).flatten() for s in s0])
    c1 = torch.cat([s.sum(0).flatten() for s in s1])
    differ = float((c0 != c1).float().mean())
    agree = float((l0.argmax(1) == l1.argmax(1)).float().mean())
    print(f"{model}: exact graph read with euler: {differ:.1%} of spike counts differ, class agreement {agree:.1%}")
    assert differ > 0.05
    same = from_nir(to_nir(net), integration="exact")
    assert all(torch.equal(a, b) for a, b in zip(s0, spikes_of(same, x)[0]))


@pytest.mark.parametrize("model", MODELS)
def test_metadata_stripped_reading(model: str) -> None:
    """A graph with every metadata key removed (nodes' too) reads back the same given dt and the
    rule: IF and CubaLIF nodes are claimed by their model, plain LIF/LI with model=."""
    from bioplaus.export.nir import from_nir, to_nir

    net = small_net(model, "exact")
    graph = to_nir(net, fold_r=False)  # bit-equal weights (the folded graph: tests/export/test_nir_fold.py)
    graph.metadata = {}
    for node in graph.nodes.values():
        if hasattr(node, "metadata"):
            node.metadata = {}
    back = from_nir(graph, dt=DT, integration="exact", model="lif_nir" if model == "lif_nir" else None)
    assert back.backend == model
    x = torch.rand(16, 12, generator=torch.Generator().manual_seed(3))
    net.T = back.T  # the metadata's T is gone: compare over the reader's default
    net.cfg.spiking.T = back.T
    s0, l0 = spikes_of(net, x)
    s1, l1 = spikes_of(back, x)
    assert all(torch.equal(a, b) for a, b in zip(s0, s1)) and torch.equal(l0, l1)


def test_spiking_lif_graph_still_read_by_the_lif_path() -> None:
    """A plain LIF graph without metadata stays the `spiking` model's reading (as before)."""
    from bioplaus.export.nir import from_nir

    g = nir.NIRGraph.from_list(nir.Affine(weight=np.ones((2, 3)), bias=np.zeros(2)),
                               nir.LIF(tau=np.full(2, 0.01), r=np.ones(2), v_leak=np.zeros(2),
                                       v_threshold=np.ones(2), v_reset=np.zeros(2)))
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), **{k: v for k, v in g.nodes.items()
                                                                   if k not in ("input", "output")},
                            "output": nir.Output(np.array([2]))},
                     edges=[("input", "affine"), ("affine", "lif"), ("lif", "output")], type_check=False)
    assert from_nir(g).backend == "spiking"
    assert from_nir(g, model="lif_nir").backend == "lif_nir"


def test_from_nir_rejects_inconsistent_nodes() -> None:
    from bioplaus.export.nir import from_nir, to_nir

    graph = to_nir(small_net("lif_nir", "exact"))
    graph.nodes["lif1"].tau = np.full(8, 7e-3)
    with pytest.raises(NIRFileError, match="tau differs between layers"):
        from_nir(graph)
    graph = to_nir(small_net("lif_nir", "exact"))
    graph.nodes["lif0"].r = -np.ones(16)
    with pytest.raises(NIRFileError, match="r"):
        from_nir(graph)
    graph = to_nir(small_net("if_nir", "exact"))
    graph.nodes["li2"].r = graph.nodes["li2"].r * 2
    with pytest.raises(NIRFileError, match="read-out's r"):
        from_nir(graph)


@pytest.mark.parametrize(("node", "attr", "value"), [
    ("cubalif0", "tau_syn", np.full(16, np.nan)),
    ("cubalif0", "tau_syn", np.full(16, -1e-3)),
    ("cubalif0", "r", np.array(["a"] * 16)),
    ("cubalif0", "v_reset", np.full(16, 3.0)),
    ("cubali2", "tau_mem", np.full(4, 0.0)),
])
def test_hostile_nodes_are_one_line_errors(node: str, attr: str, value: np.ndarray, tmp_path) -> None:
    """Bad parameters in a CubaLIF graph (an untrusted file) give one NIRFileError line."""
    from bioplaus.export.nir import from_nir, to_nir

    graph = to_nir(small_net("cuba_lif", "exact"))
    setattr(graph.nodes[node], attr, value)
    with pytest.raises(NIRFileError) as e:
        from_nir(graph)
    assert "\n" not in str(e.value)


def test_firing_output_read_by_membrane_is_not_statable() -> None:
    from bioplaus.export.nir import to_nir
    from bioplaus.nets import build_net

    cfg = NetworkConfig(backend="lif_nir", hidden=[4], spiking=SpikingConfig(T=3, output_spikes=True))
    net = build_net(cfg, (5,), 2)
    with pytest.raises(NotStatable, match="output_spikes = false"):
        to_nir(net)
    g = to_nir(net, li_readout=False)  # its spikes leave the graph: a LIF node, stated exactly
    assert isinstance(g.nodes["lif1"], nir.LIF)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize(("neuron", "spiking", "field"), [
    ({"integration": "rk4"}, {}, "network.neuron.integration"),
    ({"v_reset": 1.5}, {}, "network.neuron.v_reset"),
    ({"integration": "euler"}, {"tau": 1e-3}, "network.spiking.tau"),
    ({"r": -1.0}, {}, "network.neuron.r"),
    ({"tau_syn": 5e-4, "integration": "euler"}, {}, "network.neuron.tau_syn"),
])
def test_config_errors_name_the_field(neuron: dict, spiking: dict, field: str) -> None:
    model = "cuba_lif" if "tau_syn" in neuron else "lif_nir"
    net = NetworkConfig(backend=model, spiking=SpikingConfig(**spiking), neuron=neuron)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as e:
        neuron_model(model).check(net)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- Brian2
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("model", ["lif_nir", "cuba_lif"])
def test_brian2_equations_give_the_same_membrane(model: str, rule: str) -> None:
    """The model's Brian2 equations, integrated by Brian2 with the net's rule and the input
    held over each step, give bioplaus's membrane (one neuron, constant input, below θ)."""
    b2 = pytest.importorskip("brian2")
    m, p = params(model, True, integration=rule, r=2.0)
    told = m.brian2(fires=False, reset="zero", inputs="I_syn")
    b2.start_scope()
    b2.prefs.codegen.target = "numpy"
    g = b2.NeuronGroup(1, told.equations, method=rule, dt=DT * b2.second)
    const = {"r": 2.0, "v_leak": 0.0, "v_reset": 0.0}
    if model == "cuba_lif":
        const.update(tau_syn=p.tau_syn * b2.second, tau_mem=p.tau_mem * b2.second, w_in=p.w_in)
    else:
        const.update(tau=p.tau * b2.second)
    for key, val in const.items():
        setattr(g, key, val)
    g.I_syn = 0.7  # held: no synapse clears it
    mon = b2.StateMonitor(g, "v", record=0, when="end")
    b2.run(20 * DT * b2.second)
    _, mem = m.scan(torch.full((20, 1, 1), 0.7, dtype=torch.float64), p)
    np.testing.assert_allclose(mon.v[0], mem[:, 0, 0].numpy(), rtol=1e-7, atol=1e-9)


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("model", MODELS)
def test_trains_above_chance_on_digits(model: str, tmp_path) -> None:
    from bioplaus.api import run

    cfg = {
        "name": f"{model}_digits", "seed": 0,
        "data": {"dataset": "digits", "batch_size": 32, "limit_train": 600, "limit_test": 300, "val_fraction": 0.0},
        "network": {"backend": model, "hidden": [64],
                    "spiking": {"T": 10, "output_spikes": False}, "neuron": {"integration": "exact"}},
        "rule": {"name": "backprop", "optimizer": "adam", "lr": 0.005},
        "train": {"epochs": 2, "report": False, "progress": False, "threads": 1},
        "record": {"weights_every": 0},
    }
    res = run(cfg, out=tmp_path / "r.h5")
    assert res.status == "done"
    assert res.metrics["test_acc"] > 0.7, res.summary()  # chance is 0.1; 0.89-0.90 here


def test_brian2_simulator_runs_nir_exact_nets_from_the_graph() -> None:
    """The Brian2 simulator builds a lif_nir graph's nodes (issue 21; it used to refuse them)
    and gives bioplaus's hidden spikes and classes (tests/simulators/test_brian2_graph.py
    covers every model, rule and a CNN)."""
    pytest.importorskip("brian2")
    from bioplaus.export.nir import to_nir
    from bioplaus.simulators.brian2 import simulate_brian2

    net = small_net("lif_nir", "exact")
    x = torch.rand(2, 12, generator=torch.Generator().manual_seed(4))
    s0, l0 = spikes_of(net, x)
    res = simulate_brian2(to_nir(net), x, mode="numpy")
    for i, s in enumerate(s0):
        np.testing.assert_array_equal(res.spikes[f"layer{i}"], s.numpy().astype(bool))
    np.testing.assert_array_equal(res.predicted, l0.argmax(1).numpy())


# ----------------------------------------------------------------------------- an independent spec reader
def spec_reader(graph, x: np.ndarray, T: int, dt: float, rule: str) -> list[np.ndarray]:
    """A NIR reader written from the spec alone (float64, no bioplaus code): each node's ODE
    stepped with ``rule`` over steps of ``dt``, input held over the step ("exact": the linear
    ODE's matrix exponential, scipy's expm; "euler": one forward-Euler step), s = v > θ then
    v = v_reset in that step. Returns each neuron node's output [T, B, n] (LI/CubaLI: v)."""
    from scipy.linalg import expm

    order = ["input"]
    succ = dict(graph.edges)
    while order[-1] in succ:
        order.append(succ[order[-1]])
    B = x.shape[0]
    h = np.broadcast_to(x, (T, *x.shape)).astype(np.float64)  # direct encoding: x every step
    outs = []
    for name in order[1:-1]:
        n = graph.nodes[name]
        if isinstance(n, nir.Affine | nir.Linear):
            h = h @ n.weight.T + (n.bias if isinstance(n, nir.Affine) else 0.0)
            continue
        size = h.shape[-1]
        p = {k: np.broadcast_to(np.asarray(getattr(n, k), dtype=np.float64), (size,))
             for k in ("tau", "tau_mem", "tau_syn", "r", "v_leak", "v_threshold", "v_reset", "w_in") if hasattr(n, k)}
        cuba = isinstance(n, nir.CubaLIF | nir.CubaLI)
        fires = hasattr(n, "v_threshold")
        v, cur = np.zeros((B, size)), np.zeros((B, size))
        out = np.zeros((T, B, size))
        for t in range(T):
            S = h[t]
            if isinstance(n, nir.IF):
                v = v + dt * p["r"] * S  # exact and Euler agree for dv/dt = r I
            elif not cuba:
                if rule == "exact":
                    v_inf = p["v_leak"] + p["r"] * S
                    v = v_inf + (v - v_inf) * np.exp(-dt / p["tau"])
                else:
                    v = v + dt / p["tau"] * (p["v_leak"] - v + p["r"] * S)
            elif rule == "exact":  # d[I, v, 1]/dt = A [I, v, 1] per neuron: exp(A dt)
                new_v, new_i = np.empty_like(v), np.empty_like(cur)
                for j in range(size):
                    ts, tm, r, vl, w = p["tau_syn"][j], p["tau_mem"][j], p["r"][j], p["v_leak"][j], p["w_in"][j]
                    for b in range(B):
                        A = np.array([[-1 / ts, 0, w * S[b, j] / ts], [r / tm, -1 / tm, vl / tm], [0, 0, 0]])
                        new_i[b, j], new_v[b, j], _ = expm(A * dt) @ np.array([cur[b, j], v[b, j], 1.0])
                v, cur = new_v, new_i
            else:
                v, cur = (v + dt / p["tau_mem"] * (p["v_leak"] - v + p["r"] * cur),
                          cur + dt / p["tau_syn"] * (-cur + p["w_in"] * S))
            if fires:
                s = v > p["v_threshold"]
                v = np.where(s, p["v_reset"], v)
                out[t] = s
            else:
                out[t] = v
        outs.append(out)
        h = out
    return outs


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("model", MODELS)
def test_a_spec_reader_reproduces_the_spikes(model: str, rule: str) -> None:
    """The exported graph, read by `spec_reader` (the NIR spec, dt and the rule, nothing of
    bioplaus), gives bioplaus's spikes in every layer and its output membrane (both float64)."""
    pytest.importorskip("scipy")
    from bioplaus.export.nir import to_nir

    net = small_net(model, rule).double()
    graph = to_nir(net)
    x = torch.rand(6, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():  # direct encoding in float64 (the encoder works in float32)
        h = x.unsqueeze(0).expand(net.T, *x.shape)
        for la in net.layers:
            h = la(h)
    got = spec_reader(graph, x.numpy(), int(graph.metadata["T"]), float(graph.metadata["dt"]),
                      str(graph.metadata["integration"]))
    for la, ref in zip(net.layers[:-1], got[:-1]):
        assert float(la.state.out.sum()) > 0
        np.testing.assert_array_equal(la.state.out.numpy(), ref)
    np.testing.assert_allclose(net.layers[-1].state.mem.numpy(), got[-1], rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- the fold of r
def _chain(*nodes: object) -> nir.NIRGraph:
    names = ["input", *(f"n{i}" for i in range(len(nodes))), "output"]
    objs = [nir.Input(np.array([3])), *nodes, nir.Output(np.array([2]))]
    return nir.NIRGraph(nodes=dict(zip(names, objs)), edges=list(zip(names[:-1], names[1:])), type_check=False)


def test_fold_r_moves_r_into_each_output_row_and_channel() -> None:
    """`fold_r`: the node's r goes to 1, row i of W and b_i (Affine / Linear) or output channel
    c of a Conv2d are multiplied by r_i (r_c); w_in, τ, θ, v_reset untouched; the input graph
    is not changed; IF nodes and nodes with r = 1 are left alone."""
    from bioplaus.export.nir_exact import fold_r

    W, b, r = np.arange(6.0).reshape(2, 3) + 1, np.array([0.5, -1.0]), np.array([2.0, 3.0])
    lif = nir.LIF(tau=np.full(2, 5e-3), r=r, v_leak=np.zeros(2), v_threshold=np.ones(2), v_reset=np.zeros(2))
    g = _chain(nir.Affine(weight=W, bias=b), lif)
    f = fold_r(g)
    np.testing.assert_array_equal(f.nodes["n0"].weight, W * r[:, None])
    np.testing.assert_array_equal(f.nodes["n0"].bias, b * r)
    np.testing.assert_array_equal(f.nodes["n1"].r, np.ones(2))
    np.testing.assert_array_equal(g.nodes["n1"].r, r)  # the input graph is as it was
    np.testing.assert_array_equal(f.nodes["n1"].v_threshold, np.ones(2))
    cuba = nir.CubaLIF(tau_syn=np.full(2, 2e-3), tau_mem=np.full(2, 5e-3), r=r, v_leak=np.zeros(2),
                       v_threshold=np.ones(2), v_reset=np.zeros(2), w_in=np.full(2, 0.7))
    f = fold_r(_chain(nir.Linear(weight=W), cuba))
    np.testing.assert_array_equal(f.nodes["n0"].weight, W * r[:, None])
    np.testing.assert_array_equal(f.nodes["n1"].w_in, np.full(2, 0.7))
    # Conv2d: per output channel (r one value per channel over its positions)
    cw = np.ones((2, 1, 3, 3))
    conv = nir.Conv2d(input_shape=np.array([5, 5]), weight=cw, stride=1, padding=1, dilation=1, groups=1,
                      bias=np.ones(2))
    rc = np.stack([np.full((5, 5), 2.0), np.full((5, 5), 4.0)])
    li = nir.LI(tau=np.full((2, 5, 5), 5e-3), r=rc, v_leak=np.zeros((2, 5, 5)))
    f = fold_r(_chain(conv, li))
    np.testing.assert_array_equal(f.nodes["n0"].weight[:, 0, 0, 0], [2.0, 4.0])
    np.testing.assert_array_equal(f.nodes["n0"].bias, [2.0, 4.0])
    rc[1, 0, 0] = 5.0
    with pytest.raises(NIRFileError, match="varies within an output channel"):
        fold_r(_chain(conv, nir.LI(tau=np.full((2, 5, 5), 5e-3), r=rc, v_leak=np.zeros((2, 5, 5)))))
    # IF: left as it is (readers that ignore r step v += I, the spec's v += dt r I at r = 1/dt)
    iff = nir.IF(r=np.full(2, 1e3), v_threshold=np.ones(2), v_reset=np.zeros(2))
    f = fold_r(_chain(nir.Linear(weight=W), iff))
    np.testing.assert_array_equal(f.nodes["n0"].weight, W)
    np.testing.assert_array_equal(f.nodes["n1"].r, iff.r)
    # a leaky node not fed by a synapse of its own cannot be folded: one line naming it
    with pytest.raises(NIRFileError, match="'n1'.*cannot be folded"):
        fold_r(_chain(nir.Threshold(threshold=np.full(3, 0.5)), nir.LIF(
            tau=np.full(3, 5e-3), r=np.full(3, 2.0), v_leak=np.zeros(3), v_threshold=np.ones(3), v_reset=np.zeros(3))))


@pytest.mark.parametrize("model", MODELS)
def test_export_folds_lif_nir_and_cuba_lif_by_default(model: str) -> None:
    """`to_nir`'s default: lif_nir and cuba_lif graphs folded (every node r = 1, the first
    synapse r W, ``r_folded`` in the metadata); ``fold_r=False`` keeps r in the nodes;
    if_nir's graph is the same either way."""
    from bioplaus.export.nir import to_nir

    net = small_net(model, "euler")
    r = net.layers[0].neuron.params.r
    plain, folded, forced = to_nir(net, fold_r=False), to_nir(net), to_nir(net, fold_r=True)
    assert "r_folded" not in plain.metadata
    np.testing.assert_array_equal(forced.nodes["syn0"].weight, folded.nodes["syn0"].weight)
    if model == "if_nir":
        assert "r_folded" not in folded.metadata
        for k, n in plain.nodes.items():
            for attr in ("weight", "bias", "r"):
                if hasattr(n, attr):
                    np.testing.assert_array_equal(getattr(folded.nodes[k], attr), getattr(n, attr))
        return
    assert r != 1.0 and folded.metadata["r_folded"] is True
    assert all(np.all(np.asarray(n.r) == 1.0) for n in folded.nodes.values() if hasattr(n, "r"))
    assert not any(np.all(np.asarray(n.r) == 1.0) for n in plain.nodes.values() if hasattr(n, "r"))
    np.testing.assert_allclose(folded.nodes["syn0"].weight, r * plain.nodes["syn0"].weight, rtol=1e-15)
    np.testing.assert_allclose(folded.nodes["syn2"].bias, r * plain.nodes["syn2"].bias, rtol=1e-15)


def test_default_spiking_export_is_unchanged_by_the_fold(tmp_path) -> None:
    """The discrete LIF's graph (r = 1 already) is the same with or without the fold, and
    its file holds the same arrays and metadata."""
    from bioplaus.export.nir import export_nir, read_nir
    from bioplaus.nets import build_net

    net = build_net(NetworkConfig(backend="spiking", hidden=[16], bias=True), (12,), 4, seed=0)
    paths = [export_nir(net, tmp_path / f"{k}.nir", fold_r=f) for k, f in (("d", None), ("n", False), ("y", True))]
    graphs = [read_nir(p) for p in paths]
    for g in graphs[1:]:
        assert g.metadata == graphs[0].metadata and "r_folded" not in g.metadata
        for k, n in graphs[0].nodes.items():
            for attr in ("weight", "bias", "r", "tau"):
                if hasattr(n, attr):
                    np.testing.assert_array_equal(getattr(g.nodes[k], attr), getattr(n, attr))


def test_export_command_folds_by_default_and_no_fold_r_keeps_r(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """``bioplaus export RUN --nir`` of a lif_nir run writes the folded graph and says so in a
    line; ``--no-fold-r`` keeps r = τ/dt in the nodes; both read back to equal spike counts."""
    from bioplaus.cli import main
    from bioplaus.export.nir import from_nir, read_nir

    cfg = tmp_path / "e.toml"
    cfg.write_text(
        "name='e'\n[data]\ndataset='digits'\nlimit_train=64\nlimit_test=32\n[network]\nbackend='lif_nir'\n"
        "hidden=[8]\n[network.spiking]\nT=4\noutput_spikes=false\n[rule]\nname='backprop'\nlr=0.05\n"
        "[train]\nepochs=1\nreport=false\n")
    run = tmp_path / "r.h5"
    assert main(["run", str(cfg), "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--nir", str(tmp_path / "f.nir")]) == 0
    assert "r folded into the synapses" in capsys.readouterr().out
    assert main(["export", str(run), "--nir", str(tmp_path / "u.nir"), "--no-fold-r"]) == 0
    assert "r folded" not in capsys.readouterr().out
    f, u = read_nir(tmp_path / "f.nir"), read_nir(tmp_path / "u.nir")
    assert f.metadata["r_folded"] and "r_folded" not in u.metadata
    np.testing.assert_array_equal(f.nodes["lif0"].r, 1.0)
    r = float(np.asarray(u.nodes["lif0"].r).ravel()[0])
    assert r == pytest.approx(TAU / DT)  # the default r = τ/dt (SpikingConfig defaults: τ = 5 ms, dt = 1 ms)
    np.testing.assert_allclose(f.nodes["syn0"].weight, r * u.nodes["syn0"].weight, rtol=1e-12)
    x = torch.rand(16, 64, generator=torch.Generator().manual_seed(2))
    s_f, _ = spikes_of(from_nir(f), x)
    s_u, _ = spikes_of(from_nir(u), x)
    assert all(torch.equal(a.sum(0), b.sum(0)) for a, b in zip(s_f, s_u))
