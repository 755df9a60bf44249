"""Conv graphs both ways (Conv2d, pooling, Flatten), simulate on conv graphs, and the export's
one line on what a reader of the NIR spec would get wrong."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from bioplaus.cli import main  # noqa: E402
from bioplaus.config import NetworkConfig, SpikingConfig  # noqa: E402
from bioplaus.errors import NIRFileError  # noqa: E402
from bioplaus.export.nir import (  # noqa: E402
    from_nir,
    load_net,
    nir_beta,
    spec_notes,
    to_nir,
    trained_integration,
    truth_line,
)
from bioplaus.nets import build_net  # noqa: E402


def _cnn(pool: int = 2, seed: int = 3, **kw) -> torch.nn.Module:  # noqa: ANN003
    cfg = NetworkConfig(backend="spiking", arch="cnn", channels=[3, 4], hidden=[12], bias=True, pool=pool,
                        spiking=SpikingConfig(T=6, **kw))
    net = build_net(cfg, (1, 8, 8), 10, seed=seed)
    with torch.no_grad():
        for la in net.layers:
            la.synapse.weight.mul_(3)
    return net


def _same_spikes(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        la, lb = a(x), b(x)
    for l1, l2 in zip(a.layers, b.layers):
        assert l1.state.out.sum() > 0 or l1.is_output
        assert torch.equal(l1.state.out, l2.state.out)
    assert torch.equal(la, lb)


def test_trained_digits_cnn_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A digits CNN trained a few steps: export → from_nir gives identical spikes; the export
    and ``inspect GRAPH.nir`` print the same line naming each node's convention."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "name='c'\n[data]\ndataset='digits'\nlimit_train=96\nlimit_test=32\n[network]\nbackend='spiking'\n"
        "arch='cnn'\nchannels=[4]\npool=2\nhidden=[16]\n[network.spiking]\nT=5\n"
        "[rule]\nname='backprop'\nlr=0.05\n[train]\nepochs=1\nreport=false\n"
    )
    run, graph = tmp_path / "c.h5", tmp_path / "c.nir"
    assert main(["run", str(cfg), "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--nir", str(graph)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and "euler parameters, the rule the net was trained with" in out[0]
    line = out[1]
    assert "needs bioplaus's conventions: lif0, lif1: reset subtracts" in line
    assert "lif0, lif1, li2: tau = 5.517 ms is forward Euler's" in line
    assert "pool" not in line and "max0" not in line  # SumPool2d → Threshold is max-pool exactly
    g = nir.read(graph)
    assert [type(g.nodes[k]).__name__ for k in ("syn0", "lif0", "pool0", "max0", "flat1")] == \
        ["Conv2d", "LIF", "SumPool2d", "Threshold", "Flatten"]
    trained, back = load_net(run), from_nir(graph)
    from bioplaus.export.samples import test_samples

    x, _ = test_samples("digits", 64, "unit")
    _same_spikes(trained, back, x.reshape(-1, 1, 8, 8))
    assert main(["inspect", str(graph)]) == 0
    shown = capsys.readouterr().out
    assert line.split(": ", 1)[1] in shown and "bioplaus reads it as: spiking 64-c4-16-10" in shown


@pytest.mark.parametrize("pool", [1, 2])
@pytest.mark.parametrize("integration", ["euler", "exact"])
def test_round_trip_identical_spikes(tmp_path: Path, pool: int, integration: str) -> None:
    net = _cnn(pool)
    path = tmp_path / "c.nir"
    nir.write(path, to_nir(net, integration=integration))
    back = from_nir(path)
    _same_spikes(net, back, torch.rand(9, 1, 8, 8))
    # batched input kept working: 9 samples at once = each alone
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        together = back(x)
        alone = torch.cat([back(x[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)


def test_max_pool_node_pair_is_max_of_spikes() -> None:
    """A spec reader of SumPool2d → Threshold(0.5) gets bioplaus's max-pool, by hand in numpy."""
    net = _cnn(2)
    g = to_nir(net)
    with torch.no_grad():
        net(torch.rand(4, 1, 8, 8))
    s = net.layers[0].state.out.numpy()  # [T, B, 3, 8, 8]
    k = int(g.nodes["pool0"].kernel_size[0])
    summed = s.reshape(*s.shape[:3], 4, k, 4, k).sum(axis=(4, 6))
    read = (summed > g.nodes["max0"].threshold).astype(np.float32)
    np.testing.assert_array_equal(read, net.layers[0].state.y.numpy())
    assert 0 < read.mean() < 1


