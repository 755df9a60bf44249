"""Sweeps (expansion, naming, validation, failure isolation, resume, process pool) and compare."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_config

from bioplaus.cli import main
from bioplaus.errors import ConfigError
from bioplaus.record import Recorder
from bioplaus.sweep import build_runs, compare, expand, run_file_name, sweep
from bioplaus.sweep.index import read_index
from bioplaus.sweep.spec import MAX_STEM, parse_axis

# 1e30 makes backprop's loss NaN at the second step: a run that fails at run time.
LRS = [0.05, 0.1, 1e30]
SMALL = {"train": {"epochs": 1, "report": False, "progress": False}}


def small_config() -> dict[str, Any]:
    return tiny_config(train__epochs=1, data__limit_train=256)


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------- expansion


def test_grid_zip_seeds_expansion_order_and_count() -> None:
    pts = expand({"rule.lr": [0.1, 0.2], "network.hidden": [[16], [16, 16], [32]]},
                 {"rule.name": ["backprop", "ccl"], "rule.momentum": [0.0, 0.9]}, seeds=2)
    assert len(pts) == 2 * 3 * 2 * 2
    assert pts[0] == ({"rule.lr": 0.1, "network.hidden": [16], "rule.name": "backprop", "rule.momentum": 0.0}, 0)
    assert pts[1][1] == 1 and pts[2][0]["rule.name"] == "ccl" and pts[2][0]["rule.momentum"] == 0.9
    # seed as an axis replaces --seeds
    pts = expand({"seed": [3, 7]}, None, None)
    assert pts == [({}, 3), ({}, 7)]
    with pytest.raises(ConfigError, match="seed is already an axis"):
        expand({"seed": [1]}, None, seeds=2)
    with pytest.raises(ConfigError, match="same number of values"):
        expand(None, {"a.b": [1, 2], "c.d": [1]}, 1)
    with pytest.raises(ConfigError, match="listed twice"):
        expand({"rule.lr": [0.1, 0.1]})
    # a zipped axis may repeat a value (bp, bp with two optimisers); a whole row may not
    assert [p for p, _ in expand(None, {"rule.name": ["bp", "bp"], "rule.optimizer": ["sgd", "adam"]})] == [
        {"rule.name": "bp", "rule.optimizer": "sgd"}, {"rule.name": "bp", "rule.optimizer": "adam"}]
    with pytest.raises(ConfigError, match="same combination"):
        expand(None, {"rule.name": ["bp", "bp"], "rule.lr": [0.1, 0.1]})


def test_axis_parsing_is_toml_and_keeps_lists_together() -> None:
    assert parse_axis("network.hidden=[16,16],[32]") == ("network.hidden", [[16, 16], [32]])
    assert parse_axis("rule.lr=0.05,1e-3,2") == ("rule.lr", [0.05, 1e-3, 2])
    assert parse_axis('rule.name=backprop,"ccl"') == ("rule.name", ["backprop", "ccl"])
    with pytest.raises(ConfigError):
        parse_axis("rule.lr")


def test_names_are_readable_safe_and_hashed_when_long() -> None:
    assert run_file_name("tiny", {"rule.lr": 0.05}, 1) == "tiny__rule.lr=0.05__seed=1.h5"
    assert run_file_name("t", {"network.hidden": [16, 16], "x": "a/b c"}, 0) == "t__network.hidden=_16_16___x=a_b_c__seed=0.h5"
    long = run_file_name("tiny", {f"rule.k{i}": 0.123456789 for i in range(20)}, 2)
    assert len(long) <= MAX_STEM + 3 and long.startswith("tiny__") and long.endswith("__seed=2.h5")
    assert long == run_file_name("tiny", {f"rule.k{i}": 0.123456789 for i in range(20)}, 2)  # deterministic
    specs = build_runs(small_config(), {"rule.lr": [0.05, 0.1]}, seeds=2, workers=2)
    assert [s.file for s in specs] == [f"tiny__rule.lr={lr}__seed={s}.h5" for lr in (0.05, 0.1) for s in (0, 1)]
    assert specs[3].config["rule"]["lr"] == 0.1 and specs[3].config["seed"] == 1
    assert specs[0].config["train"]["progress"] is False


def test_bad_grid_value_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "tiny.toml"
    toml.write_text('name = "tiny"\n[data]\ndataset = "digits"\n[rule]\nname = "backprop"\n')
    out = tmp_path / "sweep"
    assert main(["sweep", str(toml), "--grid", "rule.lr=0.1,abc", "--seeds", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rule.lr=abc" in err[0] and "rule.lr" in err[0]
    assert not out.exists()
    assert main(["sweep", str(toml), "--grid", "rule.nope=1", "--out", str(out)]) == 2
    assert not out.exists()


def test_one_sweep_per_directory(tmp_path: Path) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / ".sweep.lock").write_text(str(os.getppid()))  # a live process that is not us
    with pytest.raises(ConfigError, match="another sweep"):
        sweep(small_config(), grid={"rule.lr": [0.05]}, out=out, workers=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [".sweep.lock"]


# ---------------------------------------------------------------------- running


@pytest.fixture(scope="module")
def serial_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("sweep") / "lr"
    res = sweep(small_config(), grid={"rule.lr": LRS}, seeds=2, out=out, workers=1, progress=False)
    return out, res


def test_serial_sweep_writes_files_and_index_and_isolates_failures(serial_sweep: tuple[Path, Any]) -> None:
    out, res = serial_sweep
    files = sorted(p.name for p in out.glob("*.h5") if p.name != "index.h5")
    assert files == sorted(f"tiny__rule.lr={lr!r}__seed={s}.h5" for lr in LRS for s in (0, 1))
    rows = rows_of(out / "index.csv")
    assert [r["status"] for r in rows] == ["done"] * 4 + ["failed"] * 2
    assert not res.ok and len(res.failed) == 2 and res.counts() == {"done": 4, "failed": 2}
    for r in rows[:4]:
        assert r["headline"] == "test_acc" and float(r["headline_value"]) == float(r["final_test_acc"])
        assert 0 <= float(r["final_test_acc"]) <= 1 and float(r["wall_s"]) > 0 and r["steps"] == "2"
        assert r["error"] == ""
    for r in rows[4:]:
        assert "nan" in r["error"] and r["final_test_acc"] == ""
    assert [r["rule.lr"] for r in rows] == ["0.05", "0.05", "0.1", "0.1", "1e+30", "1e+30"]
    h5 = read_index(out / "index.h5")
    assert [r["file"] for r in h5] == [r["file"] for r in rows]
    assert h5[0]["final_test_acc"] == float(rows[0]["final_test_acc"]) and math.isnan(h5[5]["final_test_acc"])
    assert not (out / ".sweep.lock").exists() and not list(out.glob(".index*"))


def test_resume_skips_done_runs_and_reruns_failed(serial_sweep: tuple[Path, Any]) -> None:
    out, _ = serial_sweep
    before = rows_of(out / "index.csv")
    done = [out / r["file"] for r in before if r["status"] == "done"]
    mtimes = {p: p.stat().st_mtime_ns for p in done}
    # only the failed lr is left to run: restrict to it cheaply by resuming the whole sweep
    res = sweep(small_config(), grid={"rule.lr": LRS}, seeds=2, out=out, workers=1, progress=False)
    assert {p: p.stat().st_mtime_ns for p in done} == mtimes
    after = rows_of(out / "index.csv")
    for a, b in zip(before, after, strict=True):
        if a["status"] == "done":
            assert a == b  # same row, wall time included
    prev = sorted(p.name for p in (out / "previous").iterdir())
    assert prev == ["tiny__rule.lr=1e+30__seed=0.attempt1.h5", "tiny__rule.lr=1e+30__seed=1.attempt1.h5"]
    assert res.counts() == {"done": 4, "failed": 2}


def test_process_pool_gives_the_serial_numbers(serial_sweep: tuple[Path, Any], tmp_path: Path) -> None:
    serial_out, _ = serial_sweep
    out = tmp_path / "pool"
    # a run killed earlier: its file is moved aside and the run done again
    Recorder(out / "tiny__rule.lr=0.05__seed=1.h5", {}, seed=1).close("interrupted")
    res = sweep(small_config(), grid={"rule.lr": [0.05]}, seeds=2, out=out, workers=2, progress=False)
    assert res.ok
    assert [p.name for p in (out / "previous").iterdir()] == ["tiny__rule.lr=0.05__seed=1.attempt1.h5"]
    serial = {r["file"]: r for r in rows_of(serial_out / "index.csv")}
    for r in rows_of(out / "index.csv"):
        s = serial[r["file"]]
        finals = [k for k in r if k.startswith("final_")]
        assert finals and r["steps"] == s["steps"]
        # serial: cores threads, pool: cores // 2; summation order may move the last digits
        for k in finals:
            assert float(r[k]) == pytest.approx(float(s[k]), rel=1e-5, abs=1e-7), k


# ---------------------------------------------------------------------- compare


def _fake_run(path: Path, lr: float, seed: int, acc: float | None, status: str = "done") -> None:
    declared = json.dumps([{"name": "test_acc", "direction": "max", "headline": True}])
    cfg = {"name": "fake", "seed": seed, "rule": {"name": "backprop", "lr": lr}, "train": {"epochs": 1}}
    rec = Recorder(path, cfg, seed=seed, meta={"kind": "supervised", "declared_metrics": declared})
    finals = {} if acc is None else {"final_test_acc": acc, "final_test_loss": 1 - acc}
    rec.close(status, **finals)


def test_compare_mean_std_over_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    for lr, seed, acc in [(0.1, 0, 0.5), (0.1, 1, 0.7), (0.2, 0, 0.8), (0.2, 1, 0.9), (0.2, 2, 1.0)]:
        _fake_run(runs / f"fake__rule.lr={lr}__seed={seed}.h5", lr, seed, acc)
    _fake_run(runs / "fake__rule.lr=0.3__seed=0.h5", 0.3, 0, None, status="failed")
    c = compare([runs], write=False)
    assert c.metric == "test_acc" and c.by == ["rule.lr"]
    assert [(r["rule.lr"], r["n"], r["seeds"]) for r in c.rows] == [(0.1, 2, "0,1"), (0.2, 3, "0,1,2")]
    assert c.rows[0]["mean"] == pytest.approx(0.6) and c.rows[0]["std"] == pytest.approx(math.sqrt(0.02))
    assert c.rows[1]["mean"] == pytest.approx(0.9) and c.rows[1]["std"] == pytest.approx(0.1)
    assert c.excluded == {"failed": 1}

    assert main(["compare", str(runs), "--metric", "test_loss", "--plot"]) == 0
    text = capsys.readouterr().out
    assert "test_loss mean" in text and "0.4000" in text and "excluded: 1 failed" in text
    rows = rows_of(runs / "compare_test_loss.csv")
    assert [r["rule.lr"] for r in rows] == ["0.1", "0.2"] and float(rows[1]["mean"]) == pytest.approx(0.1)
    assert "| 0.1 | 2 | 0.4000 ± 0.1414 | 0,1 |" in (runs / "compare_test_loss.md").read_text()
    assert (runs / "compare_test_loss.png").stat().st_size > 1000

    # grouping by a key that does not differ; files named one by one; an unknown key
    c = compare(sorted(runs.glob("fake__rule.lr=0.2*.h5")), by=["rule.name"], write=False)
    assert [(r["rule.name"], r["n"]) for r in c.rows] == [("backprop", 3)]
    assert main(["compare", str(runs), "--by", "rule.nope"]) == 2
    assert main(["compare", str(runs), "--metric", "nope"]) == 2


# ---------------------------------------------------------------------- the worked example


def documented_output() -> list[str]:
    """The output block of docs/sweeps.md's worked example (after 'Run on 2 cores, it prints')."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "sweeps.md").read_text()
    block = text.split("Run on 2 cores, it prints", 1)[1].split("```", 2)[1]
    return [line.rstrip() for line in block.strip().splitlines()]


