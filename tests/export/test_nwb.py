"""``bioplaus simulate`` records a run file; ``bioplaus export --nwb`` writes it as NWB; pynwb reads it back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pynwb = pytest.importorskip("pynwb")
pytest.importorskip("brian2")

from bioplaus.cli import main  # noqa: E402
from bioplaus.config import NetworkConfig, SpikingConfig  # noqa: E402
from bioplaus.export.nir import export_nir  # noqa: E402
from bioplaus.nets import build_net  # noqa: E402
from bioplaus.record import open_run  # noqa: E402


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("nwb")
    cfg = NetworkConfig(backend="spiking", hidden=[10], spiking=SpikingConfig(T=8))
    net = build_net(cfg, (1, 8, 8), 10, seed=1)
    with torch.no_grad():
        net.layers[0].synapse.weight.mul_(4)
    graph = export_nir(net, d / "g.nir", extra_metadata={"dataset": "digits"})
    run = d / "sim.h5"
    # the bioplaus replay records the firing output layer's spikes too (the graph reading records
    # an LI node's membrane only)
    assert main(["simulate", str(graph), "--mode", "numpy", "--reading", "bioplaus", "--samples", "5",
                 "--out", str(run)]) == 0
    return run


def test_simulated_run_file(sim_run: Path) -> None:
    with open_run(sim_run) as run:
        assert run.status == "done" and run.attrs["kind"] == "simulate"
        assert set(run.populations) == {"layer0", "layer1"}
        ev = run.spikes("layer0")
        assert ev.count > 0 and ev.dt == pytest.approx(1e-3)
        assert run.trace("layer1.mem").shape == (1, 8, 5, 10)
        pred = run.array("/simulate/predicted")
        labels = run.array("/simulate/labels")
        assert run.metrics["test_acc"][-1] == pytest.approx(float((pred == labels).mean()))


def test_nwb_round_trip(sim_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim.nwb"
    assert main(["export", str(sim_run), "--nwb", str(out)]) == 0
    assert main(["export", str(sim_run), "--nwb", str(out)]) == 2  # never overwritten unasked
    with open_run(sim_run) as run:
        events = {p: run.spikes(p) for p in run.populations}
        mem = run.trace("layer1.mem")[0]  # [T, S, n]
        x = run.array("/simulate/input")
    T, dt = 8, 1e-3
    with pynwb.NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        units = nwb.units.to_dataframe()
        assert len(units) == 20  # 10 + 10 neurons
        for pop, ev in events.items():
            for n in range(ev.n_neurons):
                row = units[(units.population == pop) & (units.neuron == n)].iloc[0]
                sel = ev.neuron == n
                # one trial per sample, end to end: time = (sample * T + t) * dt
                want = np.sort((ev.sample[sel].astype(np.int64) * T + ev.t[sel]) * dt)
                np.testing.assert_array_equal(np.asarray(row.spike_times), want)
        trials = nwb.trials.to_dataframe()
        assert len(trials) == 5 and trials.stop_time.iloc[-1] == pytest.approx(5 * T * dt)
        ts = nwb.processing["bioplaus"]["layer1.mem"]
        assert ts.rate == pytest.approx(1 / dt)
        np.testing.assert_allclose(np.asarray(ts.data[:T]), mem[:, 0])  # sample 0's window first
        inp = nwb.acquisition["input"]
        assert inp.rate == pytest.approx(1 / dt) and inp.data.shape == (5 * T, 64)
        np.testing.assert_allclose(np.asarray(inp.data[T]), x[1].reshape(-1))
        assert json.loads(nwb.experiment_description)["simulate"]["samples"] == 5
        assert "version" in nwb.notes
