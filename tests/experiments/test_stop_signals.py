"""SIGTERM ends long computations at once (issue 26, class 10): the Hopfield mean-field
solve (K = 64: minutes to its fixed point) and NoProp-CT's inference chain (eval_steps up to
1e5 per batch) check the run's stop between iterations; the run file ends "interrupted"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bioplaus
from bioplaus.hopfield import theory
from bioplaus.rules.base import RuleContext
from bioplaus.rules.noprop import NoProp

ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from bioplaus.cli import main; sys.exit(main())"
BOUND_S = 10.0  # generous: the machine is shared; the stop itself takes one iteration


class Stop(Exception):
    pass


def stop_after(n: int) -> tuple[list[int], object]:
    calls = [0]

    def check() -> None:
        calls[0] += 1
        if calls[0] > n:
            raise Stop

    return calls, check


def test_theory_solve_checks_before_every_iteration() -> None:
    g = theory.grid(3, 0.3)
    full = theory.solve(10.0, np.array([0.5, 0.2, 0.1]), g, tol=0.0, max_iter=50, escape=0)
    assert full.iterations == 50
    calls, check = stop_after(7)
    with pytest.raises(Stop):
        theory.solve(10.0, np.array([0.5, 0.2, 0.1]), g, tol=0.0, max_iter=50, escape=0, check=check)
    assert calls[0] == 8
    # the check changes nothing when it never stops
    same = theory.solve(10.0, np.array([0.5, 0.2, 0.1]), g, tol=0.0, max_iter=50, escape=0, check=lambda: None)
    np.testing.assert_array_equal(same.n, full.n)
    calls, check = stop_after(3)
    with pytest.raises(Stop):
        theory.phase_diagram(np.array([0.2, 0.4]), np.array([0.1]), 3, check=check)


@pytest.mark.parametrize("variant", ["ct", "fm"])
def test_noprop_inference_chain_checks_between_steps(variant: str) -> None:
    from bioplaus.config import RuleConfig

    rule = NoProp(RuleConfig(name="noprop", options={"variant": variant, "channels": [2, 2, 2], "width": 8,
                                                     "eval_steps": 40}))

    class Run:
        def __init__(self) -> None:
            self.calls, self.check_stop = stop_after(25)

    run = Run()
    ctx = RuleContext(n_classes=4, input_shape=(1, 8, 8), seed=0, run=run)
    rule.setup(rule.build_model(ctx), ctx)
    loader = [(torch_randn(6, 1, 8, 8), torch_tensor(np.arange(6) % 4))]
    with pytest.raises(Stop):
        rule.evaluate(loader)
    assert run.calls[0] == 26  # stopped inside the first chain of 40 steps
    assert rule.net.stop_check is None  # not left behind on the model


def torch_randn(*shape: int):  # noqa: ANN201
    import torch

    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def torch_tensor(a: np.ndarray):  # noqa: ANN201
    import torch

    return torch.as_tensor(a)


def _sigterm_when_running(tmp_path: Path, config: str, settle_s: float) -> tuple[float, str, Path]:
    """Start ``bioplaus run`` of TOML ``config``; once its run file exists and ``settle_s``
    passed, SIGTERM it; return (seconds to exit, stderr, the run file)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(config)
    out = tmp_path / "r.h5"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CLI, "run", str(cfg), "--out", str(out), "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while not out.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 180
            time.sleep(0.02)
        time.sleep(settle_s)
        assert proc.poll() is None  # still computing
        t1 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        return time.monotonic() - t1, err, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


HOPFIELD_K64 = """
kind = "hopfield"
[hopfield]
N = 600
K = 64
d = 0.5
T = 0.1
rule = "storing"
sweeps = 1000
burn_in = 10
replicas = 1
backend = "mc"
[train]
report = false
"""

NOPROP_CT = """
[data]
dataset = "digits"
batch_size = 32
limit_train = 32
limit_test = 32
[rule]
name = "noprop"
variant = "ct"
channels = [2, 2, 2]
width = 8
eval_steps = 100000
[train]
epochs = 1
threads = 1
report = false
"""


@pytest.mark.slow  # ~25 s each on the shared machine (interpreter, torch and the build before the signal)
@pytest.mark.parametrize(("config", "settle_s"), [(HOPFIELD_K64, 2.0), (NOPROP_CT, 3.0)], ids=["hopfield_k64", "noprop_ct"])
def test_sigterm_stops_the_long_phase_at_once(tmp_path: Path, config: str, settle_s: float) -> None:
    """Were: the K = 64 solve went on ~43 s and more after SIGTERM (> 120 s at N = 2000), the
    CT evaluation > 150 s."""
    pytest.importorskip("numba") if "hopfield" in config else None
    seconds, err, out = _sigterm_when_running(tmp_path, config, settle_s)
    assert err == f"bioplaus: interrupted; {out} holds everything up to the last flush (status 'interrupted')\n"
    assert seconds < BOUND_S
    with bioplaus.open_run(out) as run:
        assert run.status == "interrupted"
