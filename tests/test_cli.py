"""The CLI end to end on digits: run, inspect, report; bad input; interrupted and killed runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import bioplaus
from bioplaus.cli import main
from bioplaus.config import load_config
from bioplaus.experiments import run_experiment

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "sims" / "quickstart.toml"


def _write(tmp: Path, text: str, name: str = "exp.toml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


SMALL = """
name = "small"
seed = 1
[data]
dataset = "digits"
batch_size = 64
[network]
backend = "spiking"
hidden = [32]
[network.spiking]
T = 6
[rule]
name = "backprop"
optimizer = "adam"
lr = 0.01
[train]
epochs = 2
[[record.probes]]
layers = ["all"]
variables = ["spikes", "mem"]
every = 10
samples = 3
"""


def test_quickstart_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q.h5"
    assert main(["run", str(QUICK), "--out", str(out), "--quiet"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("done: test_acc=")
    with bioplaus.open_run(out) as run:
        assert run.status == "done"
        assert run.config["name"] == "quickstart"
        assert run.metrics["test_acc"][-1] > 0.90  # spiking MLP on digits, 15 epochs
        assert set(run.populations) == {"layer0", "layer1"}
        assert run.trace("layer0.mem").shape[1:] == (20, 4, 128)
    figs = sorted(p.name for p in (tmp_path / "q_figures").glob("*.png"))
    assert {"learning_curves.png", "spikes_layer0.png", "weights.png"} <= set(figs)
    assert main(["inspect", str(out)]) == 0
    assert "status     done" in capsys.readouterr().out
    rep = tmp_path / "rep"
    assert main(["report", str(out), "--out", str(rep)]) == 0
    assert len(list(rep.glob("*.png"))) == len(figs)


def test_spike_count_in_file_equals_count_in_memory(tmp_path: Path) -> None:
    # stop on a probe step so the last record was taken with the final weights
    cfg = load_config(_write(tmp_path, SMALL), ["train.max_steps=30"])
    cfg.train.report = False
    res = run_experiment(cfg, out=tmp_path / "s.h5", progress=False)
    tr = res.experiment
    probes = tr.rule.plugins.find("probes")
    # replay the last probe record and count spikes in memory
    with torch.no_grad():
        tr.model.eval()
        tr.model(tr.data.probe_x[:3])
    with bioplaus.open_run(res.path) as run:
        for la in tr.model.layers:
            ev = run.spikes(la.name)
            assert ev.count == probes.events_logged[la.name]
            last = ev.to_dense(step=int(ev.step.max()))
            in_memory = la.state.out.flatten(2).numpy().astype(bool)
            assert last.sum() == in_memory.sum() > 0
            np.testing.assert_array_equal(last, in_memory)


def test_same_seed_same_numbers(tmp_path: Path) -> None:
    vals = []
    for i in range(2):
        cfg = load_config(_write(tmp_path, SMALL), ["train.epochs=1"])
        cfg.train.report = False
        res = run_experiment(cfg, out=tmp_path / f"r{i}.h5", progress=False)
        with bioplaus.open_run(res.path) as run:
            vals.append(run.metrics["train_loss"].copy())
    np.testing.assert_array_equal(vals[0], vals[1])


def test_rate_and_spiking_by_one_field(tmp_path: Path) -> None:
    for backend in ("rate", "spiking"):
        cfg = load_config(_write(tmp_path, SMALL), [f"network.backend={backend}", "train.epochs=1"])
        cfg.train.report = False
        res = run_experiment(cfg, out=tmp_path / f"{backend}.h5", progress=False)
        assert res.status == "done" and res.metrics["test_acc"] > 0.5


BAD = [
    ("name = 'x'\n[data\n", "malformed TOML"),
    ("[data]\ndataset = 'digits'\nbatchsize = 3\n", "data.batchsize: unknown key"),
    ("[rule]\nname = 'nope'\n", "rule.name: unknown value 'nope'; valid: "),
    ("[network]\nbackend = 'quantum'\n", "network.backend: unknown value 'quantum'; valid: cuba_lif, if_nir, lif_nir, rate, spiking"),
    ("[data]\ndataset = 'imagenet'\n", "data.dataset: unknown value 'imagenet'; valid: "),
    ("[train]\nepochs = 'ten'\n", "train.epochs: expected an integer"),
    ("[network]\nhidden = 128\n", "network.hidden: expected a list"),
    ("[network]\nhidden = [64, 0]\n", "network.hidden: widths must be positive"),
    ("[network.spiking]\nreset = 'never'\n", "network.spiking.reset"),
    ("[rule]\nname = 'backprop'\nlearning_rate = 3\n", "rule.learning_rate: unknown key"),
    ("[[record.probes]]\nvariables = ['voltage']\n", "record.probes[0].variables: unknown value 'voltage'"),
]


@pytest.mark.parametrize("text,msg", BAD)
def test_bad_config_one_line_exit_2_no_file(
    tmp_path: Path, text: str, msg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bad.h5"
    code = main(["run", str(_write(tmp_path, text)), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert msg in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml: config file not found" in capsys.readouterr().err


def test_missing_data_lists_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BIOPLAUS_DATA", str(tmp_path / "empty"))
    out = tmp_path / "m.h5"
    p = _write(tmp_path, "[data]\ndataset = 'cifar10'\n")
    assert main(["run", str(p), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cifar10" in err and str(tmp_path / "empty") in err and "Traceback" not in err
    assert not out.exists()


def test_bad_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(QUICK), "--set", "rule.lr", "--out", str(tmp_path / "o.h5")]) == 2
    assert "expected key=value" in capsys.readouterr().err


def test_nan_loss_fails_with_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nan.h5"
    code = main(["run", str(QUICK), "--out", str(out), "--quiet", "--set", "network.backend=rate",
                 "--set", "rule.lr=1e30"])
    assert code == 2
    assert "diverged" in capsys.readouterr().err
    with bioplaus.open_run(out) as run:
        assert run.status == "failed"
        assert run.attrs["failed_step"] >= 1
        assert "nan" in run.attrs["error"] or "inf" in run.attrs["error"]


LONG = SMALL.replace("epochs = 2", "epochs = 500").replace("every = 10", "every = 5")


def _start(tmp_path: Path, out: Path) -> subprocess.Popen[bytes]:
    cfg = _write(tmp_path, LONG.replace("[train]", "[train]\nthreads = 1"), "long.toml")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "bioplaus.cli", "run", str(cfg), "--out", str(out), "--quiet",
         "--no-report"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _wait_for_epochs(out: Path, proc: subprocess.Popen[bytes], n: int = 2) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        if out.exists():
            try:
                with bioplaus.open_run(out) as run:
                    if len(run.metrics.get("epoch", [])) >= n:
                        return
            except (OSError, ValueError, KeyError):
                pass
        time.sleep(0.3)
    raise AssertionError("run did not reach the wanted epoch in time")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_run_leaves_readable_file(tmp_path: Path, sig: signal.Signals) -> None:
    out = tmp_path / "int.h5"
    proc = _start(tmp_path, out)
    _wait_for_epochs(out, proc)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode == 130
    with bioplaus.open_run(out) as run:
        assert run.status == "interrupted"
        assert len(run.metrics["epoch"]) >= 2
        assert run.spikes("layer0").count > 0


def test_killed_run_leaves_readable_file(tmp_path: Path) -> None:
    out = tmp_path / "kill.h5"
    proc = _start(tmp_path, out)
    _wait_for_epochs(out, proc, 3)
    proc.kill()
    proc.wait(timeout=30)
    with bioplaus.open_run(out) as run:
        assert run.status == "running"  # nobody could write the final status
        assert len(run.metrics["epoch"]) >= 3
        assert len(run.metrics["test_acc"]) >= 3
        assert run.config["name"] == "small"
