"""Sweep sizes and arguments refused up front (issue 26, classes 9 and 11): the number of
runs is bounded before any is planned, workers against memory and CPUs, and every argument
of ``sweep`` ends with the project's error naming it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_config

from bioplaus.errors import ConfigError
from bioplaus.sweep import expand, sweep
from bioplaus.sweep.spec import MAX_RUNS, RUN_BYTES

CLI = "import sys; from bioplaus.cli import main; sys.exit(main())"


def test_a_billion_seeds_are_refused_before_planning(tmp_path: Path) -> None:
    """Was: grew to 7 GB building the list of runs (`sweep --seeds 1000000000`)."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", CLI, "sweep", "sims/quickstart.toml", "--seeds", "1000000000",
                        "--out", str(tmp_path / "s")], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).parents[2])
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [
        f"bioplaus: error: --seeds: 1 settings x 1000000000 seeds = 1000000000 runs, more than {MAX_RUNS} per sweep; "
        f"planning them would need about {1e9 * RUN_BYTES / 2**40:.1f} TiB"]
    assert not (tmp_path / "s").exists()
    assert time.perf_counter() - t0 < 60  # generous: the interpreter's start-up dominates


def test_run_count_bound_is_exact() -> None:
    assert len(expand({"a": list(range(10))}, None, MAX_RUNS // 10)) == MAX_RUNS
    with pytest.raises(ConfigError, match=r"^--seeds: 10 settings x 10001 seeds = 100010 runs"):
        expand({"a": list(range(10))}, None, MAX_RUNS // 10 + 1)
    with pytest.raises(ConfigError, match=r"^--grid: 1000000 settings x 1 seeds"):
        expand({"a": list(range(1000)), "b": list(range(1000))})
    with pytest.raises(ConfigError, match=r"^--grid a: 100001 values"):
        expand({"a": range(MAX_RUNS + 1)})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"config": None}, "config: expected a TOML path, a sim name, a dict or an ExperimentConfig, got NoneType"),
    ({"config": 42}, "config: expected a TOML path"),
    ({"seeds": "3"}, "--seeds: expected a positive integer, got str"),
    ({"seeds": 2.5}, "--seeds: expected a positive integer, got float"),
    ({"seeds": True}, "--seeds: expected a positive integer, got bool"),
    ({"seeds": 0}, "--seeds: expected a positive integer, got 0"),
    ({"workers": "2"}, "--workers: expected a positive integer, got str"),
    ({"workers": 0}, "--workers: expected a positive integer, got int 0"),
    ({"workers": 10**6, "seeds": 40}, "--workers: 40 worker processes on"),  # only min(workers, runs) start
    ({"out": "a\0b"}, r"--out: the path 'a\x00b' contains a NUL byte"),
    ({"out": 7}, "--out: expected a path"),
    ({"grid": [1, 2]}, "--grid: expected a dict of dotted key -> list of values, got list"),
    ({"grid": {"rule.lr": 0.1}}, "--grid rule.lr: expected a list of values, got float"),
    ({"grid": {"rule.lr": "0.1"}}, "--grid rule.lr: expected a list of values, got str"),
    ({"zip": {1: [1]}}, "--zip: keys must be dotted strings"),
    ({"overrides": "rule.lr=0.1"}, "overrides: expected a list of 'key=value' strings or a dict, got str"),
    ({"overrides": [1]}, "overrides: expected 'key=value' strings, got int 1"),
])
def test_sweep_arguments_end_with_a_config_error(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"config": tiny_config(), "out": tmp_path / "s", "progress": False, **kwargs}
    with pytest.raises(ConfigError) as e:
        sweep(**args)
    assert str(e.value).startswith(message), str(e.value)
    assert not (tmp_path / "s").exists()