def run_sweep_example(tmp_path: Path, *extra: str) -> list[str]:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(root), os.environ.get("PYTHONPATH", "")] if p)}
    proc = subprocess.run([sys.executable, str(root / "examples" / "sweep_grid.py"), "runs", *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "runs" / "lr_hidden"
    assert len([p for p in out.glob("*.h5") if p.name != "index.h5"]) == 8
    assert (out / "compare_test_acc.png").stat().st_size > 1000
    return [line.rstrip() for line in proc.stdout.strip().splitlines()]


def test_worked_example_prints_what_the_docs_say(tmp_path: Path) -> None:
    assert run_sweep_example(tmp_path) == documented_output()


# ---------------------------------------------------------------------- benchmarks through sweeps


def test_benchmark_methods_as_one_sweep_give_each_method_its_exact_config() -> None:
    # benchmarks/_sweep.py: methods (sim files + overrides) become one sweep's zipped axes;
    # every run's config must be exactly the method's sim with its overrides.
    import sys

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root))
    from benchmarks._sweep import method_axes
    from bioplaus.config import load_config

    sims = root / "sims"
    cases = [
        ({m: (sims / f"{m.lower()}_fashion_mlp.toml", ["train.epochs=1"]) for m in ("BP", "FA", "DFA", "CCL")}
         | {"CCL spiking": (sims / "ccl_fashion_mlp_spiking.toml", [])}, ["train.threads=1"]),
        ({m: (sims / f"{m}.toml", []) for m in ("ft_pfashion_spiking", "ewc_pfashion_spiking", "proj_pfashion_spiking",
                                                 "hlop_pfashion_spiking", "joint_pfashion_rate", "hlop_pfashion_fa")},
         ["data.limit_train=64"]),
        ({"CCL": (sims / "ccl_ae_fashion.toml", []),
          "BP": (sims / "ccl_ae_fashion.toml", ["rule.method=bp", "rule.lr=0.03"]),
          "BP (Adam)": (sims / "ccl_ae_fashion.toml", ["rule.method=bp", "rule.optimizer=adam"])}, []),
    ]
    for methods, common in cases:
        base, axes = method_axes(methods, common)
        assert axes["description"] == list(methods)
        specs = build_runs(base, {"seed": [0, 1]}, axes, None, common)
        assert len(specs) == 2 * len(methods) and len({s.file for s in specs}) == len(specs)
        for spec, (sim, over) in zip(specs, [*methods.values(), *methods.values()], strict=True):
            want = load_config(sim, [*common, *over, f"seed={spec.seed}", "train.progress=false",
                                     "train.report=false"]).to_dict()
            got = spec.config
            assert {k for k in got | want if got.get(k) != want.get(k)} <= {"name", "description"}, spec.params
