"""Brian2 from the graph: the NIR nodes' own ODEs in Brian2 agree with bioplaus on the
NIR-exact models (MLP and CNN, each rule) spike for spike, and a graph of the default LIF is
read as the spec says, with one line naming what bioplaus reads differently."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("brian2")
nir = pytest.importorskip("nir")

from bioplaus.config import NetworkConfig, SpikingConfig  # noqa: E402
from bioplaus.export.nir import from_nir, to_nir  # noqa: E402
from bioplaus.nets import build_net  # noqa: E402
from bioplaus.simulators.brian2 import simulate_bioplaus, simulate_brian2  # noqa: E402
from bioplaus.simulators.brian2_graph import conv_matrix, pool_matrix  # noqa: E402

MODELS = ("lif_nir", "if_nir", "cuba_lif")
RULES = ("exact", "euler")


def _digits(n: int) -> torch.Tensor:
    from bioplaus.export.samples import test_samples

    x, _ = test_samples("digits", n, "unit")
    return torch.as_tensor(x).reshape(n, 1, 8, 8).float()


def _net(model: str, rule: str, arch: str, seed: int = 3):
    """digits 64-16-10 (mlp) or a tiny CNN 8x8 → 3 ch (max-pool 2) → 4 ch (max-pool 2) → 12 → 10,
    weights scaled up so every layer fires."""
    extra = {"arch": "cnn", "channels": [3, 4], "hidden": [12], "pool": 2} if arch == "cnn" else {"hidden": [16]}
    cfg = NetworkConfig(backend=model, bias=True, spiking=SpikingConfig(T=8, output_spikes=False),
                        neuron={"integration": rule}, **extra)
    net = build_net(cfg, (1, 8, 8), 10, seed=seed)
    with torch.no_grad():
        for la in net.layers:
            la.synapse.weight.mul_(4.0)
    return net


def _compare(net, res, x: torch.Tensor) -> None:
    with torch.no_grad():
        logits = net(x)
    for la in net.layers[:-1]:
        ref = la.state.out.reshape(*la.state.out.shape[:2], -1).numpy().astype(bool)
        assert ref.sum() > 0, la.name
        np.testing.assert_array_equal(res.spikes[la.name], ref, err_msg=la.name)
    assert set(res.spikes) == {la.name for la in net.layers[:-1]}  # the LI / CubaLI readout: no spikes
    np.testing.assert_allclose(res.mem_out, net.layers[-1].state.mem.numpy(), atol=1e-4)
    np.testing.assert_array_equal(res.predicted, logits.argmax(1).numpy())


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("model", MODELS)
def test_nir_exact_models_agree_spike_for_spike(model: str, rule: str) -> None:
    """MLP and CNN of each NIR-exact model and rule: Brian2 built from the graph's nodes gives
    bioplaus's spikes in every layer, its readout membrane and its classes; no note."""
    x = _digits(5)
    for arch in ("mlp", "cnn"):
        net = _net(model, rule, arch)
        res = simulate_brian2(to_nir(net), x, mode="numpy")
        assert res.note == ""
        _compare(net, res, x)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("model", MODELS)
