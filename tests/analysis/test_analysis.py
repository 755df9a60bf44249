"""Analyses of a run: spike trains to Neo (Elephant's statistics) and NeuroBench metrics.

Neo: a firing rate and a CV of inter-spike intervals, computed by Elephant on
`SpikeEvents.to_neo` and by numpy on the raw events, agree. NeuroBench: its synaptic
operations, activation and connection sparsity and footprint of a small spiking net match
counts by hand (the effective ACs of the first hidden layer from its recomputed spikes).
Hostile run files give one line and exit 2 on ``inspect --neurobench``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bioplaus.cli import main
from bioplaus.config import load_config
from bioplaus.errors import BioplausError, RunFileError
from bioplaus.nets import build_net
from bioplaus.record import Recorder, open_run

T, DT = 50, 1e-3


def _spike_run(path: Path, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """A run with spikes of population "hidden" at steps 0 and 3 (4 samples x 6 neurons)."""
    cfg = load_config({"name": "neo", "data": {"dataset": "digits"},
                       "network": {"backend": "spiking", "hidden": [6], "spiking": {"T": T}}})
    raw = {}
    with Recorder(path, cfg.to_dict(), cfg.seed, meta={"input_shape": [1, 8, 8], "n_classes": 10}) as rec:
        for step in (0, 3):
            # neuron-dependent rates, neuron 5 silent (an empty train, CV undefined)
            p = np.array([0.05, 0.1, 0.2, 0.3, 0.5, 0.0])
            s = rng.random((T, 4, 6)) < p
            raw[step] = s
            rec.log_spikes("hidden", step, s, dt=DT)
    return raw


def test_to_neo_trains_match_the_events(tmp_path: Path) -> None:
    neo = pytest.importorskip("neo")
    pq = pytest.importorskip("quantities")
    path = tmp_path / "run.h5"
    raw = _spike_run(path, np.random.default_rng(1))
    with open_run(path) as run:
        ev = run.spikes("hidden")
    for step in (0, 3):
        trains = ev.to_neo(step)
        dense = raw[step]
        assert len(trains) == 4 * 6
        for k, tr in enumerate(trains):
            s, n = divmod(k, 6)
            assert isinstance(tr, neo.SpikeTrain)
            assert tr.annotations == {"step": step, "sample": s, "neuron": n}
            assert float(tr.t_start.rescale(pq.s)) == 0.0
            assert float(tr.t_stop.rescale(pq.s)) == pytest.approx(T * DT)
            np.testing.assert_allclose(tr.rescale(pq.s).magnitude, np.flatnonzero(dense[:, s, n]) * DT)
    assert [tr.annotations["step"] for tr in ev.to_neo()] == [3] * 24  # default: the last step
    with pytest.raises(KeyError, match="no spike record at step 1"):
        ev.to_neo(1)


def test_elephant_rate_and_cv_agree_with_numpy(tmp_path: Path) -> None:
    pytest.importorskip("neo")
    pq = pytest.importorskip("quantities")
    stats = pytest.importorskip("elephant.statistics")
    path = tmp_path / "run.h5"
    _spike_run(path, np.random.default_rng(2))
    with open_run(path) as run:
        ev = run.spikes("hidden")
    trains = ev.to_neo(3)
    # numpy on the raw events: rate = count / (T dt), CV = std(ISI) / mean(ISI)
    mask = ev.step == 3
    checked = 0
    for tr in trains:
        s, n = tr.annotations["sample"], tr.annotations["neuron"]
        times = np.sort(ev.t[mask & (ev.sample == s) & (ev.neuron == n)]) * ev.dt
        rate = stats.mean_firing_rate(tr).rescale(pq.Hz).magnitude
        assert float(rate) == pytest.approx(len(times) / (T * DT), rel=1e-12)
        if len(times) >= 3:
            isi = np.diff(times)
            cv = stats.cv(stats.isi(tr).rescale(pq.s).magnitude)
            assert cv == pytest.approx(np.std(isi) / np.mean(isi), rel=1e-9)
            checked += 1
    assert checked >= 12  # neurons 1..4 of every sample fire often enough


def test_to_neo_refuses_too_many_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("neo")
    from bioplaus.record import reader

    path = tmp_path / "run.h5"
    _spike_run(path, np.random.default_rng(3))
    monkeypatch.setattr(reader, "MAX_NEO_TRAINS", 23)
    with open_run(path) as run, pytest.raises(RunFileError, match=r"24 spike trains, more than the 23 cap"):
        run.spikes("hidden").to_neo()


def test_to_neo_without_neo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.h5"
    _spike_run(path, np.random.default_rng(4))
    monkeypatch.setitem(sys.modules, "neo", None)
    with open_run(path) as run, pytest.raises(ImportError, match=r"bioplaus\[analysis\]"):
        run.spikes("hidden").to_neo()


# ------------------------------------------------------------------------ NeuroBench

HIDDEN, T_NB = 16, 6


def _net_run(path: Path) -> torch.nn.Module:
    """A run file holding a small spiking net with some zero weights (no training)."""
    cfg = load_config({"name": "nb", "data": {"dataset": "digits"},
                       "network": {"backend": "spiking", "hidden": [HIDDEN], "spiking": {"T": T_NB}}})
    net = build_net(cfg.network, (1, 8, 8), 10, seed=cfg.seed)
    with torch.no_grad():
        w0, w1 = net.layers[0].synapse.weight, net.layers[1].synapse.weight
        w0.mul_(4.0)  # enough input current that the hidden layer fires
        w0[:, :5] = 0.0  # zero columns: fewer effective MACs than non-zero pixels x fan-out
        w1[:3, :] = 0.0
        w1[:, 7] = 0.0
    with Recorder(path, cfg.to_dict(), cfg.seed, meta={"input_shape": [1, 8, 8], "n_classes": 10}) as rec:
        rec.log_metrics(0, train_loss=1.0)
        for k, v in net.state_dict().items():
            rec.log_array(f"/model/net/{k}", v.numpy())
    return net


def test_neurobench_matches_counts_by_hand(tmp_path: Path) -> None:
    pytest.importorskip("neurobench")
    from bioplaus.analysis.neurobench import neurobench_metrics
    from bioplaus.export.samples import test_samples

    path = tmp_path / "run.h5"
    net = _net_run(path)
    n = 24
    m = neurobench_metrics(path, samples=n, batch_size=10)  # 3 batches, the last one short
    assert m["samples"] == n and m["T"] == T_NB and [r["name"] for r in m["layers"]] == ["layer0", "layer1"]

    # by hand, on bioplaus's own forward pass (spike fast path, W·x broadcast over T)
    x, _ = test_samples("digits", n)
    net.eval()
    with torch.no_grad():
        net(x.reshape(n, 1, 8, 8))
    spikes = net.layers[0].state.out  # [T, B, HIDDEN]
    w0, w1 = net.layers[0].synapse.weight, net.layers[1].synapse.weight
    assert 0.05 < spikes.mean() < 0.95
    fan0, fan1 = (w0 != 0).sum(0).double(), (w1 != 0).sum(0).double()
    # the first hidden layer's spikes drive layer1's synapses: one AC per spike per non-zero weight
    acs1 = float((spikes.double() * fan1).sum()) / n
    macs0 = T_NB * float(((x.reshape(n, 64) != 0).double() * fan0).sum()) / n
    l0, l1 = m["layers"]
    assert l1["effective_acs"] == pytest.approx(acs1, rel=1e-12) and l1["effective_macs"] == 0
    assert l0["effective_macs"] == pytest.approx(macs0, rel=1e-12) and l0["effective_acs"] == 0
    assert l0["dense"] == T_NB * 64 * HIDDEN and l1["dense"] == T_NB * HIDDEN * 10
    assert m["total"]["effective_acs"] == pytest.approx(acs1, rel=1e-12)
    assert m["total"]["dense"] == T_NB * (64 * HIDDEN + HIDDEN * 10)
    assert l0["activation_sparsity"] == pytest.approx(1.0 - float(spikes.double().mean()), abs=1e-12)
    zeros0, zeros1 = int((w0 == 0).sum()), int((w1 == 0).sum())
    assert l0["connection_sparsity"] == pytest.approx(zeros0 / w0.numel(), abs=1e-4)
    assert l1["connection_sparsity"] == pytest.approx(zeros1 / w1.numel(), abs=1e-4)
    assert m["total"]["connection_sparsity"] == pytest.approx((zeros0 + zeros1) / (w0.numel() + w1.numel()),
                                                              abs=1e-4)
    assert l0["footprint"] == 4 * w0.numel() and l1["footprint"] == 4 * w1.numel()
    assert m["total"]["footprint"] == 4 * (w0.numel() + w1.numel()) == 4 * m["total"]["params"]


def test_neurobench_conv_net_by_hand(tmp_path: Path) -> None:
    """A conv block (padding, max-pool) then the readout: dense and effective ACs by hand."""
    pytest.importorskip("neurobench")
    from bioplaus.analysis.neurobench import neurobench_metrics
    from bioplaus.export.samples import test_samples

    cfg = load_config({"name": "nbc", "data": {"dataset": "digits"},
                       "network": {"backend": "spiking", "arch": "cnn", "channels": [4], "kernel": 3,
                                   "pool": 2, "hidden": [], "spiking": {"T": T_NB}}})
    net = build_net(cfg.network, (1, 8, 8), 10, seed=cfg.seed)
    with torch.no_grad():
        net.layers[0].synapse.weight.mul_(3.0)
    path = tmp_path / "cnn.h5"
    with Recorder(path, cfg.to_dict(), cfg.seed, meta={"input_shape": [1, 8, 8], "n_classes": 10}) as rec:
        for k, v in net.state_dict().items():
            rec.log_array(f"/model/net/{k}", v.numpy())
    n = 12
    m = neurobench_metrics(path, samples=n)
    x, _ = test_samples("digits", n)
    net.eval()
    with torch.no_grad():
        net(x.reshape(n, 1, 8, 8))
    out0, pooled = net.layers[0].state.out, net.layers[0].state.y  # [T, B, 4, 8, 8], [T, B, 4, 4, 4]
    assert 0.02 < out0.mean() < 0.98
    fan1 = (net.layers[1].synapse.weight != 0).sum(0).double()
    acs1 = float((pooled.reshape(T_NB, n, -1).double() * fan1).sum()) / n
    l0, l1 = m["layers"]
    assert l0["synapse"] == "Conv2d 1->4 k3" and l1["synapse"] == "Linear 64->10"
    # a 3x3 kernel, padding 1 on 8x8: sum over output positions of in-bounds taps = (3*8 - 2)^2
    assert l0["dense"] == T_NB * 4 * 1 * (3 * 8 - 2) ** 2
    assert l1["dense"] == T_NB * 64 * 10
    assert l1["effective_acs"] == pytest.approx(acs1, rel=1e-12)
    assert l0["activation_sparsity"] == pytest.approx(1.0 - float(out0.double().mean()), abs=1e-12)
    assert l0["footprint"] == 4 * 4 * 9


@pytest.mark.parametrize("backend", ["spiking", "lif_nir"])
def test_neurobench_spike_fed_conv_by_hand(tmp_path: Path, backend: str) -> None:
    """Two conv blocks: the second conv is fed spikes; its ACs and every layer's dense and
    effective counts equal a tap-by-tap count without NeuroBench or a convolution
    (benchmarks/neurobench_check.py), for the subtractive LIF and the NIR-exact one."""
    pytest.importorskip("neurobench")
    from benchmarks.neurobench_check import layer_inputs, synops_by_hand
    from bioplaus.analysis.neurobench import neurobench_metrics
    from bioplaus.export.samples import test_samples

    neuron = {"neuron": {"integration": "exact"}} if backend == "lif_nir" else {}
    cfg = load_config({"name": "nbc2", "data": {"dataset": "digits"},
                       "network": {"backend": backend, "arch": "cnn", "channels": [4, 6], "kernel": 3, "pool": 2,
                                   "hidden": [], "spiking": {"T": T_NB, "output_spikes": backend == "spiking"},
                                   **neuron}})
    net = build_net(cfg.network, (1, 8, 8), 10, seed=cfg.seed)
    with torch.no_grad():
        net.layers[0].synapse.weight.mul_(3.0)
        w1 = net.layers[1].synapse.weight
        w1.mul_(3.0)
        w1[:2, :, 0, :] = 0.0  # zero taps: the count is over non-zero weights only
        w1[:, 1, 1, 1] = 0.0
    path = tmp_path / "cnn2.h5"
    with Recorder(path, cfg.to_dict(), cfg.seed, meta={"input_shape": [1, 8, 8], "n_classes": 10}) as rec:
        for k, v in net.state_dict().items():
            rec.log_array(f"/model/net/{k}", v.numpy())
    n = 12
    m = neurobench_metrics(path, samples=n)
    x, _ = test_samples("digits", n)
    inputs = layer_inputs(net, x.reshape(n, 1, 8, 8))
    s1 = inputs[1]  # [T*B, 4, 4, 4]: layer0's pooled spikes
    assert set(s1.unique().tolist()) == {0.0, 1.0} and 0.05 < float(s1.mean()) < 0.95
    assert [r["synapse"] for r in m["layers"]] == ["Conv2d 1->4 k3", "Conv2d 4->6 k3", "Linear 24->10"]
    # the second conv on a 4x4 map with padding 1: (3*4 - 2)^2 in-bounds taps per channel pair
    assert m["layers"][1]["dense"] == T_NB * 6 * 4 * (3 * 4 - 2) ** 2
    for layer, inp, row in zip(net.layers, inputs, m["layers"], strict=True):
        eff, dense = synops_by_hand(inp, layer.synapse)
        assert row["dense"] == pytest.approx(dense / n, rel=1e-12)
        assert row["effective_acs"] + row["effective_macs"] == pytest.approx(eff / n, rel=1e-12)
    assert m["layers"][0]["effective_acs"] == 0 and m["layers"][1]["effective_macs"] == 0
    # the zeroed taps count: fewer operations than with every weight non-zero
    full = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False)
    with torch.no_grad():
        full.weight.fill_(1.0)
    assert m["layers"][1]["effective_acs"] < synops_by_hand(s1, full)[0] / n


def test_inspect_neurobench_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("neurobench")
    path = tmp_path / "run.h5"
    _net_run(path)
    assert main(["inspect", "--neurobench", str(path), "--samples", "5"]) == 0
    out = capsys.readouterr().out
    assert "5 digits test samples" in out and "Linear 64->16" in out and out.splitlines()[-1].startswith("total")
    assert main(["inspect", "--neurobench", str(path), "--samples", "0"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "bioplaus: error: samples=0: expected an integer in [1, 100000]"]
    assert main(["inspect", str(path), "--samples", "5"]) == 2


def test_neurobench_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.h5"
    _net_run(path)
    monkeypatch.setitem(sys.modules, "neurobench", None)
    from bioplaus.analysis.neurobench import neurobench_metrics

    with pytest.raises(BioplausError, match=r"bioplaus\[neurobench\]"):
        neurobench_metrics(path)
    assert main(["inspect", "--neurobench", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "pip install --no-deps neurobench==2.3" in err[0]


def _hostile_module() -> object:
    """tests/record/test_hostile_files.py, loaded by path (its corrupted run files)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "record" / "test_hostile_files.py"
    spec = importlib.util.spec_from_file_location("_hostile_files_for_analysis", path)
    assert spec is not None and spec.loader is not None
    mod = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
    if spec.name not in sys.modules:
        sys.modules[spec.name] = mod  # its dataclasses look their module up
        spec.loader.exec_module(mod)
    return mod


