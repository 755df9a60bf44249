"""The shared contract, run over every registered rule, plugin, neuron model and kind.

One pytest case per (component, check) from `bioplaus.conformance` (scikit-learn's
``parametrize_with_checks`` is the model): a component is tested the moment it registers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bioplaus.conformance import cases, checks, parametrize_with_checks
from bioplaus.registry import EXPERIMENTS, GROUPS

pytestmark = pytest.mark.usefixtures("one_thread")


@parametrize_with_checks()
def test_component(component: Any, check: Any, tmp_path: Path) -> None:
    check(component, tmp_path)


def test_every_component_of_every_checked_group_has_cases() -> None:
    """No registered component escapes the suite: each gets every check of its group."""
    got = {(c.group, c.name, c.check) for c in cases()}
    for group, group_checks in checks().items():
        names = GROUPS[group].names()
        assert names, group
        for name in names:
            for check in group_checks:
                assert (group, name, check) in got, f"{group}:{name} misses {check.__name__}"


def test_a_broken_component_fails_its_checks(tmp_path: Path) -> None:
    """The checks can fail: a plugin whose hook takes the old shape, a model whose scan
    disagrees with its step, a kind without a headline."""
    from bioplaus.conformance import (
        check_kind_declares,
        check_neuron_scan_is_its_steps,
        check_plugin_hook_shapes,
    )
    from bioplaus.experiments.base import Experiment
    from bioplaus.metrics import Metric
    from bioplaus.neurons import LIFModel
    from bioplaus.training.hooks import Plugin

    class OldHooks(Plugin):
        name = "old_hooks"

        def after_step(self, step: int, metrics: dict[str, float]) -> None:  # type: ignore[override]
            pass

    with pytest.raises(AssertionError, match=r"after_step\('self', 'step', 'metrics'\)"):
        check_plugin_hook_shapes(OldHooks, tmp_path)

    class WrongScan(LIFModel):  # a fast path that drops every other spike
        name = "spiking"

        @classmethod
        def scan(cls, current, params):  # noqa: ANN001, ANN206
            out, mem = LIFModel.scan(current, params)
            out = out.clone()
            out[::2] = 0
            return out, mem

    with pytest.raises(AssertionError, match="scan and step loop disagree"):
        check_neuron_scan_is_its_steps(WrongScan, tmp_path)

    class NoHeadline(Experiment):
        name = "no_headline"

        @classmethod
        def declared_metrics(cls, cfg: Any) -> list[Metric]:
            return [Metric("err", "min")]

    EXPERIMENTS.register("no_headline", NoHeadline)
    try:
        with pytest.raises(AssertionError, match="exactly one headline"):
            check_kind_declares(NoHeadline, tmp_path)
    finally:
        EXPERIMENTS.unregister("no_headline")