def test_folded_and_unfolded_graphs_give_the_same_spikes(model: str, rule: str) -> None:
    """r folded into the synapses (`to_nir`'s default for lif_nir and cuba_lif; if_nir's graph
    is unchanged) is exact: on the tiny MLP and CNN, the folded and the unfolded graph give
    the same spike trains (so equal counts) in every layer and the same classes, read by
    bioplaus's ``from_nir`` (float32; logits to 1e-5) and by Brian2 from the graph
    (float64; readout membrane to 1e-9)."""
    x = _digits(4)
    for arch in ("mlp", "cnn"):
        net = _net(model, rule, arch)
        plain, folded = to_nir(net, fold_r=False), to_nir(net)
        assert bool(folded.metadata.get("r_folded")) == (model != "if_nir")
        a, b = from_nir(plain), from_nir(folded)
        with torch.no_grad():
            la, lb = a(x), b(x)
        for p, q in zip(a.layers[:-1], b.layers[:-1]):
            assert p.state.out.sum() > 0, p.name
            assert torch.equal(p.state.out, q.state.out), (arch, p.name)
        torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-5)
        ra = simulate_brian2(plain, x, mode="numpy")
        rb = simulate_brian2(folded, x, mode="numpy")
        assert set(ra.spikes) == set(rb.spikes)
        for k in ra.spikes:
            np.testing.assert_array_equal(rb.spikes[k], ra.spikes[k], err_msg=f"{arch} {k}")
        np.testing.assert_allclose(rb.mem_out, ra.mem_out, rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(rb.predicted, ra.predicted)


def test_metadata_stripped_graph_with_dt_and_rule_given() -> None:
    """A cuba_lif CNN graph without any metadata, read with dt, the rule and T passed, gives the
    same spikes; read with the other rule it does not."""
    net = _net("cuba_lif", "euler", "cnn")
    x = _digits(4)
    g = to_nir(net)
    g.metadata = {}
    for node in g.nodes.values():
        if hasattr(node, "metadata"):
            node.metadata = {}
    _compare(net, simulate_brian2(g, x, mode="numpy", dt=1e-3, integration="euler", T=8), x)
    other = simulate_brian2(g, x, mode="numpy", dt=1e-3, integration="exact", T=8)
    assert not np.array_equal(other.spikes["layer0"], net.layers[0].state.out.reshape(8, 4, -1).numpy() > 0)


@pytest.mark.parametrize("rule", RULES)
def test_default_lif_graph_is_read_as_the_spec_says(rule: str) -> None:
    """The default subtractive-reset net's graph: Brian2 reads each LIF node as the spec (reset
    to v_reset at once, the weights as written), i.e. as the lif_nir model reads that graph, and
    its note names the subtractive reset and the firing output; bioplaus's reading differs."""
    cfg = NetworkConfig(backend="spiking", hidden=[16], bias=True, spiking=SpikingConfig(T=10))
    net = build_net(cfg, (1, 8, 8), 10, seed=1)
    with torch.no_grad():
        for la in net.layers:
            la.synapse.weight.mul_(3.0)
    g = to_nir(net, integration=rule)
    x = _digits(6)
    res = simulate_brian2(g, x, mode="numpy")
    assert res.note.startswith("Brian2 reads the graph as the NIR spec states it; bioplaus's reading differs: ")
    assert "lif0: reset subtracts v_threshold one step after the spike" in res.note
    assert "li1: bioplaus's output layer also fires" in res.note
    assert "forward Euler's" not in res.note  # read with the graph's own rule: the decay agrees
    spec = from_nir(g, model="lif_nir")  # the NIR-exact reading of the same nodes
    assert spec.layers[0].neuron.params.integration == rule
    _compare(spec, res, x)
    ref = simulate_bioplaus(g, x)
    assert not np.array_equal(ref.spikes["layer0"], res.spikes["layer0"])  # the subtractive reset differs


@pytest.mark.parametrize("encoder", ["direct", "poisson"])
def test_plain_default_lif_graph_agrees_and_has_no_note(encoder: str) -> None:
    """reset = "zero", a non-firing output and "exact": the one plain configuration of the
    default model; Brian2 from the graph gives bioplaus's spikes (float64 vs float32). A
    Poisson encoder (no NIR node) is bioplaus's encoding held over each step, and noted."""
    cfg = NetworkConfig(backend="spiking", hidden=[16], bias=True,
                        spiking=SpikingConfig(T=10, reset="zero", output_spikes=False, encoder=encoder))
    net = build_net(cfg, (1, 8, 8), 10, seed=2)
    with torch.no_grad():
        for la in net.layers:
            la.synapse.weight.mul_(3.0)
    g = to_nir(net, integration="exact")
    x = _digits(6)
    torch.manual_seed(0)
    res = simulate_brian2(g, x, mode="numpy")
    if encoder == "direct":
        assert res.note == ""
        _compare(net, res, x)
    else:
        assert res.note.endswith("input: bioplaus feeds poisson spikes of the sample (metadata encoder); the graph "
                                 "has no encoder node")
        torch.manual_seed(0)
        ref = simulate_bioplaus(g, x)
        np.testing.assert_array_equal(res.spikes["layer0"], ref.spikes["layer0"])
        assert res.spikes["layer0"].sum() > 0
        np.testing.assert_array_equal(res.predicted, ref.predicted)


def test_conv_and_pool_matrices_match_torch() -> None:
    """The unrolled convolution (stride, padding, dilation, groups) and the pool matrix are
    torch's conv2d and sum/avg pool on flat C-order samples."""
    from bioplaus.export.nir_layers import Conv

    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 1, 3, 2, generator=g, dtype=torch.float64)
    x = torch.randn(2, 9, 7, generator=g, dtype=torch.float64)
    conv = Conv((2, 1), (1, 1), (1, 2), 2)
    ref = torch.nn.functional.conv2d(x[None], w, None, conv.stride, conv.padding, conv.dilation, conv.groups)[0]
    m = conv_matrix(w.numpy(), conv, tuple(x.shape), tuple(ref.shape))
    np.testing.assert_allclose(m @ x.numpy().ravel(), ref.numpy().ravel(), atol=1e-12)
    p = pool_matrix((2, 9, 7), 3, 1.0 / 9)
    np.testing.assert_allclose(p @ x.numpy().ravel(), torch.nn.functional.avg_pool2d(x[None], 3)[0].numpy().ravel(),
                               atol=1e-12)