def test_neurobench_on_hostile_run_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every corrupted run of tests/record/test_hostile_files.py: exit 0, or one line and exit 2."""
    pytest.importorskip("neurobench")
    h = _hostile_module()

    try:
        import neo  # noqa: F401
        neo_ok = True
    except ImportError:
        neo_ok = False
    base = tmp_path / "base.h5"
    h._write_run(base)
    refused = 0
    for case in h.RUN_CASES:
        case_dir = tmp_path / case.id
        case_dir.mkdir()
        path = h._build(case, base, case_dir)
        code = main(["inspect", "--neurobench", str(path), "--samples", "2"])
        out, err = capsys.readouterr()
        if case.id == "valid":
            assert code == 0 and "total" in out, err
        assert code in (0, 2), (case.id, err)
        if code == 2:
            lines = err.splitlines()
            assert len(lines) == 1 and lines[0].startswith("bioplaus: error: "), (case.id, err)
            refused += 1
        if "export" in case.fails:  # a file export refuses has no usable net for NeuroBench either
            assert code == 2, case.id
        if "open" not in case.fails:  # spikes to Neo: trains, or RunFileError (never a crash)
            with open_run(path) as run:
                for pop in run.populations:
                    try:
                        trains = run.spikes(pop).to_neo() if neo_ok else []
                    except RunFileError as exc:
                        assert str(path) in str(exc)
                    else:
                        assert all(tr.t_stop >= tr.t_start for tr in trains)
    assert refused >= 10
