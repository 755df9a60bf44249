"""Raw peer importers on tiny NIR-exact graphs (benchmarks/nir_raw_peers.py; each peer optional).

Where a peer reads a graph right, its spikes must equal bioplaus's in every layer and its
class must agree; where it does not, the defect docs/export.md ("Raw peers") reports is
asserted, so that a peer release that fixes it fails here and the docs must change.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

pytest.importorskip("nir")
pytest.importorskip("nirtorch")

from benchmarks import nir_raw_peers as raw  # noqa: E402
from bioplaus.config import NetworkConfig, SpikingConfig  # noqa: E402
from bioplaus.export.nir import to_nir  # noqa: E402
from bioplaus.nets import build_net  # noqa: E402

T, DT = 25, 1e-3


def tiny(model: str, rule: str, r: float | None = None, fold_r: bool | None = None,
         **neuron: object) -> tuple[torch.nn.Module, object]:
    """A 12-16-8-4 NIR-exact net (random weights, scaled so that every hidden layer fires)
    and its graph (``fold_r`` as `to_nir`'s: default folded for lif_nir and cuba_lif); r = None
    is the model's default (τ/dt for LIF, 1/dt for IF)."""
    if r is not None:
        neuron["r"] = r
    cfg = NetworkConfig(backend=model, hidden=[16, 8], bias=False,
                        spiking=SpikingConfig(T=T, dt=DT, output_spikes=False), neuron={"integration": rule, **neuron})
    net = build_net(cfg, (12,), 4, seed=0)
    gain = 3.0 * (5.0 / r if (r is not None and model == "lif_nir") else 1.0)
    with torch.no_grad():
        for la in net.layers:
            la.synapse.weight.mul_(gain)
    return net, to_nir(net, fold_r=fold_r)


def reference(net: torch.nn.Module, x: torch.Tensor) -> tuple[list[np.ndarray], np.ndarray]:
    with torch.no_grad():
        logits = net(x)
    spikes = [la.state.out.numpy() for la in net.layers[:-1]]
    assert all(s.mean() > 0.02 for s in spikes)  # every hidden layer fires
    return spikes, logits.argmax(-1).numpy()


def run(peer: str, net: torch.nn.Module, graph: object, readout: bool = False) -> tuple[list[np.ndarray], np.ndarray,
                                                                                       list[np.ndarray], np.ndarray]:
    x = torch.rand(8, 12, generator=torch.Generator().manual_seed(1))
    ref, cls = reference(net, x)
    res = raw.run(peer, copy.deepcopy(graph), x, DT, T, readout=readout)
    names = raw.neuron_nodes(graph)[:-1]
    return [res.spikes[k] for k in names], res.out.sum(0).argmax(-1), ref, cls


def same(peer: str, net: torch.nn.Module, graph: object, readout: bool = False) -> None:
    got, got_cls, ref, cls = run(peer, net, graph, readout)
    for g, s in zip(got, ref):
        np.testing.assert_array_equal(g, s)
    np.testing.assert_array_equal(got_cls, cls)


def counts_differ(peer: str, net: torch.nn.Module, graph: object, readout: bool = False) -> float:
    """Fraction of (sample, neuron) pairs of the first layer whose count differs from bioplaus's."""
    got, _, ref, _ = run(peer, net, graph, readout)
    return float((got[0].sum(0) != ref[0].sum(0)).mean())


# ----------------------------------------------------------------------------- SpikingJelly
def test_spikingjelly_reads_euler_lif_and_if_exactly() -> None:
    """SpikingJelly 2.0 (dt given) is bioplaus's forward-Euler LIF (r = τ/dt or 1) and IF
    (r = 1/dt); it lacks only the LI read-out node."""
    pytest.importorskip("spikingjelly.activation_based.nir_exchange")
    net, g = tiny("lif_nir", "euler")
    with pytest.raises(ValueError, match="LI"):
        raw.load_only("spikingjelly", copy.deepcopy(g), DT)
    same("spikingjelly", net, g, readout=True)
    same("spikingjelly", *tiny("lif_nir", "euler", r=1.0), readout=True)
    same("spikingjelly", *tiny("if_nir", "exact"), readout=True)
    # an exact graph read by its Euler step: counts differ
    assert counts_differ("spikingjelly", *tiny("lif_nir", "exact"), readout=True) > 0.02
    # CubaLIF: only w_in = τ_syn/dt and r = τ_mem/dt are accepted (so neither the unfolded
    # graph, w_in = 1, nor the folded one, r = 1)
    with pytest.raises(ValueError, match="w_in"):
        raw.load_only("spikingjelly", tiny("cuba_lif", "euler", fold_r=False)[1], DT, readout=True)
    with pytest.raises(ValueError, match="r must equal tau_mem"):
        raw.load_only("spikingjelly", tiny("cuba_lif", "euler")[1], DT, readout=True)


# ----------------------------------------------------------------------------- Norse
def test_norse_reads_r1_euler_lif_and_if_exactly() -> None:
    """Norse 1.1 (dt given) is right where r = 1 (LIF, euler) and on IF; it drops the LI
    node (its output is then the last synapse's current) and ignores r."""
    pytest.importorskip("norse")
    net, g = tiny("lif_nir", "euler", r=1.0)
    same("norse", net, g, readout=True)
    got, _, ref, _ = run("norse", net, g)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)
    res = raw.run("norse", copy.deepcopy(g), torch.rand(3, 12), DT, T)
    with torch.no_grad():
        cur = net.layers[-1].synapse(torch.as_tensor(res.spikes["lif1"]))
    np.testing.assert_allclose(res.out, cur.numpy(), rtol=1e-5, atol=1e-5)  # LI dropped: the current
    same("norse", *tiny("if_nir", "euler"), readout=True)
    # the default r = τ/dt is ignored: the input is 1/r of the graph's
    assert counts_differ("norse", *tiny("lif_nir", "euler", fold_r=False), readout=True) > 0.1


