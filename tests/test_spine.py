"""Config, registry (entry points), rule/plugin life cycle on the trainer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import TINY

import bioplaus
from bioplaus import registry
from bioplaus.config import ExperimentConfig, load_config, parse_override
from bioplaus.errors import ConfigError
from bioplaus.experiments import run_experiment
from bioplaus.nets import build_net
from bioplaus.plugins.base import Plugin
from bioplaus.rules.backprop import Backprop


def test_defaults_and_overrides() -> None:
    cfg = load_config(TINY, ["rule.lr=0.5", "network.hidden=[8, 4]", "network.spiking.reset=zero"])
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.rule.lr == 0.5 and cfg.network.hidden == [8, 4]
    assert cfg.network.spiking.reset == "zero"
    assert parse_override("a.b=word") == ("a.b", "word")
    assert parse_override("a=1e-3") == ("a", 1e-3)


def test_config_round_trips_through_json() -> None:
    cfg = load_config({**TINY, "rule": {"name": "backprop", "lr": 0.1}})
    again = load_config(json.loads(cfg.to_json()))
    assert again == cfg


def test_rule_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="rule.bogus: unknown key"):
        load_config({**TINY, "rule": {"name": "backprop", "bogus": 1}})


def test_int_accepted_for_float_but_not_bool_for_int() -> None:
    assert load_config(TINY, ["rule.lr=1"]).rule.lr == 1.0
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(TINY, ["train.epochs=true"])


def test_rule_backend_support_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    @registry.register_rule("rate_only_test")
    class RateOnly(Backprop):
        needs = frozenset({"static", "differentiable"})

    try:
        with pytest.raises(ConfigError, match=r"supports rate, not 'spiking' \(it needs static neurons\)"):
            load_config({**TINY, "rule": {"name": "rate_only_test"}}, ["network.backend=spiking"])
    finally:
        registry.RULES.unregister("rate_only_test")


def test_third_party_rule_through_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    class Sign(Backprop):
        """A stand-in third-party rule."""

    class EP:
        name = "thirdparty_sign"

        def load(self) -> type:
            return Sign

    def fake_entry_points(group: str) -> list:
        return [EP()] if group == "bioplaus.rules" else []

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry.RULES, "_loaded", False)
    try:
        assert "thirdparty_sign" in registry.rule_names()
        assert registry.get_rule("thirdparty_sign") is Sign
        load_config({**TINY, "rule": {"name": "thirdparty_sign"}})
    finally:
        registry.RULES.unregister("thirdparty_sign")


@dataclass
class _Opts:
    freeze_layer: int = -1


class _Recorder(Plugin):
    """Test plugin: records the hook order and freezes one layer by zeroing its gradient."""

    name = "hook_recorder_test"
    Options = _Opts

    def __init__(self, options: dict | None = None) -> None:
        super().__init__(options)
        self.calls: list[str] = []

    def setup(self, rule, ctx) -> None:  # noqa: ANN001
        self.rule = rule
        self.calls.append("setup")

    def before_task(self, rule, task, loader) -> None:  # noqa: ANN001
        self.calls.append("before_task")

    def after_task(self, rule, task, loader) -> None:  # noqa: ANN001
        self.calls.append("after_task")

    def after_backward(self, rule) -> None:  # noqa: ANN001
        self.calls.append("after_backward")
        if self.opts.freeze_layer >= 0:
            rule.net.layers[self.opts.freeze_layer].weight.grad.zero_()

    def after_update(self, rule) -> None:  # noqa: ANN001
        self.calls.append("after_update")

    def after_step(self, rule, step, metrics) -> None:  # noqa: ANN001
        self.calls.append("after_step")

    def after_epoch(self, rule, epoch, metrics) -> None:  # noqa: ANN001
        self.calls.append("after_epoch")

    def close(self, rule) -> None:  # noqa: ANN001
        self.calls.append("close")


def test_plugin_hooks_in_order_and_can_rewrite_gradients(tmp_path: Path) -> None:
    registry.register_plugin("hook_recorder_test")(_Recorder)
    try:
        cfg = load_config({**TINY, "plugins": [{"name": "hook_recorder_test", "freeze_layer": 0}]})
        init = build_net(cfg.network, (1, 8, 8), 10, seed=cfg.seed)
        out = run_experiment(cfg, out=tmp_path / "h.h5", progress=False)
        tr = out.experiment
    finally:
        registry.PLUGINS.unregister("hook_recorder_test")
    calls = tr.user_plugins[0].calls
    assert calls[:2] == ["setup", "before_task"]
    assert calls[2:6] == ["after_backward", "after_update", "after_step", "after_backward"]
    assert calls.count("after_epoch") == 2 and calls[-2:] == ["after_task", "close"]
    assert torch.equal(tr.model.layers[0].weight.detach(), init.layers[0].weight.detach())
    assert not torch.equal(tr.model.layers[1].weight.detach(), init.layers[1].weight.detach())
    with bioplaus.open_run(out.path) as run:
        assert run.config["plugins"][0]["name"] == "hook_recorder_test"


def test_cosine_schedule_reaches_zero(tmp_path: Path) -> None:
    cfg = load_config(TINY, ["rule.schedule=cosine", "train.log_every=1"])
    res = run_experiment(cfg, out=tmp_path / "c.h5", progress=False)
    with bioplaus.open_run(res.path) as run:
        lr = run.metrics["lr"]
        assert len(lr) == 8 and lr[0] == pytest.approx(0.1, rel=0.05) and lr[-1] < 1e-6


def test_override_of_a_missing_list_entry_names_it() -> None:
    with pytest.raises(ConfigError, match="plugins has no entry 0"):
        load_config(TINY, ["plugins.0.lam=3"])
