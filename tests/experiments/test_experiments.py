"""Spine v2: experiment kinds, the run context, the public API, examples, user data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_config

import bioplaus
import neuro_data
from bioplaus.cli import main
from bioplaus.config import load_config
from bioplaus.errors import ConfigError
from bioplaus.registry import EXPERIMENTS, FIGURES, GROUPS

THIRDPARTY = ROOT / "tests" / "thirdparty"


def _env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    return env


def _install_entry_point(site: Path) -> None:
    """A dist-info on ``site`` whose entry point names the third-party kind (no pip needed)."""
    info = site / "bioplaus_ou-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bioplaus-ou\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bioplaus.experiments]\nou_fit = bioplaus_ou:OUFit\n")


def test_third_party_kind_through_entry_point(tmp_path: Path) -> None:
    """Not classification, not gradients: registered by an entry point, run, inspected, reported."""
    site = tmp_path / "site"
    _install_entry_point(site)
    env = _env(site, THIRDPARTY)
    cfg = tmp_path / "ou.toml"
    cfg.write_text('name = "ou"\nkind = "ou_fit"\nseed = 3\n\n[ou_fit]\ntheta = 2.0\nsteps = 4000\n')
    out = tmp_path / "ou.h5"
    cli = [sys.executable, "-m", "bioplaus.cli"]
    run = subprocess.run([*cli, "run", str(cfg), "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    # summary: headline first; progress lines carry the declared progress metrics
    assert run.stdout.startswith("done: theta_rel_error=")
    assert "step 4000: theta_hat=" in run.stderr and "mu_hat=" in run.stderr
    with bioplaus.open_run(out) as f:
        assert f.status == "done" and f.attrs["kind"] == "ou_fit"
        theta = f.metrics["theta_hat"]
        assert len(theta) == 20 and abs(theta[-1] - 2.0) < 1.0
        declared = {d["name"]: d for d in f.attrs["declared_metrics"]}
        assert declared["theta_rel_error"]["headline"] is True
    insp = subprocess.run([*cli, "inspect", str(out)], env=env, capture_output=True, text=True, timeout=60)
    assert insp.returncode == 0, insp.stderr
    assert "kind       ou_fit" in insp.stdout
    assert "headline   theta_rel_error = " in insp.stdout and "(lower is better)" in insp.stdout
    rep = subprocess.run([*cli, "report", str(out), "--out", str(tmp_path / "figs")], env=env, capture_output=True, text=True, timeout=60)
    assert rep.returncode == 0, rep.stderr
    assert (tmp_path / "figs" / "ou_fit.png").stat().st_size > 5_000
    lst = subprocess.run([*cli, "list"], env=env, capture_output=True, text=True, timeout=60)
    assert "ou_fit" in next(line for line in lst.stdout.splitlines() if line.startswith("experiments:"))


@pytest.mark.parametrize("script", ["python_api.py", "custom_rule.py", "custom_kind.py"])
def test_examples_run(script: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "done:" in proc.stdout
    assert list(tmp_path.glob("*.h5"))


def test_kind_is_inferred_and_tables_belong_to_their_kind() -> None:
    assert load_config(tiny_config()).kind == "supervised"
    cfg = load_config(tiny_config(continual={"n_tasks": 2}))
    assert cfg.kind == "continual" and cfg.section("continual").n_tasks == 2
    assert load_config(tiny_config(kind="continual")).section("continual").n_tasks == 10
    with pytest.raises(ConfigError, match="continual: this table belongs to kind 'continual'"):
        load_config(tiny_config(kind="supervised", continual={}))
    with pytest.raises(ConfigError, match="kind: unknown value 'nope'"):
        load_config(tiny_config(kind="nope"))
    with pytest.raises(ConfigError, match="continual.n_tasks: expected an integer"):
        load_config(tiny_config(continual={"n_tasks": "x"}))
    # the kind's table round-trips through the stored JSON
    again = load_config(json.loads(cfg.to_json()))
    assert again.to_dict() == cfg.to_dict()


def test_every_registry_group_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines][: len(GROUPS)] == list(GROUPS)
    assert {"supervised", "continual"} <= set(EXPERIMENTS.names())
    assert {"learning_curves", "acc_matrix", "spikes", "weights"} <= set(FIGURES.names())


def test_declared_metrics_drive_file_summary_and_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = bioplaus.run(tiny_config(), out=tmp_path / "t.h5")
    assert res.headline is not None and res.headline[0] == "test_acc"
    assert res.summary().startswith(f"done: test_acc={res.metrics['test_acc']:.4f}")
    with bioplaus.open_run(res.path) as f:
        names = {d["name"] for d in f.attrs["declared_metrics"]}
    assert {"train_loss", "val_acc", "test_acc", "train_loss_epoch", "lr"} <= names
    assert main(["inspect", str(res.path)]) == 0
    out = capsys.readouterr().out
    assert "kind       supervised" in out and "headline   test_acc = " in out and "(higher is better)" in out
    # evaluate_on = "val" never touches the test split, and the headline follows it
    res = bioplaus.run(tiny_config(data__evaluate_on="val", data__val_fraction=0.2), out=tmp_path / "v.h5")
    assert res.headline[0] == "val_acc" and "test_acc" not in res.metrics


def test_runs_in_one_process_do_not_leak_state(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(1234)
    np.random.seed(99)
    before_torch, before_np = torch.get_rng_state(), np.random.get_state()[1].copy()
    handler = signal.getsignal(signal.SIGTERM)
    vals = []
    for i in range(2):
        res = bioplaus.run(tiny_config(train__threads=1), out=tmp_path / f"r{i}.h5")
        with bioplaus.open_run(res.path) as f:
            vals.append(f.metrics["train_loss"].copy())
        assert torch.get_num_threads() == 2
        assert torch.equal(torch.get_rng_state(), before_torch)
        assert np.array_equal(np.random.get_state()[1], before_np)
        assert signal.getsignal(signal.SIGTERM) is handler
    np.testing.assert_array_equal(vals[0], vals[1])


def test_user_arrays_and_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    digits = neuro_data.load_dataset("digits")
    x = (digits.x_train.reshape(len(digits.x_train), -1) * 255).round().astype(np.uint8)
    y = digits.y_train
    ds = neuro_data.from_arrays(x, y, scale="uint8", seed=0)
    res = bioplaus.run(tiny_config(train__epochs=10), data=ds, out=tmp_path / "arr.h5")
    assert res.metrics["test_acc"] > 0.5
    # the same arrays from an npz file through [data]: scale applied once, same split, same run
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y)
    data = {"dataset": "npz", "path": str(tmp_path / "mine.npz"), "scale": "uint8", "batch_size": 128, "limit_train": 512}
    res2 = bioplaus.run(tiny_config(train__epochs=10, data=data), out=tmp_path / "npz.h5")
    assert res2.metrics["test_acc"] == res.metrics["test_acc"]
    # labels 1..10: one line naming the array, exit 2, no file
    np.savez(tmp_path / "bad.npz", x_train=x, y_train=y + 1)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[data]\ndataset = "npz"\npath = "{tmp_path / "bad.npz"}"\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "bad.h5"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "y_train" in err and not (tmp_path / "bad.h5").exists()


def test_hand_written_loop_with_the_public_pieces(tmp_path: Path) -> None:
    net = bioplaus.build_net(64, 10, backend="spiking", hidden=[32], spiking={"T": 5})
    rule = bioplaus.build_rule("ccl", lr=0.05, momentum=0.9)
    digits = neuro_data.load_dataset("digits")
    loader = neuro_data.ArrayLoader(digits.x_train.reshape(-1, 64), digits.y_train, 64, shuffle=True, seed=0)
    metrics = [bioplaus.Metric("loss", "min", headline=True)]
    with bioplaus.RunContext(tmp_path / "loop.h5", seed=0, metrics=metrics) as run:
        bioplaus.setup(rule, net, n_classes=10, run=run)
        for x, y in loader:
            run.step += 1
            run.log(**rule.train_step(x, y))
    with bioplaus.open_run(tmp_path / "loop.h5") as f:
        assert f.status == "done" and len(f.metrics["loss"]) == len(loader)
        assert f.metrics["loss"][-1] < f.metrics["loss"][0]
    with pytest.raises(ConfigError, match="rule.nope: unknown key"):
        bioplaus.build_rule("ccl", nope=1)


def test_plugins_act_on_the_layers_a_rule_declares() -> None:
    """HLOP and EWC take their layers from the rule, not from a net attribute."""
    from bioplaus.rules.backprop import Backprop

    class OutputOnly(Backprop):
        def protected_layers(self) -> list:
            return [self.net.output_layer]

    net = bioplaus.build_net(64, 10, hidden=[16, 12])
    hlop, ewc = bioplaus.build_plugin("hlop", neurons_first=[4], neurons_per_task=[2]), bioplaus.build_plugin("ewc")
    bioplaus.setup(OutputOnly(bioplaus.build_rule("backprop").cfg), net, 10, plugins=[hlop, ewc])
    assert hlop.net_layers == [net.output_layer] and list(hlop.lateral) == [0]
    assert hlop.lateral[0].n == 12  # the output layer's presynaptic width
    assert ewc.params == list(net.output_layer.parameters())
    with pytest.raises(ConfigError, match=r"plugins.hlop.layers: layer 1 does not exist"):
        bioplaus.setup(OutputOnly(bioplaus.build_rule("backprop").cfg), net, 10,
                       plugins=[bioplaus.build_plugin("hlop", layers=[1])])


def test_gradient_kinds_own_data_network_rule_plugins() -> None:
    """The gradient tables are the gradient kinds' sections; the generic part has no trace of them."""
    import dataclasses

    from bioplaus.config import ExperimentConfig, NetworkConfig, RuleConfig
    from bioplaus.registry import EXPERIMENTS

    assert [f.name for f in dataclasses.fields(ExperimentConfig)] == [
        "name", "seed", "description", "kind", "train", "record", "sections"]
    for kind in ("supervised", "continual"):
        assert list(EXPERIMENTS.get(kind).sections())[:4] == ["data", "network", "rule", "plugins"]
        assert EXPERIMENTS.get(kind).devices == ("cpu", "cuda")
    assert EXPERIMENTS.get("hopfield").devices == ("cpu",) and EXPERIMENTS.get("simulate").devices == ("cpu",)
    cfg = load_config(tiny_config(), ["network.backend=rate", "plugins=[{name='ewc'}]"])
    assert isinstance(cfg.network, NetworkConfig) and cfg.network is cfg.section("network")
    assert isinstance(cfg.rule, RuleConfig) and cfg.plugins[0].name == "ewc"
    # the stored layout is that of earlier versions, so run files stay byte-identical
    assert list(cfg.to_dict()) == ["name", "seed", "description", "kind", "data", "network", "rule", "train",
                                   "record", "plugins"]
    assert list(load_config(tiny_config(continual={"n_tasks": 2})).to_dict())[-2:] == ["plugins", "continual"]
    again = load_config(json.loads(cfg.to_json()))
    assert again.to_dict() == cfg.to_dict()
    with pytest.raises(ConfigError, match="^simulate: this table belongs to kind 'simulate', but kind = 'supervised'$"):
        load_config(tiny_config(kind="supervised", simulate={"graph": "g.nir"}))