def _conv_graph(conv: object, pools: list[object], flatten: object, n_lin_in: int, *,
                batch_in: bool = False, scalar_params: bool = False, tau: float = 2e-3,
                dt: float = 1e-3, pre_pool: bool = False, seed: int = 0) -> tuple[object, dict]:
    """A chain Input → Conv2d [→ pool] → LIF [→ pools] → Flatten → Affine → LIF → Output, as
    peers write it (no bioplaus metadata; dt given)."""
    rng = np.random.default_rng(seed)
    nodes: dict[str, object] = {"input": nir.Input(input_type={"input": np.array([1, 2, 8, 8] if batch_in else [2, 8, 8])})}
    names = ["input", "conv"]
    nodes["conv"] = conv
    if pre_pool:
        nodes["prepool"] = pools[0]
        names.append("prepool")
        pools = pools[1:]

    def lif(n: tuple[int, ...]) -> object:
        """One value for all neurons: shape () (Norse) or (1,) (snntorch)."""
        def full(v: float) -> np.ndarray:
            return np.full(() if scalar_params else n, v)
        return nir.LIF(tau=full(tau), r=full(1.0), v_leak=full(0.0), v_threshold=full(1.0), v_reset=full(0.0))

    nodes["lif0"] = lif((1,))
    names.append("lif0")
    for i, p in enumerate(pools):
        nodes[f"p{i}"] = p
        names.append(f"p{i}")
    nodes["flat"] = flatten
    nodes["fc"] = nir.Affine(weight=rng.normal(0, 1, (5, n_lin_in)), bias=rng.normal(0, 0.1, 5))
    nodes["lif1"] = lif((1,))
    nodes["output"] = nir.Output(output_type={"output": np.array([5])})
    names += ["flat", "fc", "lif1", "output"]
    g = nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:])), metadata={"dt": dt}, type_check=False)
    return g, nodes


def _reference(x: torch.Tensor, conv_fn: Callable[[torch.Tensor], torch.Tensor],
               post: Callable[[torch.Tensor], torch.Tensor], fc: object, beta: float, T: int) -> tuple:
    """The graph run by hand: discrete Euler of each LIF node, reset to 0, in float64."""
    k = 1 - beta
    c0 = k * conv_fn(x.double())
    v0 = torch.zeros_like(c0)
    w, b = torch.as_tensor(fc.weight), torch.as_tensor(fc.bias)
    v1 = torch.zeros(x.shape[0], w.shape[0], dtype=torch.float64)
    s0s, s1s = [], []
    for _ in range(T):
        v0 = beta * v0 + c0
        s0 = (v0 > 1.0).double()
        v0 = v0 * (1 - s0)
        h = post(s0).flatten(1)
        v1 = beta * v1 + k * (h @ w.T + b)
        s1 = (v1 > 1.0).double()
        v1 = v1 * (1 - s1)
        s0s.append(s0)
        s1s.append(s1)
    return torch.stack(s0s), torch.stack(s1s)


