"""NIR export: round trip to identical spikes; the τ/R mapping reproduces the discrete LIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from bioplaus.cli import main  # noqa: E402
from bioplaus.config import NetworkConfig, SpikingConfig  # noqa: E402
from bioplaus.errors import BioplausError  # noqa: E402
from bioplaus.export.nir import export_nir, from_nir, load_net, to_nir  # noqa: E402
from bioplaus.nets import build_net  # noqa: E402


def _net(**kw) -> torch.nn.Module:  # noqa: ANN003
    cfg = NetworkConfig(backend="spiking", hidden=[20, 12], spiking=SpikingConfig(T=15, **kw))
    net = build_net(cfg, (1, 6, 6), 4, seed=2)
    with torch.no_grad():
        for la in net.layers:
            la.synapse.weight.mul_(4)
    return net


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_round_trip_identical_spikes(tmp_path: Path, reset: str) -> None:
    net = _net(reset=reset, tau=7e-3, dt=5e-4)
    path = export_nir(net, tmp_path / "n.nir")
    back = from_nir(path)
    x = torch.rand(6, 1, 6, 6)
    with torch.no_grad():
        a = net(x)
        b = back(x)
    for l1, l2 in zip(net.layers, back.layers):
        assert torch.equal(l1.state.out, l2.state.out)
    assert torch.allclose(a, b, atol=1e-5)
    assert back.layers[0].neuron.params.reset == reset
    assert back.dt == pytest.approx(5e-4) and back.T == 15
    assert float(net.layers[0].state.out.mean()) > 0.01  # the net does spike


def test_nir_lif_euler_step_is_the_discrete_lif() -> None:
    """Euler-integrating NIR's τ dv/dt = −v + R I with the exported τ, R gives β v + I."""
    net = _net()
    g = to_nir(net)
    lif = g.nodes["lif0"]
    dt = g.metadata["dt"]
    tau, r = float(lif.tau[0]), float(lif.r[0])
    v, i_in = 0.3, 0.7
    v_next = v + dt / tau * (-v + r * i_in)
    beta = net.layers[0].neuron.params.beta
    assert v_next == pytest.approx(beta * v + i_in, rel=1e-6)
    assert g.metadata["reset"] == "subtract" and bool(g.metadata["reset_delay"])


def test_graph_shape() -> None:
    g = to_nir(_net())
    kinds = {k: type(v).__name__ for k, v in g.nodes.items()}
    assert kinds["syn0"] == "Linear" and kinds["lif0"] == "LIF" and kinds["flat0"] == "Flatten"
    assert ("lif2", "output") in g.edges
    np.testing.assert_array_equal(g.nodes["syn1"].weight.shape, (12, 20))


def test_refusals() -> None:
    rate = build_net(NetworkConfig(backend="rate", hidden=[4]), (1, 4, 4), 2)
    with pytest.raises(BioplausError, match="rate backend"):
        to_nir(rate)
    cnn = build_net(NetworkConfig(backend="spiking", arch="cnn", channels=[2], hidden=[]), (1, 4, 4), 2)
    with pytest.raises(BioplausError, match="max-pool"):
        to_nir(cnn)


def test_export_command_from_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "e.toml"
    cfg.write_text(
        "name='e'\n[data]\ndataset='digits'\nlimit_train=256\n[network]\nbackend='spiking'\n"
        "hidden=[16]\n[network.spiking]\nT=5\n[train]\nepochs=1\nreport=false\n"
    )
    run = tmp_path / "e.h5"
    assert main(["run", str(cfg), "--out", str(run), "--quiet"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "e.nir")]) == 0
    assert "NIR graph" in capsys.readouterr().out
    trained = load_net(run)
    back = from_nir(tmp_path / "e.nir")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(trained(x), back(x), atol=1e-5)
    assert main(["export", str(tmp_path / "missing.h5")]) == 2
