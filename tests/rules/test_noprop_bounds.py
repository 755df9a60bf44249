"""NoProp's size is checked before allocation (issue 26, class 8): a model whose parameters
or workers exceed the machine is one ConfigError naming the fields and the size it would
need; a failed set-up ends with that error, never with a teardown's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import bioplaus
import neuro_data
from bioplaus.config import RuleConfig
from bioplaus.errors import ConfigError
from bioplaus.resources import physical_memory
from bioplaus.rules.base import RuleContext
from bioplaus.rules.noprop import NoProp, NoPropModel

TINY = {"channels": [4, 8, 8], "width": 16, "T": 3}
CFG = {
    "data": {"dataset": "digits", "batch_size": 32, "limit_train": 64, "limit_test": 32},
    "rule": {"name": "noprop", **TINY},
    "train": {"epochs": 1, "threads": 1, "report": False},
}


def rule_of(**opts: object) -> NoProp:
    return NoProp(RuleConfig(name="noprop", options={**TINY, **opts}))


def test_the_meta_skeleton_counts_the_real_parameters() -> None:
    """The check counts on the meta device; the count equals the built model's, for every variant."""
    for opts in ({}, {"variant": "ct"}, {"variant": "fm", "embedding": "learned", "embed_dim": 12},
                 {"variant": "backprop"}, {"variant": "cnn"}, {"embedding": "prototype"}):
        rule = rule_of(**opts)
        with torch.device("meta"):
            skeleton = NoPropModel(rule.opts, (1, 8, 8), 10, 0, None)
        real = NoPropModel(rule.opts, (1, 8, 8), 10, 0, None)
        assert sum(p.numel() for p in skeleton.parameters()) == sum(p.numel() for p in real.parameters()), opts


@pytest.mark.parametrize(("opts", "field"), [
    ({"width": 10**9}, "width=1000000000"),
    ({"channels": [10**5] * 3}, "channels=[100000, 100000, 100000]"),
    ({"embedding": "learned", "embed_dim": 10**9}, "embed_dim=1000000000"),
])
def test_huge_models_are_refused_before_allocation(tmp_path: Path, opts: dict, field: str) -> None:
    cfg = {**CFG, "rule": {**CFG["rule"], **opts}}
    out = tmp_path / "x.h5"
    with pytest.raises(ConfigError, match=r"rule \(noprop dt: .*parameters, about [\d.]+ [KMGTP]iB to train") as e:
        bioplaus.run(cfg, out=out, progress=False)
    assert field in str(e.value)
    assert not out.exists()


@pytest.mark.parametrize("x_shape", [(40, 64), (40, 3, 3)])
def test_small_or_flat_inputs_keep_their_one_line_error(tmp_path: Path, x_shape: tuple[int, ...]) -> None:
    """Was AttributeError 'NoProp' object has no attribute 'pool' from the teardown."""
    x = np.random.default_rng(0).random(x_shape).astype(np.float32)
    ds = neuro_data.from_arrays(x, np.arange(40) % 4)
    with pytest.raises(ConfigError, match="at least 4x4 pixels"):
        bioplaus.run(CFG, data=ds, out=tmp_path / "x.h5", progress=False)
    assert not (tmp_path / "x.h5").exists()


def test_close_before_setup_is_a_no_op() -> None:
    rule = rule_of()
    rule.close()
    assert rule.pool is None


def test_parallel_workers_are_checked_against_memory_and_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import bioplaus.resources as res

    ctx = RuleContext(n_classes=10, input_shape=(1, 8, 8), seed=0)
    monkeypatch.setattr(res, "cpu_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"rule.workers: 9 worker processes on 2 CPUs \(at most 4 per CPU, 8\)"):
        rule_of(mode="parallel", T=10, workers=9).build_model(ctx)
    rule_of(mode="parallel", T=10, workers=8).build_model(ctx)  # 8 = 4 per CPU: accepted
    # workers beyond T are not started: min(workers, T) counts
    rule_of(mode="parallel", T=3, workers=64).build_model(ctx)
    ram = physical_memory()
    monkeypatch.setattr(res, "physical_memory", lambda: 700 << 20)  # two ~320 MB workers fit, three do not
    rule_of(mode="parallel", T=2, workers=2).build_model(ctx)
    with pytest.raises(ConfigError, match=r"rule.workers: 3 worker processes of ~320\.\d MiB each would need about "
                                          r"9\d\d\.\d MiB, more than this machine's memory \(700\.0 MiB\)"):
        rule_of(mode="parallel", T=3, workers=3).build_model(ctx)
    assert ram > 0
