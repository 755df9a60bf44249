"""benchmarks/gpu_check.py: its CPU-only path (one line, exit 0) and its table code.

The GPU path itself needs CUDA; here its parts are checked on the CPU: the case list covers
every registered rule, neuron model and plugin, a case runs and two same-device runs agree
exactly, rows and the verdict follow the tolerance.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from benchmarks import gpu_check as g
from bioplaus.registry import NEURONS, PLUGINS, RULES


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only path")
def test_without_cuda_one_line_exit_0(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") == 1 and r.stdout.startswith("gpu_check: no CUDA device here (torch ")
    assert not (tmp_path / "benchmarks").exists()


def test_cases_cover_every_component(tmp_path: Path) -> None:
    got = {(part, item) for part, item, _ in g.cases(tmp_path)}
    want = ({("rule", n) for n in RULES.names()} | {("neuron model", n) for n in NEURONS.names()}
            | {("plugin", n) for n in PLUGINS.names()})
    assert got == want


def test_a_case_runs_and_same_device_agrees(tmp_path: Path) -> None:
    """The runner on the CPU twice (the GPU's stand-in): same seed, the same headline."""
    (_, item, cfg) = next(c for c in g.cases(tmp_path) if c[:2] == ("neuron model", "spiking"))
    a = g.run_on(cfg, "cpu", tmp_path / "a.h5")
    b = g.run_on(cfg, "cpu", tmp_path / "b.h5")
    assert a[0] == "done" and a[2] == "test_acc" and 0.0 <= a[3] <= 1.0
    row = g.agreement_row("neuron model", item, a, b, tol=0.0)
    assert row["|diff|"] == 0.0 and row["result"] == "ok"
    bad = g.run_on(g.cases(tmp_path)[0][2], "no_such_device", tmp_path / "c.h5")
    assert bad[0].startswith("error: ConfigError") and math.isnan(bad[3])


def test_rows_and_verdict_follow_the_tolerance() -> None:
    cpu = ("done", 1.0, "test_acc", 0.90)
    rows = [g.agreement_row("rule", "a", cpu, ("done", 0.5, "test_acc", 0.91), 0.02),
            g.agreement_row("rule", "b", cpu, ("done", 0.5, "test_acc", 0.80), 0.02),
            g.agreement_row("rule", "c", cpu, ("error: X: y", 0.1, "", math.nan), 0.02),
            g.curve_agreement([0.5, 0.8, 0.9], [0.5, 0.79, 0.91], 0.02),
            g.curve_agreement([0.5, 0.8], [0.5], 0.02)]
    assert [r["result"] for r in rows] == ["ok", "DIFF > 0.02", "FAIL", "ok", "DIFF > 0.02"]
    assert rows[0]["|diff|"] == pytest.approx(0.01) and rows[3]["|diff|"] == pytest.approx(0.01)
    text = g.render(rows, "header")
    lines = text.splitlines()
    assert lines[0] == "# GPU check" and lines[2] == "header"
    assert lines[4] == "| " + " | ".join(g.COLS) + " |"
    assert sum(ln.startswith("| rule |") for ln in lines) == 3
    assert lines[-1] == "Verdict: 3 of 5 rows failed: rule b, rule c, agreement quickstart, 1 epochs, test_acc per epoch"
    assert g.render(rows[:1], "h").splitlines()[-1] == "Verdict: all ok"


def test_speed_rows_from_spiking_speed_result() -> None:
    res = {"constant": {"bioplaus": {"median_s": 0.01}, "snntorch": {"median_s": 0.03}},
           "spike train": {"bioplaus": {"median_s": 0.02}, "snntorch": {"median_s": 0.05}}}
    rows = g.speed_rows(res)
    assert [r["item"] for r in rows] == ["bioplaus, constant input", "snntorch, constant input",
                                         "bioplaus, spike train input", "snntorch, spike train input"]
    assert [r["result"] for r in rows] == ["1.00x bioplaus's time", "3.00x bioplaus's time",
                                           "1.00x bioplaus's time", "2.50x bioplaus's time"]
