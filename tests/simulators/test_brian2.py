"""Brian2: the generic runner reproduces the discrete LIF, and a NIR graph replays spike for spike.

Default tests use Brian2's numpy code generation (no compiler, a few seconds); the Cython
runtime and the C++ standalone device run the same checks under ``-m slow``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

brian2 = pytest.importorskip("brian2")
pytest.importorskip("nir")

from bioplaus.cli import main  # noqa: E402
from bioplaus.config import NetworkConfig, SpikingConfig  # noqa: E402
from bioplaus.export.nir import export_nir  # noqa: E402
from bioplaus.nets import build_net  # noqa: E402
from bioplaus.neurons.lif import LIFParams, lif_scan  # noqa: E402
from bioplaus.registry import SIMULATORS  # noqa: E402
from bioplaus.simulators.brian2_runner import Brian2Runner  # noqa: E402


def _tiny(tmp_path: Path, **kw) -> Path:  # noqa: ANN003
    cfg = NetworkConfig(backend="spiking", hidden=[12, 9], bias=kw.pop("bias", False),
                        spiking=SpikingConfig(T=12, **kw))
    net = build_net(cfg, (1, 4, 4), 3, seed=4)
    with torch.no_grad():
        for la in net.layers:
            la.synapse.weight.mul_(3)
    return export_nir(net, tmp_path / "tiny.nir")


def _agree(path: Path, x: torch.Tensor, mode: str) -> None:
    ref = SIMULATORS.get("bioplaus")(str(path), x)
    b2 = SIMULATORS.get("brian2")(str(path), x, mode=mode, reading="bioplaus")
    assert sum(int(s.sum()) for s in ref.spikes.values()) > 20  # the net does spike
    for k in ref.spikes:
        np.testing.assert_array_equal(b2.spikes[k], ref.spikes[k], err_msg=k)
    np.testing.assert_allclose(b2.mem_out, ref.mem_out, atol=1e-4)
    np.testing.assert_array_equal(b2.predicted, ref.predicted)


@pytest.mark.parametrize("kw", [{"reset": "subtract"}, {"reset": "zero", "bias": True},
                                {"encoder": "poisson", "output_spikes": False}])
def test_graph_in_brian2_spike_for_spike(tmp_path: Path, kw: dict) -> None:
    path = _tiny(tmp_path, **kw)
    x = torch.rand(4, 1, 4, 4)
    _agree(path, x, "numpy")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["runtime", "standalone"])
def test_graph_in_brian2_compiled_modes(tmp_path: Path, mode: str) -> None:
    _agree(_tiny(tmp_path), torch.rand(3, 1, 4, 4), mode)


def test_runner_recurrent_matches_discrete_reference() -> None:
    """A recurrent population: v_n = β v_{n-1} + I_n + W s_{n-1} − θ r_n, as the docstring says."""
    rng = np.random.default_rng(3)
    n, steps, beta = 15, 30, np.exp(-1e-3 / 4e-3)
    w = rng.normal(0, 0.5, (n, n))
    cur = rng.random((steps, n)) * 0.6
    sim = Brian2Runner(1e-3, "numpy").add_population("h", n, tau=4e-3, reset="subtract")
    sim.add_current_input("h", cur).connect("h", "h", w).record("h", v=True, rate=True)
    res = sim.run(steps)
    v, s_prev = np.zeros(n), np.zeros(n)
    spikes, vs = [], []
    for t in range(steps):
        v = beta * v + cur[t] + w @ s_prev - 1.0 * s_prev
        s_prev = (v > 1.0).astype(float)
        spikes.append(s_prev.astype(bool))
        vs.append(v.copy())
    np.testing.assert_array_equal(res.spike_raster("h"), np.array(spikes))
    np.testing.assert_allclose(res.v["h"], np.array(vs), atol=1e-9)
    np.testing.assert_allclose(res.rate["h"], np.array(spikes).mean(1) / 1e-3)


def test_runner_spike_input_and_windows() -> None:
    """Spike source -> LIF with reset windows: each window equals a fresh torch scan, one step later."""
    rng = np.random.default_rng(5)
    T, S, n_in, n = 10, 3, 8, 6
    src = rng.random((S, T, n_in)) < 0.4
    w = rng.normal(0, 1.0, (n, n_in))
    win = T + 1
    spikes = np.zeros((S * win, n_in), dtype=bool)
    for k in range(S):
        spikes[k * win:k * win + T] = src[k]
    sim = Brian2Runner(1e-3, "numpy").add_spike_input("x", spikes).add_population("h", n, tau=5e-3, reset="zero")
    res = sim.connect("x", "h", w).record("h").run(S * win, reset_every=win)
    cur = torch.tensor(np.einsum("stj,ij->tsi", src.astype(float), w))
    ref, _ = lif_scan(cur, LIFParams(1e-3, 5e-3, 1.0, "zero"))
    np.testing.assert_array_equal(res.shifted("h", 1, T), ref.permute(1, 0, 2).numpy().astype(bool))


def test_simulate_command_refusals(tmp_path: Path) -> None:
    path = _tiny(tmp_path)  # takes 4x4 samples; digits are 8x8: a clear refusal, no file
    assert main(["simulate", str(path), "--data", "digits", "--samples", "3", "--mode", "numpy",
                 "--out", str(tmp_path / "r.h5")]) == 2
    assert not (tmp_path / "r.h5").exists()
    assert main(["simulate", str(path), "--data", "digits", "--mode", "warp"]) == 2
    assert main(["simulate", str(path), "--backend", "nest", "--data", "digits"]) == 2


def test_simulate_is_a_kind_through_the_run_driver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bioplaus simulate` runs a kind = "simulate" config through run_experiment: the same
    file from the command and from `bioplaus.run`, status "done", overwrite refused unasked."""
    import nir

    import bioplaus
    from bioplaus.export.nir import to_nir

    g = to_nir(build_net(NetworkConfig(backend="spiking", hidden=[7], spiking=SpikingConfig(T=5)), (1, 8, 8), 10, seed=2))
    g.metadata["dataset"] = "digits"
    nir.write(tmp_path / "d.nir", g)
    out = tmp_path / "s.h5"
    args = ["simulate", str(tmp_path / "d.nir"), "--backend", "bioplaus", "--samples", "4", "--out", str(out)]
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{out}: bioplaus (runtime) on 4 samples, test_acc=")
    assert main(args) == 2 and "exists" in capsys.readouterr().err  # never overwritten unasked
    assert main([*args, "--overwrite"]) == 0
    res = bioplaus.run({"kind": "simulate", "simulate": {"graph": str(tmp_path / "d.nir"), "backend": "bioplaus",
                                                         "samples": 4}, "train": {"report": False}},
                       out=tmp_path / "api.h5", progress=False)
    with bioplaus.open_run(out) as a, bioplaus.open_run(res.path) as b:
        assert a.status == b.status == "done" and a.attrs["kind"] == "simulate" and a.attrs["dataset"] == "digits"
        assert a.config["simulate"] == {"graph": str(tmp_path / "d.nir"), "backend": "bioplaus", "mode": "runtime",
                                        "data": "", "samples": 4, "dt": 0.0, "integration": "", "reading": "graph"}
        assert set(a.config) == {"name", "seed", "description", "kind", "train", "record", "simulate"}
        np.testing.assert_array_equal(a.array("/simulate/logits"), b.array("/simulate/logits"))
        assert a.metrics["test_acc"][-1] == b.metrics["test_acc"][-1] == res.metrics["test_acc"]
    assert main(["simulate", str(tmp_path / "d.nir"), "--backend", "bioplaus", "--data", "nope",
                 "--out", str(tmp_path / "n.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope'" in err and not (tmp_path / "n.h5").exists()


def test_simulators_share_the_base_contract() -> None:
    from bioplaus.simulators.base import SimResult, Simulator

    for name in ("brian2", "bioplaus"):
        sim = SIMULATORS.get(name)
        assert isinstance(sim, Simulator) and sim.modes[0] == "runtime"
    assert SIMULATORS.get("brian2").versions().startswith("brian2 ")
    r = SimResult({}, np.zeros((2, 3, 4)), np.array([[0.0, 1.0], [2.0, 1.0]]), 1e-3, 2)
    assert r.predicted.tolist() == [1, 0]
