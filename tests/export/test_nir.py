"""NIR export: round trip to identical spikes, the parameter mapping, metadata, refusals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from bioplaus.cli import main  # noqa: E402
from bioplaus.config import NetworkConfig, SpikingConfig  # noqa: E402
from bioplaus.errors import BioplausError, NIRFileError  # noqa: E402
from bioplaus.export.nir import export_nir, from_nir, load_net, nir_beta, to_nir  # noqa: E402
from bioplaus.nets import build_net  # noqa: E402


def _net(bias: bool = False, **kw) -> torch.nn.Module:  # noqa: ANN003
    cfg = NetworkConfig(backend="spiking", hidden=[20, 12], bias=bias, spiking=SpikingConfig(T=15, **kw))
    net = build_net(cfg, (1, 6, 6), 4, seed=2)
    with torch.no_grad():
        for la in net.layers:
            la.synapse.weight.mul_(4)
    return net


def _same_spikes(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        la, lb = a(x), b(x)
    for l1, l2 in zip(a.layers, b.layers):
        assert torch.equal(l1.state.out, l2.state.out)
    assert torch.equal(la, lb)


@pytest.mark.parametrize("integration", ["euler", "exact"])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_round_trip_identical_spikes(tmp_path: Path, reset: str, integration: str) -> None:
    net = _net(reset=reset, tau=7e-3, dt=5e-4, bias=True)
    path = export_nir(net, tmp_path / "n.nir", integration=integration)
    back = from_nir(path)
    x = torch.rand(6, 1, 6, 6)
    _same_spikes(net, back, x)
    for a, b in zip(net.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)  # float32 weights recovered bit for bit from the scaled float64
    assert back.layers[0].neuron.params.reset == reset
    assert back.dt == pytest.approx(5e-4) and back.T == 15 and back.input_shape == (1, 6, 6)
    assert float(net.layers[0].state.out.mean()) > 0.01  # the net does spike


@pytest.mark.parametrize("integration", ["euler", "exact"])
def test_nir_lif_step_is_the_discrete_lif(integration: str) -> None:
    """Integrating τ dv/dt = −v + r I' over dt with the written τ, r, W' gives β v + W x."""
    net = _net()
    g = to_nir(net, integration=integration)
    lif, syn = g.nodes["lif0"], g.nodes["syn0"]
    dt = g.metadata["dt"]
    tau, r = float(lif.tau[0]), float(lif.r[0])
    assert r == 1.0 and float(lif.v_reset[0]) == 0.0
    w = net.layers[0].synapse.weight.detach().double().numpy()
    x = np.random.default_rng(0).random(36)
    v = np.full(20, 0.3)
    if integration == "euler":
        v_next = v + dt / tau * (-v + r * syn.weight @ x)
    else:  # exact solution with the input held over the step
        v_next = np.exp(-dt / tau) * v + (1 - np.exp(-dt / tau)) * r * (syn.weight @ x)
    beta = net.layers[0].neuron.params.beta
    np.testing.assert_allclose(v_next, beta * v + w @ x, rtol=1e-9)
    assert nir_beta(tau, dt, integration) == pytest.approx(beta, rel=1e-12)


def test_metadata_present() -> None:
    g = to_nir(_net(reset="zero"), extra_metadata={"dataset": "digits"})
    m = g.metadata
    for key in ("dt", "T", "integration", "beta", "input_scale", "reset", "reset_delay", "readout",
                "output_spikes", "encoder", "n_classes", "input_shape", "producer", "dataset"):
        assert key in m, key
    assert m["reset"] == "zero" and m["integration"] == "euler" and m["readout"] == "mem_mean"
    assert m["input_scale"] == pytest.approx(1 / (1 - m["beta"]))
    assert g.nodes["lif0"].metadata["reset"] == "zero"  # on the node too: v_reset alone cannot say it


def test_graph_shape() -> None:
    g = to_nir(_net())
    kinds = {k: type(v).__name__ for k, v in g.nodes.items()}
    # MLP: the Input takes the flat sample (no Flatten(start_dim=0) to trip batched peers)
    assert "flat0" not in kinds and list(g.nodes["input"].input_type["input"]) == [36]
    assert kinds["syn0"] == "Linear" and kinds["lif0"] == "LIF" and kinds["li2"] == "LI"
    assert ("li2", "output") in g.edges  # the readout (output membrane) is in the graph
    np.testing.assert_array_equal(g.nodes["syn1"].weight.shape, (12, 20))
    g2 = to_nir(_net(), li_readout=False)
    assert isinstance(g2.nodes["lif2"], nir.LIF)
    cnn = build_net(NetworkConfig(backend="spiking", arch="cnn", channels=[2], pool=1, hidden=[]), (1, 4, 4), 2)
    g3 = to_nir(cnn)
    assert isinstance(g3.nodes["flat1"], nir.Flatten) and g3.nodes["flat1"].start_dim == 0


def test_li_readout_is_exact_without_output_spikes(tmp_path: Path) -> None:
    """An output layer that only integrates is the LI node: a reader of the graph gets the logits."""
    net = _net(output_spikes=False)
    g = to_nir(net)
    x = torch.rand(5, 1, 6, 6)
    with torch.no_grad():
        logits = net(x)
    li = g.nodes["li2"]
    beta = nir_beta(float(li.tau[0]), g.metadata["dt"], "euler")
    s_in = net.layers[1].state.out.double().numpy()  # spikes into the last synapse
    v = np.zeros((5, 4))
    acc = np.zeros((5, 4))
    for t in range(net.T):  # Euler on the node as written
        v = v + (1 - beta) * (-v + s_in[t] @ g.nodes["syn2"].weight.T)
        acc += v
    np.testing.assert_allclose(acc / net.T, logits.numpy(), rtol=1e-4, atol=1e-5)


def test_refusals() -> None:
    rate = build_net(NetworkConfig(backend="rate", hidden=[4]), (1, 4, 4), 2)
    with pytest.raises(BioplausError, match="rate backend"):
        to_nir(rate)
    cnn = build_net(NetworkConfig(backend="spiking", arch="cnn", channels=[2], hidden=[]), (1, 4, 4), 2)
    # max-pool used to be refused; it is now SumPool2d → Threshold(0.5), exact on spikes
    # (tests/export/test_nir_conv.py checks the spikes)
    kinds = [type(n).__name__ for n in to_nir(cnn).nodes.values()]
    assert kinds[kinds.index("SumPool2d") + 1] == "Threshold"
    with pytest.raises(BioplausError, match="integration"):
        to_nir(_net(), integration="rk4")


def test_unsupported_node_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = to_nir(_net())
    g.nodes["lif0"] = nir.Delay(delay=np.ones(20))
    path = tmp_path / "delay.nir"
    nir.write(path, g)
    with pytest.raises(NIRFileError) as info:
        from_nir(path)
    msg = str(info.value)
    assert "\n" not in msg and "'lif0'" in msg and "unsupported node Delay" in msg
    assert main(["simulate", str(path), "--backend", "bioplaus", "--data", "digits", "--samples", "2",
                 "--out", str(tmp_path / "r.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unsupported node Delay" in err[0] and not (tmp_path / "r.h5").exists()


def test_reads_peer_parameterisation() -> None:
    """A graph in snntorch's convention (τ = dt/(1-β), r = τ/dt, scalar τ, no metadata) reads right."""
    beta, dt = 0.8, 1e-4
    tau = dt / (1 - beta)
    rng = np.random.default_rng(1)
    w0, w1 = rng.normal(0, 1.5, (7, 5)), rng.normal(0, 1.5, (3, 7))

    def lif(n: int) -> object:
        return nir.LIF(tau=np.array(tau), r=np.array(tau / dt), v_leak=np.array(0.0),
                       v_threshold=np.array(1.0), v_reset=np.array(0.0 * n))

    g = nir.NIRGraph(nodes={"input": nir.Input({"input": np.array([5])}), "0": nir.Linear(weight=w0),
                            "1": lif(7), "2": nir.Linear(weight=w1), "3": lif(3),
                            "output": nir.Output({"output": np.array([3])})},
                     edges=[("input", "0"), ("0", "1"), ("1", "2"), ("2", "3"), ("3", "output")],
                     type_check=False)
    net = from_nir(g)
    assert net.dt == pytest.approx(1e-4) and net.layers[0].neuron.params.beta == pytest.approx(0.8)
    assert net.layers[0].neuron.params.reset == "zero"  # what the node says
    np.testing.assert_allclose(net.layers[1].synapse.weight.detach().double().numpy(), w1, rtol=1e-6)
    assert from_nir(g, reset="subtract").layers[0].neuron.params.reset == "subtract"