def test_norse_reads_the_folded_default_euler_lif_graph() -> None:
    """The default export folds r = τ/dt into the synapses (nodes r = 1): Norse, which ignores
    r, then reads the default lif_nir euler net spike for spike in every layer, class for
    class, where it read the unfolded graph's counts wrong (previous test)."""
    pytest.importorskip("norse")
    net, g = tiny("lif_nir", "euler")
    assert g.metadata["r_folded"] is True
    assert all(np.all(np.asarray(n.r) == 1.0) for n in g.nodes.values() if hasattr(n, "r"))
    same("norse", net, g, readout=True)
    got, _, ref, _ = run("norse", net, g)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a.sum(0), b.sum(0))  # equal spike counts
    assert counts_differ("norse", net, to_nir(net, fold_r=False), readout=True) > 0.1


# ----------------------------------------------------------------------------- snntorch
def test_snntorch_raw_importer_defects() -> None:
    """snntorch 1.0: no LI/CubaLI node; dt = 1e-4 hard-coded for LIF; IF and CubaLIF refuse r ≠ 1."""
    pytest.importorskip("snntorch")
    net, g = tiny("lif_nir", "euler")
    with pytest.raises(ValueError, match="LI"):
        raw.load_only("snntorch", copy.deepcopy(g), DT)
    assert counts_differ("snntorch", net, g, readout=True) > 0.1
    with pytest.raises(AssertionError, match="r"):
        raw.load_only("snntorch", tiny("if_nir", "euler")[1], DT, readout=True)
    with pytest.raises(AssertionError, match="r not supported"):
        raw.load_only("snntorch", tiny("cuba_lif", "euler")[1], DT, readout=True)


# ----------------------------------------------------------------------------- Sinabs, Rockpool, Spyx
def test_sinabs_raw_importer_defects() -> None:
    """Sinabs 3.1: no dt; LI needs r = 1 (the folded graph has it); nir.Linear is not mapped
    (KeyError on its node)."""
    pytest.importorskip("sinabs")
    with pytest.raises(ValueError, match="r"):
        raw.load_only("sinabs", tiny("lif_nir", "euler", fold_r=False)[1], DT)
    with pytest.raises(KeyError, match="syn0"):
        raw.load_only("sinabs", tiny("lif_nir", "euler")[1], DT)
    with pytest.raises(KeyError, match="syn0"):
        raw.load_only("sinabs", tiny("lif_nir", "euler", r=1.0)[1], DT)


def test_rockpool_raw_importer_defects() -> None:
    """Rockpool 3.1: no dt; reads nir.LIF's τ as ``tau_mem`` (AttributeError); no IF, CubaLI, Conv2d."""
    pytest.importorskip("rockpool")
    with pytest.raises(AttributeError, match="tau_mem"):
        raw.load_only("rockpool", tiny("lif_nir", "euler")[1], DT)
    with pytest.raises(NotImplementedError, match="IF"):
        raw.load_only("rockpool", tiny("if_nir", "euler")[1], DT)


@pytest.mark.slow  # JAX's first compilation: ~15 s
def test_spyx_raw_importer_defects() -> None:
    """Spyx 1.0 (JAX): LI only as PSU_LIF with a Threshold; its LIF / CubaLIF reset by
    subtraction from the previous step's membrane, so CubaLIF counts differ."""
    pytest.importorskip("spyx.nir")
    with pytest.raises(ValueError, match="LI"):
        raw.load_only("spyx", tiny("lif_nir", "euler")[1], DT)
    assert counts_differ("spyx", *tiny("cuba_lif", "euler")) > 0.1
