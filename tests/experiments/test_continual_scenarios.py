"""Task-, domain- and class-incremental scenarios, per-task forgetting and transfer, user npz streams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import with_tables

import neuro_data
from bioplaus.config import load_config
from bioplaus.errors import ConfigError
from bioplaus.experiments import run_experiment
from bioplaus.experiments.continual import acc_metrics, per_task_transfer, scenario, transfer_figure
from bioplaus.record import open_run

pytestmark = pytest.mark.usefixtures("one_thread")

CL = {
    "name": "cls",
    "data": {"dataset": "digits", "val_fraction": 0.0, "batch_size": 32, "normalize": "standard", "limit_test": 200},
    "network": {"backend": "rate", "hidden": [16], "activation": "relu"},
    "rule": {"name": "backprop", "lr": 0.05},
    "train": {"report": False, "progress": False, "log_every": 5},
    "continual": {"stream": "split", "n_tasks": 3, "classes_per_task": 2, "epochs_per_task": 1},
}


def test_per_task_forgetting_and_transfer_on_a_hand_made_matrix() -> None:
    R = np.array([[0.90, 0.10, 0.20], [0.95, 0.80, 0.30], [0.85, 0.70, 0.90]])
    b = np.array([0.1, 0.1, 0.1])
    forget, fwt = per_task_transfer(R, b)
    np.testing.assert_allclose(forget[:2], [0.95 - 0.85, 0.80 - 0.70])
    assert np.isnan(forget[2]) and np.isnan(fwt[0])
    np.testing.assert_allclose(fwt[1:], [0.10 - 0.1, 0.30 - 0.1])
    m = acc_metrics(R, b)
    assert np.nanmean(forget) == pytest.approx(m["forgetting"]) and np.nanmean(fwt) == pytest.approx(m["FWT"])
    assert np.isnan(per_task_transfer(R)[1]).all()


def test_scenarios_name_what_is_given_at_test_time() -> None:
    assert scenario("split", "task") == {"scenario": "task-incremental", "task_id_at_test": True, "heads": "multi"}
    assert scenario("split", "class")["scenario"] == "class-incremental"
    assert scenario("split", "domain")["scenario"] == "class-incremental"  # disjoint classes, one head
    assert scenario("permuted", "domain") == {"scenario": "domain-incremental", "task_id_at_test": False,
                                              "heads": "single"}
    for bad in ("class", "task"):
        with pytest.raises(ConfigError, match="continual.setting"):
            load_config(with_tables(CL, continual={"stream": "permuted", "setting": bad}))
    with pytest.raises(ConfigError, match="continual.setting"):
        load_config(with_tables(CL, continual__setting="online"))


def test_class_incremental_is_the_single_head_split_stream(tmp_path: Path) -> None:
    """setting = "class" on a split stream trains and evaluates without masks: the same
    numbers as the older spelling (setting = "domain"), below the task-incremental ones
    (the head must also tell the tasks apart); the run records the scenario, per-task
    forgetting and transfer, and draws them."""
    mats = {}
    for setting in ("class", "domain", "task"):
        res = run_experiment(load_config(with_tables(CL, continual__setting=setting)), out=tmp_path / f"{setting}.h5",
                             progress=False)
        assert res.status == "done"
        with open_run(res.path) as run:
            mats[setting] = np.asarray(run.array("/continual/acc_matrix"))
            attrs = run.attrs_of("/continual/acc_matrix")
            forget, fwt = per_task_transfer(mats[setting], attrs["initial"])
            np.testing.assert_allclose(attrs["forgetting_per_task"], forget)
            np.testing.assert_allclose(attrs["fwt_per_task"], fwt)
            assert attrs["scenario"] == ("task-incremental" if setting == "task" else "class-incremental")
            assert bool(attrs["task_id_at_test"]) is (setting == "task")
            R = mats[setting]
            np.testing.assert_allclose(run.metric("task0/forgetting"), [R[0, 0] - R[1, 0], forget[0]])
            assert len(run.metric("fwt")) == 2
            if setting == "class":
                assert [p.name for p in transfer_figure(run, tmp_path)] == ["transfer.png"]
    np.testing.assert_array_equal(mats["class"], mats["domain"])
    # single head over six classes: the last task's classes take over (class-incremental forgetting)
    assert mats["class"][-1, 0] < mats["task"][-1, 0]


def test_a_user_npz_file_makes_a_class_incremental_stream(tmp_path: Path) -> None:
    ds = neuro_data.load_dataset("digits")
    keep_tr, keep_te = ds.y_train < 4, ds.y_test < 4
    np.savez(tmp_path / "mine.npz", x_train=ds.x_train[keep_tr], y_train=ds.y_train[keep_tr],
             x_test=ds.x_test[keep_te], y_test=ds.y_test[keep_te])
    cfg = with_tables(CL, data={**CL["data"], "dataset": "npz", "path": str(tmp_path / "mine.npz")},
                      continual={"stream": "split", "n_tasks": 2, "setting": "class"})
    res = run_experiment(load_config(cfg), out=tmp_path / "npz.h5", progress=False)
    assert res.status == "done"
    assert [t.classes for t in res.experiment.tasks] == [[0, 1], [2, 3]]
    with open_run(res.path) as run:
        assert run.attrs_of("/continual/acc_matrix")["scenario"] == "class-incremental"
        assert np.asarray(run.array("/continual/acc_matrix")).shape == (2, 2)