@pytest.mark.parametrize("rule", ["backprop", "ccl"])
def test_export_command_from_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], rule: str) -> None:
    cfg = tmp_path / "e.toml"
    cfg.write_text(
        "name='e'\n[data]\ndataset='digits'\nlimit_train=128\nlimit_test=64\n[network]\nbackend='spiking'\n"
        f"hidden=[16]\n[network.spiking]\nT=5\n[rule]\nname='{rule}'\nlr=0.05\n[train]\nepochs=1\nreport=false\n"
    )
    run = tmp_path / "e.h5"
    assert main(["run", str(cfg), "--out", str(run), "--quiet"]) == 0
    assert main(["export", str(run), "--nir", str(tmp_path / "e.nir")]) == 0
    assert "NIR graph" in capsys.readouterr().out
    trained = load_net(run)
    back = from_nir(tmp_path / "e.nir")
    _same_spikes(trained, back, torch.rand(8, 1, 8, 8))
    g = nir.read(tmp_path / "e.nir")
    assert str(g.metadata["dataset"]) == "digits"
    assert main(["export", str(tmp_path / "missing.h5")]) == 2
    assert main(["export", str(run), "--nir", str(tmp_path / "e.nir")]) == 2  # never replaced unasked
    assert main(["export", str(run), "--nir", str(tmp_path / "e.nir"), "--overwrite"]) == 0
    capsys.readouterr()
    # not a regular file: refused in one line, with or without --overwrite
    for target in (tmp_path, Path("/dev/null")):
        assert main(["export", str(run), "--nir", str(target), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "the NIR file" in err
    # the older spelling still works
    assert main(["export", str(run), "--format", "nir", "--out", str(tmp_path / "f.nir")]) == 0
    assert math.isclose(float(nir.read(tmp_path / "f.nir").metadata["dt"]), 1e-3)


def test_reads_graphs_of_the_first_exporter() -> None:
    """Graphs written before this format (r = τ/dt, unscaled float32 weights, Flatten, LIF output)."""
    net = _net()
    dt, beta = net.dt, net.layers[0].neuron.params.beta
    tau = dt / (1 - beta)
    nodes = {"input": nir.Input({"input": np.array([1, 6, 6])}),
             "flat0": nir.Flatten({"input": np.array([1, 6, 6])}, start_dim=0)}
    edges, prev = [("input", "flat0")], "flat0"
    for la in net.layers:
        n = la.n_out
        nodes[f"syn{la.index}"] = nir.Linear(weight=la.synapse.weight.detach().numpy())
        nodes[f"lif{la.index}"] = nir.LIF(tau=np.full(n, tau, np.float32), r=np.full(n, tau / dt, np.float32),
                                          v_leak=np.zeros(n, np.float32), v_threshold=np.ones(n, np.float32),
                                          v_reset=np.zeros(n, np.float32))
        edges += [(prev, f"syn{la.index}"), (f"syn{la.index}", f"lif{la.index}")]
        prev = f"lif{la.index}"
    nodes["output"] = nir.Output({"output": np.array([4])})
    edges.append((prev, "output"))
    meta = {"producer": "bioplaus 0.1.0", "dt": dt, "T": 15, "reset": "subtract", "reset_delay": True,
            "surrogate": "atan", "readout": "mem_mean", "encoder": "direct", "n_classes": 4}
    back = from_nir(nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False))
    x = torch.rand(5, 1, 6, 6)
    with torch.no_grad():
        a, b = net(x), back(x)
    for l1, l2 in zip(net.layers, back.layers):
        assert torch.equal(l1.state.out, l2.state.out)
    torch.testing.assert_close(a, b)  # τ was stored in float32 then: β to ~1e-7
