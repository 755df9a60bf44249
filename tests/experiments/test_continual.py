"""The continual-learning harness: metrics, task loaders, the trainer and its run file."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import with_tables

import neuro_data
from bioplaus.config import load_config
from bioplaus.errors import ConfigError
from bioplaus.experiments import run_experiment
from bioplaus.experiments.continual import acc_metrics, build_tasks
from bioplaus.record import open_run
from neuro_data.streams import PermutedArray

pytestmark = pytest.mark.usefixtures("one_thread")


CL = {
    "name": "cl",
    "data": {"dataset": "digits", "val_fraction": 0.0, "batch_size": 32, "normalize": "standard"},
    "network": {"backend": "rate", "hidden": [32], "activation": "relu", "spiking": {"T": 4}},
    "rule": {"name": "backprop", "lr": 0.05},
    "train": {"report": False, "progress": False, "log_every": 5},
    "continual": {"stream": "permuted", "n_tasks": 3, "epochs_per_task": 1},
}


def _cfg(**over: object) -> dict:
    return with_tables(CL, **over)


# ----------------------------------------------------------------------------- metrics


def test_acc_metrics_on_a_hand_made_matrix() -> None:
    R = np.array(
        [
            [0.90, 0.10, 0.20],
            [0.95, 0.80, 0.30],
            [0.85, 0.70, 0.90],
        ]
    )
    m = acc_metrics(R, initial=np.array([0.1, 0.1, 0.1]))
    assert m["ACC"] == pytest.approx((0.85 + 0.70 + 0.90) / 3)
    assert m["BWT"] == pytest.approx(((0.85 - 0.90) + (0.70 - 0.80)) / 2)  # -0.075
    # forgetting uses the best earlier accuracy (0.95 for task 0), not the diagonal
    assert m["forgetting"] == pytest.approx(((0.95 - 0.85) + (0.80 - 0.70)) / 2)  # 0.10
    assert m["FWT"] == pytest.approx(((0.10 - 0.1) + (0.30 - 0.1)) / 2)
    # a partial matrix (killed after task 1) uses its last row and the tasks seen
    p = acc_metrics(R[:2])
    assert p["ACC"] == pytest.approx((0.95 + 0.80) / 2)
    assert p["BWT"] == pytest.approx(0.05) and p["forgetting"] == pytest.approx(-0.05)
    one = acc_metrics(R[:1])
    assert one["ACC"] == pytest.approx(0.9) and math.isnan(one["BWT"])
    with pytest.raises(ValueError):
        acc_metrics(np.zeros((3, 2)))


# ----------------------------------------------------------------------------- data


def test_lazy_permuted_stream_matches_the_eager_one() -> None:
    ds = neuro_data.load_dataset("digits")
    eager = neuro_data.permuted(ds, n_tasks=3, seed=5)
    lazy = neuro_data.permuted(ds, n_tasks=3, seed=5, lazy=True)
    for a, b in zip(eager, lazy):
        np.testing.assert_array_equal(a.permutation, b.permutation)
        np.testing.assert_array_equal(a.x_test, np.asarray(b.x_test))
        np.testing.assert_array_equal(a.x_train[[3, 7]], b.x_train[np.array([3, 7])])
        np.testing.assert_array_equal(a.x_train[4], b.x_train[4])
    assert isinstance(lazy[1].x_train, PermutedArray) and lazy[1].x_train.base is ds.x_train
    assert lazy[1].x_train.shape == ds.x_train.shape


def test_task_loaders_permute_batches_on_the_fly() -> None:
    cfg = load_config(_cfg(data__limit_test=50))
    tasks, stream, shape = build_tasks(cfg)
    assert len(tasks) == 3 and stream.setting == "domain" and shape == (1, 8, 8)
    ds = neuro_data.load_dataset("digits")
    norm = neuro_data.Normalizer.fit(ds.x_train, "standard")
    x0, y0 = next(iter(tasks[2].test))
    assert len(x0) == 50 and tasks[2].test.n == 50
    ref = norm(ds.x_test[:50]).reshape(50, -1)[:, stream[2].permutation].reshape(50, 1, 8, 8)
    np.testing.assert_allclose(x0.numpy(), ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(y0.numpy(), ds.y_test[:50])
    # training batches differ between tasks only by the permutation and the shuffle seed
    assert tasks[0].train.n == len(ds.x_train)


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="continual.setting"):
        load_config(_cfg(continual={"stream": "permuted", "setting": "task"}))
    with pytest.raises(ConfigError, match="epochs_per_task"):
        load_config(_cfg(continual={"epochs_per_task": 0}))
    with pytest.raises(ConfigError, match="continual.stream"):
        load_config(_cfg(continual={"stream": "rotated"}))


# ----------------------------------------------------------------------------- trainer


def test_sequential_run_writes_matrix_and_per_task_curves(tmp_path) -> None:  # noqa: ANN001
    cfg = load_config(_cfg(plugins=[{"name": "hlop", "neurons_first": [8, 6], "neurons_per_task": [4, 4], "lr": [0.001, 0.01]}]))
    res = run_experiment(cfg, out=tmp_path / "cl.h5", progress=False)
    assert res.status == "done" and res.steps == 3 * math.ceil(1437 / 32)
    with open_run(res.path) as run:
        assert run.status == "done"
        R = np.asarray(run.array("/continual/acc_matrix"))
        attrs = run.attrs_of("/continual/acc_matrix")
        assert R.shape == (3, 3)
        m = acc_metrics(R, attrs["initial"])
        for k in ("ACC", "BWT", "forgetting", "FWT"):
            assert attrs[k] == pytest.approx(m[k])
            assert res.metrics[k] == pytest.approx(m[k])
        assert res.metrics["test_acc"] == pytest.approx(m["ACC"])
        # task curves: one point at step 0 plus one after every task
        for j in range(3):
            acc = run.metric(f"task{j}/test_acc")
            assert len(acc) == 4
            np.testing.assert_allclose(acc[1:], R[:, j])
        assert list(run.metric_steps("task0/test_acc")) == [0, 45, 90, 135]
        assert len(run.metric("test_acc")) == 3 and len(run.metric("bwt")) == 3
        # HLOP's per-task records
        np.testing.assert_array_equal(run.metric("layer0/hlop_dim"), [8, 12, 16])
        assert len(run.metric("layer1/hlop_angle_max")) == 3
        assert np.asarray(run.array("/hlop/layer0/task1/H")).shape == (4, 64)
    # the diagonal is learned: better than chance on every task when it is trained
    assert np.diag(R).min() > 0.5


def test_split_stream_is_task_incremental(tmp_path) -> None:  # noqa: ANN001
    cfg = load_config(_cfg(continual={"stream": "split", "n_tasks": 5, "epochs_per_task": 2}))
    res = run_experiment(cfg, out=tmp_path / "split.h5", progress=False)
    trainer = res.experiment
    assert trainer.setting == "task" and trainer.rule.active_classes is None
    with open_run(res.path) as run:
        R = np.asarray(run.array("/continual/acc_matrix"))
    # two classes per head: each task is well above the 50 % chance of its head
    assert R.shape == (5, 5) and np.diag(R).min() > 0.8
    assert trainer.tasks[3].classes == [6, 7]


def test_freeze_batchnorm_fixes_statistics_and_affine_parameters() -> None:
    import torch
    from torch import nn

    from bioplaus.experiments.continual import freeze_batchnorm

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3))
    net(torch.randn(32, 5))  # some running statistics
    assert freeze_batchnorm(net) == 1 and freeze_batchnorm(net) == 0
    bn = net[1]
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    lin = net[0].weight.detach().clone()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=0.1, weight_decay=0.1)
    net.train()
    x = torch.randn(32, 5)
    out = net(x)
    out.square().mean().backward()
    opt.step()
    assert all(torch.equal(v, bn.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(lin, net[0].weight)
    # in training mode it normalises with the running statistics, as in evaluation
    with torch.no_grad():
        h = net[0](x)
        assert torch.allclose(bn(h), (h - bn.running_mean) / (bn.running_var + bn.eps).sqrt() * bn.weight + bn.bias)


def test_freeze_norm_keeps_noprop_batchnorm_from_task_0_with_ewc(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import torch

    from bioplaus.experiments import continual

    snap: dict[str, torch.Tensor] = {}
    real = continual.freeze_batchnorm

    def spy(net):  # noqa: ANN001, ANN202
        snap.update({k: v.clone() for k, v in net.state_dict().items() if ".bn." in k})
        return real(net)

    monkeypatch.setattr(continual, "freeze_batchnorm", spy)
    cfg = load_config(_cfg(
        rule={"name": "noprop", "optimizer": "adamw", "lr": 5e-3, "channels": [4, 4, 4], "width": 16, "T": 2},
        data={"dataset": "digits", "val_fraction": 0.0, "batch_size": 32, "normalize": "unit",
              "limit_train": 96, "limit_test": 40},
        continual={"stream": "split", "n_tasks": 3, "epochs_per_task": 1, "freeze_norm": True},
        plugins=[{"name": "ewc", "samples": 8}],
    ))
    res = run_experiment(cfg, out=tmp_path / "bn.h5", progress=False)
    final = res.experiment.rule.net.state_dict()
    assert snap and all(torch.equal(v, final[k]) for k, v in snap.items())
    assert math.isfinite(res.metrics["ACC"])


def test_joint_mode_is_one_row_with_the_same_number_of_steps(tmp_path) -> None:  # noqa: ANN001
    cfg = load_config(_cfg(continual={"stream": "permuted", "n_tasks": 3, "mode": "joint"}))
    res = run_experiment(cfg, out=tmp_path / "joint.h5", progress=False)
    assert res.steps == 3 * math.ceil(1437 / 32)
    with open_run(res.path) as run:
        R = np.asarray(run.array("/continual/acc_matrix"))
        attrs = run.attrs_of("/continual/acc_matrix")
    assert R.shape == (1, 3) and attrs["mode"] == "joint"
    assert attrs["ACC"] == pytest.approx(R.mean()) and math.isnan(res.metrics["BWT"])
    assert R.min() > 0.5  # every permutation is learned at once


def test_hlop_reduces_forgetting_on_permuted_digits(tmp_path) -> None:  # noqa: ANN001
    """Fine-tuning forgets the first permutations; HLOP keeps far more of them.

    (Measured: fine-tuning ACC 0.69 / BWT -0.27, HLOP ACC 0.78 / BWT -0.06; 64-pixel inputs
    leave room for 16 + 3 x 10 lateral neurons in the input layer.)
    """
    out = {}
    hl = {"name": "hlop", "neurons_first": [16, 12], "neurons_per_task": [10, 8], "decay": 0, "lr": [0.005, 0.01], "angles": False}
    for name, plugins in (("ft", []), ("hlop", [hl])):
        cfg = load_config(_cfg(continual={"stream": "permuted", "n_tasks": 4, "epochs_per_task": 3}, plugins=plugins))
        out[name] = run_experiment(cfg, out=tmp_path / f"{name}.h5", progress=False).metrics
    assert out["ft"]["BWT"] < -0.15
    assert out["hlop"]["BWT"] > out["ft"]["BWT"] + 0.12
    assert out["hlop"]["ACC"] > out["ft"]["ACC"] + 0.04