@pytest.mark.parametrize("flat_start", [0, 1, -3])
def test_peer_conv_graph_strided_grouped_dilated(flat_start: int) -> None:
    """Stride, padding, dilation, groups as NIR states them, Norse's batched Input, a pool after
    the neuron, Flatten in either batch convention: the rebuilt net = the graph run by hand."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1.5, (4, 1, 3, 3))
    b = rng.normal(0, 0.2, 4)
    conv = nir.Conv2d(input_shape=None, weight=w, stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2, bias=b)
    # out: H = (8 + 4 - 4 - 1) // 1 + 1 = 8, W = (8 + 2 - 2 - 1) // 2 + 1 = 4
    pool = nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    flat = nir.Flatten(input_type=None, start_dim=flat_start)
    g, nodes = _conv_graph(conv, [pool], flat, 4 * 4 * 2, batch_in=True, scalar_params=True, tau=4e-3)
    net = from_nir(g)
    assert net.input_shape == (2, 8, 8) and net.layers[0].pool_kind == "avg"
    x = torch.rand(6, 2, 8, 8) * 2
    with torch.no_grad():
        net(x)
    beta = nir_beta(4e-3, 1e-3, "euler")
    tw, tb = torch.as_tensor(w), torch.as_tensor(b)
    ref0, ref1 = _reference(x, lambda z: torch.nn.functional.conv2d(z, tw, tb, (1, 2), (2, 1), (2, 1), 2),
                            lambda s: torch.nn.functional.avg_pool2d(s, 2), nodes["fc"], beta, net.T)
    assert ref0.sum() > 0 and ref1.sum() > 0
    assert torch.equal(net.layers[0].state.out.double(), ref0)
    assert torch.equal(net.layers[1].state.out.double(), ref1)
    # and bioplaus writes the same net back: identical spikes again
    _same_spikes(net, from_nir(to_nir(net)), x)


@pytest.mark.parametrize("kind", ["AvgPool2d", "SumPool2d"])
def test_pool_between_conv_and_neuron_is_folded(kind: str) -> None:
    """snntorch's order Conv2d → AvgPool2d → Leaky: the linear pool is folded into the conv."""
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1.0, (3, 2, 3, 3))
    b = rng.normal(0, 0.2, 3)
    conv = nir.Conv2d(input_shape=(8, 8), weight=w, stride=1, padding=1, dilation=1, groups=1, bias=b)
    pool = getattr(nir, kind)(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    g, nodes = _conv_graph(conv, [pool], nir.Flatten(input_type=None, start_dim=0), 3 * 4 * 4, pre_pool=True)
    net = from_nir(g)
    x = torch.rand(5, 2, 8, 8)
    with torch.no_grad():
        net(x)
    scale = 4.0 if kind == "SumPool2d" else 1.0
    tw, tb = torch.as_tensor(w), torch.as_tensor(b)
    ref0, ref1 = _reference(
        x, lambda z: scale * torch.nn.functional.avg_pool2d(torch.nn.functional.conv2d(z, tw, tb, 1, 1), 2),
        lambda s: s, nodes["fc"], nir_beta(2e-3, 1e-3, "euler"), net.T)
    got = net.layers[0].state.out.double()
    assert ref0.sum() > 10
    # the folded kernel sums in another order: at most a rare flip at the threshold
    assert (got != ref0).double().mean() < 0.005
    assert net.layers[0].synapse.stride == (2, 2) and net.layers[0].synapse.kernel_size == (4, 4)


def _hostile_base(tmp_path: Path) -> tuple[Path, object]:
    net = _cnn(2)
    g = to_nir(net)
    g.metadata["dataset"] = "digits"
    return tmp_path / "h.nir", g


def _set(node: str, attr: str, value: Callable[[object], object]) -> Callable[[object], None]:
    def edit(g: object) -> None:
        n = g.nodes[node]  # type: ignore[attr-defined]
        setattr(n, attr, value(getattr(n, attr)))
    return edit


def _replace(node: str, make: Callable[[object], object]) -> Callable[[object], None]:
    def edit(g: object) -> None:
        g.nodes[node] = make(g.nodes[node])  # type: ignore[attr-defined]
    return edit


HOSTILE = [
    ("conv_weight_nan", _set("syn0", "weight", lambda a: a * np.nan), "'syn0': weight holds NaN"),
    ("conv_bias_inf", _set("syn0", "bias", lambda a: a + np.inf), "'syn0': bias holds NaN or inf"),
    ("conv_in_channels", _set("syn1", "weight", lambda a: a[:, :2]), "'syn1': weight has shape (4, 2, 3, 3)"),
    ("conv_weight_3d", _set("syn0", "weight", lambda a: a[:, 0]), "'syn0': weight has shape (3, 3, 3)"),
    ("conv_huge_kernel", _set("syn0", "weight", lambda a: np.ones((3, 1, 60, 60))), "kernel spans 60 > input 8"),
    ("conv_negative_stride", _set("syn0", "stride", lambda a: (-1, 1)), "'syn0': stride=[-1, 1]"),
    ("conv_zero_stride", _set("syn0", "stride", lambda a: (0, 0)), "not a readable NIR graph (RuntimeWarning: divide by zero"),  # nir.read
    ("conv_huge_padding", _set("syn0", "padding", lambda a: (5000, 5000)), "padding 5000 >= kernel span 3"),
    ("conv_padding_text", _set("syn0", "padding", lambda a: "full"), "padding must be 'same', 'valid'"),  # nir.read
    ("conv_same_even_kernel", lambda g: (_set("syn0", "padding", lambda a: "same")(g),
                                         _set("syn0", "weight", lambda a: np.ones((3, 1, 2, 2)))(g)),
     "padding='same': bioplaus runs"),
    ("conv_groups", _set("syn1", "groups", lambda a: 2), "in 2 group(s)"),
    ("conv_input_shape", _set("syn0", "input_shape", lambda a: np.array([9, 9])), "input_shape"),
    ("pool_stride", _set("pool0", "stride", lambda a: np.array([1, 1])), "stride = kernel"),
    ("pool_huge", _set("pool0", "kernel_size", lambda a: np.array([99, 99])), "bioplaus pools square"),
    ("pool_window_too_big", lambda g: (_set("pool0", "kernel_size", lambda a: np.array([99, 99]))(g),
                                       _set("pool0", "stride", lambda a: np.array([99, 99]))(g)),
     "pool window 99 exceeds the input"),
    ("threshold_out_of_range", _set("max0", "threshold", lambda a: a + 1.0), "one threshold in [0, 1)"),
    ("threshold_nan", _set("max0", "threshold", lambda a: a * np.nan), "'max0': threshold holds NaN"),
    ("threshold_alone", _replace("pool0", lambda n: nir.Threshold(threshold=np.full((3, 4, 4), 0.5))),
     "'pool0': a Threshold is read only after a SumPool2d"),
    ("flatten_partial", _set("flat2", "start_dim", lambda a: 2), "does not flatten the whole sample"),
    ("neuron_shape", lambda g: [_set("lif0", k, lambda a: a[:2])(g) for k in ("tau", "r", "v_leak", "v_threshold",
                                                                           "v_reset")],
     "'lif0': tau has shape (2, 8, 8), expected (3, 8, 8)"),
    ("conv_r_varies", _set("lif0", "r", lambda a: a * np.linspace(1, 2, a.size).reshape(a.shape)),
     "r differs between neurons of a convolution"),
    ("input_batch_2", _set("input", "input_type", lambda a: {"input": np.array([2, 1, 8, 8])}), "input shape"),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_conv_graphs(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: tuple) -> None:
    _, edit, match = case
    path, g = _hostile_base(tmp_path)
    edit(g)
    nir.write(path, g)
    with pytest.raises(NIRFileError) as info:
        from_nir(path)
    msg = str(info.value)
    assert "\n" not in msg and match in msg, msg
    out = tmp_path / "r.h5"
    assert main(["simulate", str(path), "--backend", "bioplaus", "--samples", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and not out.exists()


def test_simulate_conv_graph_records_spikes_per_layer(tmp_path: Path) -> None:
    from bioplaus.record import open_run

    net = _cnn(2)
    g = to_nir(net)
    g.metadata["dataset"] = "digits"
    path = tmp_path / "c.nir"
    nir.write(path, g)
    out = tmp_path / "s.h5"
    assert main(["simulate", str(path), "--backend", "bioplaus", "--samples", "6", "--out", str(out)]) == 0
    with open_run(out) as run:
        x = torch.as_tensor(run.array("/simulate/input"))
        predicted = run.array("/simulate/predicted")
        events = {name: run.spikes(name) for name in ("layer0", "layer1", "layer2", "layer3")}
    with torch.no_grad():
        logits = net(x)
    np.testing.assert_array_equal(predicted, logits.argmax(-1).numpy())
    for la in net.layers:  # a conv layer's (C, H, W) neurons recorded flat, as an MLP's
        ev = events[la.name]
        assert ev.n_neurons == la.state.out[0, 0].numel() and ev.count == int(la.state.out.sum()) > 0


@pytest.mark.parametrize("pool,encoder", [(2, "direct"), (1, "poisson")])
def test_brian2_runs_conv_graphs(pool: int, encoder: str) -> None:
    pytest.importorskip("brian2")
    from bioplaus.simulators.brian2 import simulate_bioplaus, simulate_brian2

    g = to_nir(_cnn(pool, encoder=encoder))
    x = torch.rand(3, 1, 8, 8)
    torch.manual_seed(0)
    a = simulate_bioplaus(g, x)
    torch.manual_seed(0)
    b = simulate_brian2(g, x, mode="numpy", reading="bioplaus")
    assert set(a.spikes) == set(b.spikes) == {"layer0", "layer1", "layer2", "layer3"}
    for k in a.spikes:
        np.testing.assert_array_equal(a.spikes[k], b.spikes[k])
    assert sum(int(s.sum()) for s in a.spikes.values()) > 20
    np.testing.assert_allclose(a.mem_out, b.mem_out, atol=1e-5)


def test_truth_line() -> None:
    """Plain only when every node means what the spec says; otherwise each convention, by node."""
    cfg = dict(backend="spiking", hidden=[8])
    plain = build_net(NetworkConfig(**cfg, spiking=SpikingConfig(T=4, reset="zero", output_spikes=False)), (1, 4, 4), 3)
    assert spec_notes(to_nir(plain, integration="exact")) == []
    assert truth_line(to_nir(plain, integration="exact")).startswith("plain NIR")
    euler = spec_notes(to_nir(plain, integration="euler"))
    assert len(euler) == 1 and euler[0].startswith("lif0, li1: tau = 5.517 ms is forward Euler's")
    assert "exp" not in euler[0] and f"{np.exp(-1 / 5.5166):.4f}" in euler[0]
    default = build_net(NetworkConfig(**cfg, spiking=SpikingConfig(T=4)), (1, 4, 4), 3)
    notes = spec_notes(to_nir(default, integration="exact"))
    assert notes == ["lif0: reset subtracts v_threshold one step after the spike (the spec's LIF sets v to "
                     "v_reset at once)",
                     "li1: bioplaus's output layer also fires and loses v_threshold per spike (an LI node only "
                     "integrates)"]
    poisson = build_net(NetworkConfig(**cfg, spiking=SpikingConfig(T=4, reset="zero", output_spikes=False,
                                                                   encoder="poisson")), (1, 4, 4), 3)
    assert spec_notes(to_nir(poisson, integration="exact")) == [
        "input: bioplaus feeds poisson spikes of the sample (metadata encoder); the graph has no encoder node"]
    # a peer's graph carries no bioplaus conventions to report
    g = to_nir(default)
    g.metadata.pop("producer")
    assert spec_notes(g) == []


def test_integration_default_and_default_bytes() -> None:
    """--integration defaults to the trained rule; the default export is what it was (euler)."""
    net = build_net(NetworkConfig(backend="spiking", hidden=[8], spiking=SpikingConfig(T=4)), (1, 4, 4), 3)
    assert trained_integration(net) == "euler"
    a, b = to_nir(net), to_nir(net, integration="euler")
    assert a.to_dict().keys() == b.to_dict().keys()
    for k in a.nodes:
        for attr, v in a.nodes[k].to_dict().items():
            np.testing.assert_array_equal(np.asarray(v, dtype=object) if isinstance(v, dict) else v,
                                          np.asarray(b.nodes[k].to_dict()[attr], dtype=object)
                                          if isinstance(v, dict) else b.nodes[k].to_dict()[attr])

    class Exact:  # a neuron model whose parameters name their rule (NIR-exact models do)
        integration = "exact"
        dt = 1e-3

    net.layers[0].neuron.params = Exact()  # only read by trained_integration
    assert trained_integration(net) == "exact"


def _exact_cnn(model: str, rule: str, bias: bool = True) -> torch.nn.Module:
    """A tiny CNN of a NIR-exact model: 8x8 → 3 ch (max-pool 2) → 4 ch (max-pool 2) → 12 → LI 10."""
    cfg = NetworkConfig(backend=model, arch="cnn", channels=[3, 4], hidden=[12], bias=bias, pool=2,
                        spiking=SpikingConfig(T=8, output_spikes=False), neuron={"integration": rule})
    net = build_net(cfg, (1, 8, 8), 10, seed=5)
    with torch.no_grad():
        for la in net.layers:
            la.synapse.weight.mul_(4)
    return net


@pytest.mark.parametrize("rule", ["exact", "euler"])
@pytest.mark.parametrize("model", ["lif_nir", "if_nir", "cuba_lif"])
def test_nir_exact_conv_round_trip(tmp_path: Path, model: str, rule: str) -> None:
    """A CNN of each NIR-exact model and rule: export → file → from_nir rebuilds the model with
    the graph's geometry and identical spikes and logits; with every metadata key removed it
    reads the same given dt, the rule and T (plus model= for plain LIF/LI nodes)."""
    net = _exact_cnn(model, rule, bias=model != "if_nir")
    g = to_nir(net, fold_r=False)  # the model's own r (the folded graph: tests/simulators/test_brian2_graph.py)
    nir.write(tmp_path / "c.nir", g)
    back = from_nir(tmp_path / "c.nir")
    assert back.backend == model and back.cfg.arch == "cnn"
    assert back.layers[0].neuron.params == net.layers[0].neuron.params
    assert [(la.pool, la.pool_kind) for la in back.layers] == [(la.pool, la.pool_kind) for la in net.layers]
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    _same_spikes(net, back, x)
    g.metadata = {}
    for node in g.nodes.values():
        if hasattr(node, "metadata"):
            node.metadata = {}
    stripped = from_nir(g, dt=1e-3, integration=rule, model="lif_nir" if model == "lif_nir" else None)
    stripped.T = stripped.cfg.spiking.T = 8
    assert stripped.backend == model and stripped.layers[0].neuron.params.integration == rule
    _same_spikes(net, stripped, x)
