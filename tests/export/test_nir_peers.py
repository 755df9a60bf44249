"""The exported graph through snntorch's and Norse's importers (test extras; Norse optional).

Each peer's raw importer is run too, so that the defects docs/export.md lists stay measured:
if a peer release fixes one, its test here fails and the docs must change.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("nir")
pytest.importorskip("nirtorch")

from bioplaus.config import NetworkConfig, SpikingConfig  # noqa: E402
from bioplaus.export.nir import from_nir, to_nir  # noqa: E402
from bioplaus.export.peers import neuron_nodes, quiet, run_peer  # noqa: E402
from bioplaus.nets import build_net  # noqa: E402


def _net(**kw) -> torch.nn.Module:  # noqa: ANN003
    cfg = NetworkConfig(backend="spiking", hidden=[24, 16], bias=kw.pop("bias", False),
                        spiking=SpikingConfig(T=16, **kw))
    net = build_net(cfg, (1, 5, 5), 4, seed=3)
    with torch.no_grad():
        for la in net.layers:
            la.synapse.weight.mul_(3)
    return net


def _check(net: torch.nn.Module, graph: object, module: torch.nn.Module, peer: str) -> None:
    x = torch.rand(6, 1, 5, 5)
    with torch.no_grad():
        logits = net(x)
    names = neuron_nodes(graph)
    out, caught = quiet(run_peer, module, net.encode(x.reshape(6, -1)), names, peer)
    for la in net.layers[:-1]:
        np.testing.assert_array_equal(caught[f"lif{la.index}"].numpy(), la.state.out.numpy())
    assert float(net.layers[0].state.out.mean()) > 0.05
    # the LI readout, summed over time by the peer, gives bioplaus's class
    np.testing.assert_array_equal(out.sum(0).argmax(-1).numpy(), logits.argmax(-1).numpy())


@pytest.mark.parametrize("kw", [{"reset": "subtract"}, {"reset": "zero", "bias": True, "output_spikes": False}])
def test_snntorch_adapter_same_spikes(kw: dict) -> None:
    pytest.importorskip("snntorch")
    from bioplaus.export.peers import snntorch_from_nir

    net = _net(**kw)
    g = to_nir(net)
    _check(net, g, quiet(snntorch_from_nir, g), "snntorch")


def test_snntorch_raw_importer_defects() -> None:
    """snntorch 1.0.0: no LI node; on a LIF-output graph, dt = 1e-4 and zero reset."""
    pytest.importorskip("snntorch")
    import snntorch as snn
    from snntorch.import_nir import import_from_nir

    net = _net()
    with pytest.raises(ValueError, match="LI"):
        quiet(import_from_nir, to_nir(net))
    mod = quiet(import_from_nir, to_nir(net, li_readout=False))
    leaky = [m for m in mod.modules() if isinstance(m, snn.Leaky)]
    beta = net.layers[0].neuron.params.beta
    assert leaky and float((leaky[0].beta - beta).abs().min()) > 0.1  # β from dt = 1e-4, not ours
    assert leaky[0].reset_mechanism == "zero"


@pytest.mark.parametrize("kw", [{"reset": "subtract"}, {"reset": "zero", "bias": True, "output_spikes": False}])
def test_norse_adapter_same_spikes(kw: dict) -> None:
    pytest.importorskip("norse")
    from bioplaus.export.peers import norse_from_nir

    net = _net(**kw)
    g = to_nir(net)
    _check(net, g, quiet(norse_from_nir, g), "norse")


def test_norse_raw_importer_defects() -> None:
    """Norse 1.1.0 from_nir(dt=our dt): drops the LI node and resets to 0 at once."""
    pytest.importorskip("norse")
    import norse.torch as nt

    net = _net()
    g = to_nir(net)
    mod = quiet(nt.from_nir, g, dt=net.dt)
    assert "li2" not in dict(mod.named_modules())  # the readout is silently dropped
    x = torch.rand(6, 1, 5, 5)
    with torch.no_grad():
        net(x)
    _, caught = quiet(run_peer, mod, net.encode(x.reshape(6, -1)), neuron_nodes(g), "norse")
    ours = net.layers[0].state.out.sum(0)
    assert not torch.equal(caught["lif0"].sum(0), ours)  # subtract-with-delay is not honoured


def test_reads_snntorch_exporter_graph() -> None:
    """A graph written by snntorch's exporter reads back and gives snntorch's spikes.

    snntorch 1.0.0's ``export_to_nir`` itself fails on nir 1.0.8 (its final
    ``infer_types`` rejects the LIF node's empty input type); its node mapping is used
    through nirtorch directly, which is all ``export_to_nir`` does before that call. The
    file lacks dt (recovered as τ/r), the reset (snntorch subtracts; given here) and the
    readout.
    """
    snn = pytest.importorskip("snntorch")
    import nirtorch
    from snntorch import utils
    from snntorch.export_nir import _extract_snntorch_module

    torch.manual_seed(0)
    lif1 = snn.Leaky(beta=0.8, init_hidden=True)
    lif2 = snn.Leaky(beta=0.8, init_hidden=True, output=True)
    peer = torch.nn.Sequential(torch.nn.Linear(12, 20, bias=False), lif1, torch.nn.Linear(20, 5, bias=False), lif2)
    with torch.no_grad():
        for m in peer:
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(3)
    g = quiet(nirtorch.extract_nir_graph, peer, _extract_snntorch_module, torch.zeros(1, 12),
               model_name="snntorch", ignore_submodules_of=[snn.RLeaky, snn.RSynaptic])
    back = from_nir(g, reset="subtract")
    assert back.dt == pytest.approx(1e-4) and back.layers[0].neuron.params.beta == pytest.approx(0.8, rel=1e-6)
    x = torch.rand(4, 12)
    utils.reset(peer)
    seen: list[torch.Tensor] = []
    hook = lif1.register_forward_hook(lambda _m, _i, o: seen.append(o.clone()))
    with torch.no_grad():
        for _ in range(back.T):
            peer(x)
        back(x)
    hook.remove()
    assert torch.stack(seen).sum() > 10
    assert torch.equal(torch.stack(seen), back.layers[0].state.out)
