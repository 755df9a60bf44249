"""Sizes refused before allocation (issue 26, class 9): Hopfield N x K (x M), the Brian2
twin's N x duration, a simulated graph's T x samples x neurons; each a one-line ConfigError
naming the fields and the size it would need, before the run file exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import bioplaus
import bioplaus.resources as res
from bioplaus.cli import main
from bioplaus.config import load_config
from bioplaus.errors import ConfigError
from bioplaus.experiments.hopfield import pattern_bytes
from bioplaus.hopfield.engines import twin_bytes
from bioplaus.hopfield.theory import MAX_GRID

ROOT = Path(__file__).resolve().parents[2]
SIZE = r"would need about [\d.]+ [KMGTP]iB, more than this machine's memory \([\d.]+ GiB\)$"


def test_pattern_bytes_counts_entries() -> None:
    """25 B per drawn entry (K·N patterns, K·M·N examples), 32 B per coupling row entry."""
    base = 16 * 3 * MAX_GRID
    assert pattern_bytes(100, 3) == 25 * 300 + 32 * 300 + base
    assert pattern_bytes(100, 3, 10) == 25 * 300 * 11 + 32 * 300 + base
    assert pattern_bytes(100, 3, 10, per_example=True) == 25 * 300 * 11 + 32 * 3000 + base
    assert twin_bytes(10, 100) == 33 * 1000 + 76 * 100


def test_hopfield_N_and_K_are_refused_with_the_size(tmp_path: Path) -> None:
    """Was: 23.8 GiB asked of numpy (`hopfield.N=50000000 hopfield.K=64`)."""
    with pytest.raises(ConfigError, match=r"^hopfield\.N x K: 64 patterns of 50000000 neurons " + SIZE):
        load_config(ROOT / "sims" / "hopfield_parallel.toml",
                    ["hopfield.N=50000000", "hopfield.K=64", "hopfield.rule=\"storing\""])
    with pytest.raises(ConfigError, match=r"^hopfield\.N x K x M: 64 patterns of 10000000 neurons with 1000 examples each "):
        load_config(ROOT / "sims" / "hopfield_examples_sup.toml", ["hopfield.N=10000000", "hopfield.K=64", "hopfield.M=1000"])


def test_the_brian2_twin_is_refused_with_the_size(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = ROOT / "sims" / "hopfield_spiking_brian2.toml"
    load_config(sim, ["hopfield.N=4000", "hopfield.spiking.max_neurons=4000"])  # the sim's size fits
    monkeypatch.setattr(res, "physical_memory", lambda: 8 << 30)  # a laptop: 4000 neurons x 100 s do not fit
    need = twin_bytes(4000, 100_000)
    with pytest.raises(ConfigError, match=r"^hopfield\.N x spiking\.duration: the Brian2 twin of 4000 neurons for 100000 "
                                          rf"steps of 0\.001 s would need about {need / 2**30:.1f} GiB, more than this "
                                          r"machine's memory \(8\.0 GiB\)$"):
        load_config(sim, ["hopfield.N=4000", "hopfield.spiking.duration=100"])


def _graph(tmp_path: Path, T: int) -> Path:
    import torch

    from bioplaus.config import NetworkConfig, SpikingConfig
    from bioplaus.export.nir import export_nir
    from bioplaus.nets import build_net

    net = build_net(NetworkConfig(backend="spiking", hidden=[7], spiking=SpikingConfig(T=5)), (1, 8, 8), 10, seed=2)
    with torch.no_grad():
        net.layers[0].synapse.weight.mul_(4)
    return export_nir(net, tmp_path / f"g{T}.nir", extra_metadata={"dataset": "digits", "T": T})


def test_simulate_of_a_graph_declaring_a_million_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Was: 51 GB asked of numpy (T = 10^6 x 100 samples)."""
    g = _graph(tmp_path, 10**6)
    out = tmp_path / "s.h5"
    assert main(["simulate", str(g), "--backend", "bioplaus", "--samples", "100", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"bioplaus: error: simulate\.graph {re.escape(str(g))} \(T=1000000\) x simulate\.samples=100: "
                        r"a simulation of T x samples x neurons = 1000000 x 100 x 81 " + SIZE, err), err
    assert not out.exists()
    # the same graph at T = 5 runs
    g5 = _graph(tmp_path, 5)
    assert bioplaus.run({"kind": "simulate", "simulate": {"graph": str(g5), "backend": "bioplaus", "samples": 4},
                         "train": {"report": False}}, out=tmp_path / "ok.h5", progress=False).status == "done"
