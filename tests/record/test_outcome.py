"""One reading of a run's outcome (`RunFile.outcome`), `Metric` in its own module, and the
figure selection of `make_report` (a kind's, rule's and plugins' `figures`, each figure's
`needs`)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bioplaus.config import kind_metrics
from bioplaus.metrics import Metric
from bioplaus.record import Recorder, open_run
from bioplaus.registry import EXPERIMENTS, FIGURES, TRAINING_FIGURES, FigureSpec
from bioplaus.report.kit import figures_for, make_report
from bioplaus.sweep.index import outcome_row

ROOT = Path(__file__).resolve().parents[2]
DECLARED = json.dumps([Metric("test_acc", "max", headline=True).to_json(), Metric("loss", "min").to_json()])


def _done(path: Path, config: dict, meta: dict | None = None, **finals: object) -> Path:
    with Recorder(path, config, seed=3, meta=meta or {}) as rec:
        rec.log_metrics(1, train_loss=1.0)
        rec.log_metrics(2, train_loss=0.5)
        rec.close("done", seconds=1.5, steps=2, **finals)
    return path


# ---------------------------------------------------------------------- Metric


def test_metric_lives_in_a_leaf_module() -> None:
    import bioplaus
    import bioplaus.context
    import bioplaus.metrics

    assert bioplaus.Metric is bioplaus.metrics.Metric is bioplaus.context.Metric
    tree = ast.parse((ROOT / "bioplaus" / "metrics.py").read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("bioplaus")], imported


# ---------------------------------------------------------------------- outcome


def test_outcome_of_a_done_run(tmp_path: Path) -> None:
    path = _done(tmp_path / "r.h5", {"name": "r", "kind": "supervised", "rule": {"lr": 0.1}},
                 {"kind": "supervised", "declared_metrics": DECLARED},
                 final_test_acc=0.9, final_loss=0.25, final_flag=True, final_note="text")
    with open_run(path) as run:
        o = run.outcome()
    assert (o.path, o.name, o.status, o.kind, o.seed) == (path, "r", "done", "supervised", 3)
    assert o.config["rule"] == {"lr": 0.1}
    assert (o.error, o.steps, o.seconds) == (None, 2, 1.5)
    assert o.finals == {"test_acc": 0.9, "loss": 0.25}  # numbers only: not the bool, not the text
    assert [m.name for m in o.declared] == ["test_acc", "loss"]
    assert o.headline is not None and (o.headline.name, o.headline.direction) == ("test_acc", "max")
    assert o.headline_value == 0.9
    row = outcome_row(o)
    assert list(row) == ["status", "error", "steps", "run_s", "final_loss", "final_test_acc", "headline",
                         "headline_value"]
    assert (row["run_s"], row["headline"], row["headline_value"]) == (1.5, "test_acc", 0.9)


def test_outcome_of_a_failed_run(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    Recorder(path, {"name": "f"}, seed=0).close("failed", error="boom")
    with open_run(path) as run:
        o = run.outcome()
        stated = run.outcome(lambda cfg: [Metric("x", "min", headline=True)])
    assert (o.status, o.error, o.kind, o.steps, o.seconds, o.finals) == ("failed", "boom", None, None, None, {})
    assert o.declared == [] and o.headline is None and o.headline_value is None
    assert "headline" not in outcome_row(o)
    # no declarations stored: the fallback says them; the run did not reach the headline
    assert stated.headline is not None and stated.headline.name == "x" and stated.headline_value is None


def test_outcome_of_a_file_without_declarations_asks_its_kind(tmp_path: Path) -> None:
    config = {"name": "old", "kind": "supervised", "data": {"dataset": "digits"}, "rule": {"name": "backprop"}}
    path = _done(tmp_path / "old.h5", config, {"kind": "supervised"}, final_test_acc=0.8)
    with open_run(path) as run:
        o = run.outcome(kind_metrics)
        assert run.declared_metrics() == []
    assert o.headline is not None and o.headline.name == "test_acc" and o.headline_value == 0.8
    assert kind_metrics({"kind": "no_such_kind"}) == []


@pytest.mark.parametrize("raw", ["not json [", "[1, 2]", json.dumps({"name": "x"}), json.dumps([{"name": 5}])])
def test_malformed_declarations_are_none(tmp_path: Path, raw: str) -> None:
    path = _done(tmp_path / "m.h5", {"name": "m"}, {"declared_metrics": raw}, final_x=1.0)
    with open_run(path) as run:
        o = run.outcome(lambda cfg: [Metric("x", headline=True)])  # declarations exist: no fallback
    assert o.declared == [] and o.headline is None and o.finals == {"x": 1.0}


def test_the_sweep_reads_outcomes_without_api_or_report(tmp_path: Path) -> None:
    """`read_outcome`, the index and `compare` use the reader only (matplotlib only for --plot)."""
    for seed, acc in ((0, 0.5), (1, 0.7)):
        _done(tmp_path / f"r{seed}.h5", {"name": "r", "seed": seed}, {"declared_metrics": DECLARED},
              final_test_acc=acc)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from bioplaus.sweep import compare\n"
        "from bioplaus.sweep.executors import read_outcome\n"
        f"d = Path({str(tmp_path)!r})\n"
        "row = read_outcome(d / 'r0.h5')\n"
        "assert row['headline'] == 'test_acc' and row['headline_value'] == 0.5, row\n"
        "c = compare([d], write=False)\n"
        "assert c.metric == 'test_acc' and c.rows[0]['n'] == 2 and abs(c.rows[0]['mean'] - 0.6) < 1e-12\n"
        "bad = [m for m in ('bioplaus.api', 'bioplaus.report.kit', 'bioplaus.report.text', 'matplotlib')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------- figure selection


def _everything(path: Path, config: dict, meta: dict | None = None) -> Path:
    """A file holding the data of every generic figure and of the continual ones."""
    with Recorder(path, config, seed=0, meta=meta or {}) as rec:
        for step in range(1, 6):
            rec.log_metrics(step, train_loss=1.0 / step, **{"layer0/loss": 1.0 / step, "task0/test_acc": 0.1 * step})
        rec.log_spikes("hidden", 5, np.ones((4, 2, 3), dtype=bool), dt=1e-3)
        rec.log_trace("hidden.mem", 5, np.ones((4, 2, 3), dtype=np.float32), unit="1", dt=1e-3, every=1,
                      dims="time,sample,neuron")
        rec.log_weights("fc0", 5, np.ones((3, 3)))
        rec.log_array("/continual/acc_matrix", np.eye(2), ACC=0.5, BWT=0.0)
    return path


def test_a_kind_selects_its_figures(tmp_path: Path) -> None:
    hop = _everything(tmp_path / "h.h5", {"name": "h", "kind": "hopfield"}, {"kind": "hopfield"})
    with open_run(hop) as run:
        assert figures_for(run) == sorted(EXPERIMENTS.get("hopfield").figures)
    # the training figures' and continual's data are there, but a hopfield run does not draw them
    assert [p.name for p in make_report(hop, tmp_path / "h")] == ["learning_curves.png"]

    sup = _everything(tmp_path / "s.h5", {"name": "s", "kind": "supervised"}, {"kind": "supervised"})
    with open_run(sup) as run:
        assert figures_for(run) == sorted(TRAINING_FIGURES)
    names = {p.name for p in make_report(sup, tmp_path / "s")}
    assert names == {"learning_curves.png", "layer_metrics.png", "spikes_hidden.png", "membrane_hidden.mem.png",
                     "weights.png"}

    cl = _everything(tmp_path / "c.h5", {"name": "c", "kind": "continual"}, {"kind": "continual"})
    assert {p.name for p in make_report(cl, tmp_path / "c")} == names | {"acc_matrix.png", "task_curves.png", "transfer.png"}


def test_a_rule_adds_its_figures_and_an_unknown_kind_gets_the_training_ones(tmp_path: Path) -> None:
    path = _done(tmp_path / "n.h5", {"name": "n", "kind": "no_such_kind", "rule": {"name": "noprop"},
                                     "plugins": [{"name": "hlop"}, {"name": "not_installed"}]})
    with open_run(path) as run:
        assert figures_for(run) == sorted({*TRAINING_FIGURES, "noprop_steps", "noprop_trajectory"})


def test_a_figure_is_tried_only_where_its_data_is(tmp_path: Path) -> None:
    calls: list[str] = []
    original = FIGURES.get("spikes")

    def spy(run: object, out_dir: Path) -> list[Path]:
        calls.append("spikes")
        return []

    FIGURES.register("spikes", FigureSpec(spy, needs=original.needs))
    try:
        metrics_only = _done(tmp_path / "m.h5", {"name": "m"})
        assert [p.name for p in make_report(metrics_only, tmp_path / "m")] == ["learning_curves.png"]
        assert calls == []  # no /spikes: not tried
        make_report(_everything(tmp_path / "e.h5", {"name": "e"}), tmp_path / "e")
        assert calls == ["spikes"]
    finally:
        FIGURES.register("spikes", original)
    with open_run(metrics_only) as run:
        assert FigureSpec(spy).applies(run) and not original.applies(run)