def test_simulate_command_says_what_differs(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bioplaus simulate G.nir --backend brian2` prints the note line for a default-LIF graph
    and records it with the logits."""
    from bioplaus.cli import main
    from bioplaus.record import open_run

    net = build_net(NetworkConfig(backend="spiking", hidden=[7], spiking=SpikingConfig(T=5)), (1, 8, 8), 10, seed=2)
    g = to_nir(net)
    g.metadata["dataset"] = "digits"
    nir.write(tmp_path / "d.nir", g)
    out = tmp_path / "s.h5"
    assert main(["simulate", str(tmp_path / "d.nir"), "--mode", "numpy", "--samples", "3", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("note: Brian2 reads the graph as the NIR spec states it")
    with open_run(out) as run:
        assert run.config["simulate"]["reading"] == "graph"
    assert main(["simulate", str(tmp_path / "d.nir"), "--mode", "numpy", "--integration", "rk4"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["runtime", "standalone"])
def test_compiled_modes_agree(mode: str, tmp_path) -> None:
    """Cython and C++ standalone keep the schedule (same-step spikes): the same spikes as bioplaus."""
    net = _net("cuba_lif", "exact", "cnn")
    x = _digits(3)
    _compare(net, simulate_brian2(to_nir(net), x, mode=mode, cache_dir=tmp_path / "sa"), x)


@pytest.mark.parametrize(("edit", "kw", "match"), [
    (lambda g: g.metadata.update(dt="1ms"), {}, "dt='1ms': expected a positive number"),
    (lambda g: g.metadata.update(T=2.5), {}, "T=2.5: expected an integer"),
    (lambda g: None, {"integration": "rk4"}, "integration='rk4'"),
    (lambda g: setattr(g.nodes["lif0"], "tau", np.full(16, -1e-3)), {}, "node 'lif0': tau must be > 0"),
    (lambda g: setattr(g.nodes["lif0"], "r", np.full(3, 1.0)), {}, "node 'lif0': r has 3 values for 16 neurons"),
    (lambda g: setattr(g.nodes["lif0"], "v_threshold", np.full(16, np.nan)), {}, "v_threshold holds NaN"),
])
def test_bad_graphs_are_one_line_errors(edit, kw: dict, match: str) -> None:
    from bioplaus.errors import NIRFileError

    g = to_nir(_net("lif_nir", "exact", "mlp"))
    edit(g)
    with pytest.raises(NIRFileError, match=match) as e:
        simulate_brian2(g, _digits(2), mode="numpy", **kw)
    assert "\n" not in str(e.value)
