"""The neuron-model seam: the contract on every registered model, capabilities against rule
needs, [network.neuron] options, and a third-party model (ALIF) entering by an entry point."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, tiny_config

import bioplaus
from bioplaus.config import NetworkConfig, SpikingConfig, load_config
from bioplaus.errors import BioplausError, ConfigError
from bioplaus.export.nir import to_nir
from bioplaus.nets import build_net
from bioplaus.neurons import (
    LIFModel,
    LIFParams,
    NeuronModel,
    NotStatable,
    RateModel,
    lif_scan,
    models_with,
    neuron_model,
)
from bioplaus.registry import NEURONS

THIRDPARTY = ROOT / "tests" / "thirdparty"


# ----------------------------------------------------------------------------- the contract


# The contract every registered model keeps (concrete class, frozen parameters, NamedTuple
# state, step vs scan, gradients, what it tells NIR and Brian2) is checked for each by
# tests/test_conformance.py (bioplaus.conformance: check_neuron_*).


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("output", [False, True])
def test_lif_step_loop_is_the_fused_scan(reset: str, output: bool) -> None:
    """The generic scan over LIF's pure step gives the fused scan's spikes and membranes,
    for hidden layers and a non-firing output layer (θ = ∞)."""
    net = NetworkConfig(backend="spiking", spiking=SpikingConfig(reset=reset, output_spikes=False))
    p = LIFModel.params_from(net, output)
    assert math.isinf(p.threshold) == output
    cur = torch.randn(30, 4, 7, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.4
    spk, mem = lif_scan(cur, p)
    spk2, mem2 = NeuronModel.scan.__func__(LIFModel, cur, p)
    assert torch.equal(spk, spk2)
    torch.testing.assert_close(mem, mem2, rtol=0, atol=1e-6)
    assert (spk.sum() == 0) == output


def test_capabilities_and_rule_needs() -> None:
    # every rule's needs against the registered models: bioplaus.conformance.check_rule_needs_met
    assert models_with(frozenset({"static"})) == ["rate"]
    assert RateModel.capabilities() == {"static", "differentiable"}
    assert LIFModel.capabilities() == {"temporal", "differentiable", "spikes"}
    with pytest.raises(ConfigError, match=r"network.backend: rule 'ccl_ae' supports rate, not 'spiking' "
                                          r"\(it needs static neurons\)"):
        load_config(tiny_config(rule={"name": "ccl_ae"}, network={"backend": "spiking", "channels": [4]}))


def test_neuron_options_belong_to_the_model() -> None:
    with pytest.raises(ConfigError, match="network.neuron: neuron model 'spiking' takes no options, got tau_a"):
        load_config(tiny_config(network={"backend": "spiking", "neuron": {"tau_a": 1.0}}))
    with pytest.raises(ConfigError, match="network.neuron: expected a table"):
        load_config(tiny_config(), ["network.neuron=3"])
    # a model without options records the [network] table as before (no "neuron" key)
    assert "neuron" not in load_config(tiny_config()).to_dict()["network"]


def test_a_model_that_nir_cannot_state_says_so() -> None:
    net = build_net(NetworkConfig(backend="rate", hidden=[4]), (6,), 2)
    with pytest.raises(NotStatable, match="neuron model 'rate' is not statable in NIR"):
        to_nir(net)
    with pytest.raises(NotStatable, match="no Brian2 equations"):
        RateModel.brian2(fires=True, reset="subtract", inputs="I_syn")
    assert issubclass(NotStatable, BioplausError)


def test_lif_tells_brian2_its_equations() -> None:
    eq = LIFModel.brian2(fires=True, reset="zero", inputs="I_syn + I_ext")
    assert eq.equations == "dv/dt = -v / tau : 1\nI_syn : 1\nr : 1\ntau : second (constant)\n"
    assert (eq.threshold, eq.reset) == ("v > theta", "r = 1")
    assert eq.step == "v = v * (1 - r) + I_syn + I_ext\nr = 0\nI_syn = 0"
    li = LIFModel.brian2(fires=False, reset="zero", inputs="I_syn")
    assert li.threshold is None and li.step == "v = v + I_syn - theta * r\nr = 0\nI_syn = 0"


def test_unregistered_object_is_not_a_model() -> None:
    NEURONS.register("not_a_model_test", object())
    try:
        with pytest.raises(ConfigError, match="network.backend: 'not_a_model_test' is not a neuron model"):
            neuron_model("not_a_model_test")
    finally:
        NEURONS.unregister("not_a_model_test")


def test_lif_params_are_built_from_the_table() -> None:
    s = SpikingConfig(dt=2e-3, tau=4e-3, threshold=0.5, reset="zero", surrogate="triangle", slope=2.0)
    p = LIFModel.params_from(NetworkConfig(backend="spiking", spiking=s), False)
    assert p == LIFParams(2e-3, 4e-3, 0.5, "zero", "triangle", 2.0)
    with pytest.raises(ConfigError, match="network.spiking.reset: must be 'subtract' or 'zero'"):
        LIFModel.params_from(NetworkConfig(spiking=SpikingConfig(reset="never")), False)


# ----------------------------------------------------------------------------- a third-party model


def _install_alif(site: Path) -> dict[str, str]:
    """A dist-info on ``site`` whose entry point names the ALIF model (no pip, no edit to bioplaus)."""
    info = site / "bioplaus_alif-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bioplaus-alif\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bioplaus.neurons]\nalif = bioplaus_alif:ALIF\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(THIRDPARTY), str(ROOT), env.get("PYTHONPATH", "")])
    return env


ALIF_RUN = """
name = "alif"
seed = 0
[data]
dataset = "digits"
val_fraction = 0.1
batch_size = 32
[network]
backend = "alif"
hidden = [64]
[network.spiking]
T = 8
[network.neuron]
tau_a = 0.02
beta_a = 0.2
[rule]
name = "backprop"
lr = 0.1
[train]
epochs = 2
report = false
[[record.probes]]
layers = ["all"]
variables = ["spikes", "mem"]
every = 20
samples = 4
"""


@pytest.mark.parametrize("rule", [["rule.name=backprop"], ["rule.name=ccl", "rule.lr=0.05"]])
def test_third_party_alif_trains_and_is_recorded(tmp_path: Path, rule: list[str]) -> None:
    """ALIF from tests/thirdparty, registered only by an entry point, trains on digits with
    backprop and with CCL; the run file holds its options, spikes, membranes and metrics."""
    env = _install_alif(tmp_path / "site")
    cfg = tmp_path / "alif.toml"
    cfg.write_text(ALIF_RUN)
    out = tmp_path / "alif.h5"
    sets = [a for s in rule for a in ("--set", s)]
    cli = [sys.executable, "-m", "bioplaus.cli"]
    run = subprocess.run([*cli, "run", str(cfg), "--out", str(out), "--quiet", *sets],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    with bioplaus.open_run(out) as f:
        assert f.status == "done"
        assert f.config["network"]["backend"] == "alif"
        assert f.config["network"]["neuron"] == {"tau_a": 0.02, "beta_a": 0.2}
        assert f.metrics["test_acc"][-1] > 0.2  # ten classes: chance is 0.1
        assert set(f.populations) == {"layer0", "layer1"}
        assert f.spikes("layer0").count > 0
        assert f.trace("layer0.mem").shape[1:] == (8, 4, 64)
    if "rule.name=backprop" in rule:
        lst = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True, timeout=120)
        assert "alif" in next(line for line in lst.stdout.splitlines() if line.startswith("neurons:"))
        bad = subprocess.run([*cli, "run", str(cfg), "--out", str(tmp_path / "bad.h5"), "--set",
                              "network.neuron.tau_a=-1"], env=env, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "network.neuron.tau_a" in bad.stderr
        assert not (tmp_path / "bad.h5").exists()
