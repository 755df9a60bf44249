"""The training layer: hooks of one shape, the task a kind tells, the update sequence."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from bioplaus import registry
from bioplaus.config import RuleConfig, load_config
from bioplaus.errors import ConfigError, RunError
from bioplaus.experiments import run_experiment
from bioplaus.rules.base import LearningRule
from bioplaus.rules.ccl import CCL
from bioplaus.rules.ccl_ae import CCLAutoencoder
from bioplaus.rules.feedback_alignment import DirectFeedbackAlignment, FeedbackAlignment
from bioplaus.training.hooks import Plugin, PluginList
from bioplaus.training.optim import make_optimizer, make_scheduler, update
from bioplaus.training.task import RuleContext, TaskInfo

ROOT = Path(__file__).resolve().parents[2]
HOOKS = ("setup", "before_task", "after_task", "before_step", "after_backward", "after_update", "after_step", "after_epoch", "close")


class _Log(Plugin):
    """Test plugin: appends (its tag, the hook, the arguments) to a shared list."""

    def __init__(self, tag: str, out: list[tuple[Any, ...]]) -> None:
        super().__init__({})
        self.tag, self.out = tag, out

    def setup(self, rule: Any, ctx: Any) -> None:
        self.out.append((self.tag, "setup", rule, ctx))

    def before_task(self, rule: Any, task: TaskInfo, loader: Any) -> None:
        self.out.append((self.tag, "before_task", rule, task, loader))

    def after_task(self, rule: Any, task: TaskInfo, loader: Any) -> None:
        self.out.append((self.tag, "after_task", rule, task, loader))

    def after_backward(self, rule: Any) -> None:
        self.out.append((self.tag, "after_backward", rule))

    def after_update(self, rule: Any) -> None:
        self.out.append((self.tag, "after_update", rule))

    def after_step(self, rule: Any, step: int, metrics: dict[str, float]) -> None:
        self.out.append((self.tag, "after_step", rule, step, metrics))

    def after_epoch(self, rule: Any, epoch: int, metrics: dict[str, float]) -> None:
        self.out.append((self.tag, "after_epoch", rule, epoch, metrics))

    def close(self, rule: Any) -> None:
        self.out.append((self.tag, "close", rule))


def test_training_imports_neither_rules_nor_plugins() -> None:
    code = (
        "import sys, bioplaus.training.hooks, bioplaus.training.optim, bioplaus.training.task\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('bioplaus.rules', 'bioplaus.plugins')))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_plugin_list_has_one_method_per_hook_and_calls_them_in_order() -> None:
    assert "__getattr__" not in vars(PluginList)
    for hook in HOOKS:
        assert callable(vars(Plugin)[hook]) and callable(vars(PluginList)[hook])
    out: list[tuple[Any, ...]] = []
    plugins = PluginList([_Log("a", out), _Log("b", out)])
    rule, ctx, task, loader = object(), RuleContext(10), TaskInfo(1, 3), [1, 2]
    plugins.setup(rule, ctx)
    plugins.before_task(rule, task, loader)
    plugins.after_backward(rule)
    plugins.after_update(rule)
    plugins.after_step(rule, 7, {"loss": 1.0})
    plugins.after_epoch(rule, 2, {"acc": 0.5})
    plugins.after_task(rule, task, loader)
    plugins.close(rule)
    assert out == [
        ("a", "setup", rule, ctx), ("b", "setup", rule, ctx),
        ("a", "before_task", rule, task, loader), ("b", "before_task", rule, task, loader),
        ("a", "after_backward", rule), ("b", "after_backward", rule),
        ("a", "after_update", rule), ("b", "after_update", rule),
        ("a", "after_step", rule, 7, {"loss": 1.0}), ("b", "after_step", rule, 7, {"loss": 1.0}),
        ("a", "after_epoch", rule, 2, {"acc": 0.5}), ("b", "after_epoch", rule, 2, {"acc": 0.5}),
        ("a", "after_task", rule, task, loader), ("b", "after_task", rule, task, loader),
        ("a", "close", rule), ("b", "close", rule),
    ]


def test_before_step_hands_each_plugin_the_batch_the_previous_one_returned() -> None:
    class Twice(Plugin):
        def before_step(self, rule: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.cat([x, x + 1]), torch.cat([y, y])

    x, y = torch.zeros(2, 3), torch.tensor([0, 1])
    bx, by = PluginList([Twice(), Plugin(), Twice()]).before_step(object(), x, y)
    assert bx[:, 0].tolist() == [0, 0, 1, 1, 1, 1, 2, 2] and by.tolist() == [0, 1] * 4
    assert PluginList().before_step(object(), x, y) == (x, y)


def test_task_info_is_frozen_and_names_its_task() -> None:
    assert (TaskInfo().index, TaskInfo().n_tasks, TaskInfo().classes) == (0, 1, ())
    stream = TaskInfo(0, 3, "task", "sequential", ((0, 1), (2, 3), (4, 5)))
    assert stream.classes == (0, 1)
    assert stream.at(2).classes == (4, 5) and stream.at(2).n_tasks == 3 and stream.index == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        stream.index = 1  # type: ignore[misc]
    assert "extra" not in {f.name for f in dataclasses.fields(RuleContext)}


def test_learning_rule_is_abstract_and_the_leaf_rules_final() -> None:
    with pytest.raises(TypeError, match="train_step"):
        LearningRule()  # type: ignore[abstract]
    for cls in (CCL, CCLAutoencoder, FeedbackAlignment, DirectFeedbackAlignment):
        assert getattr(cls, "__final__", False), cls.__name__
    from bioplaus.registry import RULES

    for name, cls in RULES.items():  # every built-in rule: abstract or final, none in between
        assert getattr(cls, "__final__", False) or inspect.isabstract(cls), name


class _Rule:
    """What `update` needs of a rule: its plugins and its step counter."""

    def __init__(self, plugins: PluginList) -> None:
        self.plugins = plugins
        self.step = 4


def test_update_runs_hooks_around_the_step_and_folds_the_clip() -> None:
    """SGD (fused, no momentum), clip 0.1: after_backward sees the raw gradient, the step is
    -lr · g · 0.1 / (|g| + 1e-6), p.grad holds the clipped gradient, after_update the new
    weights."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    w0 = lin.weight.detach().clone()
    opt = make_optimizer(RuleConfig(lr=0.5), lin.parameters())
    assert opt.param_groups[0]["fused"]
    seen: dict[str, Any] = {}

    class Watch(Plugin):
        def after_backward(self, rule: Any) -> None:
            seen["grads"] = [p.grad.clone() for p in lin.parameters()]

        def after_update(self, rule: Any) -> None:
            seen["w"] = lin.weight.detach().clone()

    loss = lin(torch.randn(8, 4)).pow(2).sum()
    update(_Rule(PluginList([Watch()])), loss, [(opt, 0.1, None)])
    g = seen["grads"]
    norm = float(torch.linalg.vector_norm(torch.stack([x.norm() for x in g])))
    assert norm > 0.1
    scale = 0.1 / (norm + 1e-6)
    torch.testing.assert_close(lin.weight.grad, g[0] * scale)
    torch.testing.assert_close(seen["w"], w0 - 0.5 * g[0] * scale)
    with pytest.raises(RunError, match="at step 5"):
        update(_Rule(PluginList()), torch.tensor(float("nan"), requires_grad=True), [(opt, 0.0, None)])


def test_optimizer_and_schedule_follow_the_rule_config() -> None:
    p = [nn.Parameter(torch.zeros(3))]
    assert isinstance(make_optimizer(RuleConfig(optimizer="adamw"), p), torch.optim.AdamW)
    with pytest.raises(ConfigError, match="rule.optimizer"):
        make_optimizer(RuleConfig(optimizer="lion"), p)
    opt = make_optimizer(RuleConfig(lr=0.2, momentum=0.5), p, lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["momentum"] == 0.5
    assert make_scheduler(RuleConfig(), opt, 10) is None
    sched = make_scheduler(RuleConfig(schedule="cosine"), opt, 10)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # ½ (1 + cos π/2) · 0.1


def test_continual_kind_tells_the_rule_and_plugins_the_stream(tmp_path: Path) -> None:
    out: list[tuple[Any, ...]] = []

    class TaskLog(_Log):
        def __init__(self, options: dict[str, Any] | None = None) -> None:
            super().__init__("p", out)

    registry.register_plugin("task_log_test")(TaskLog)
    try:
        cfg = load_config({
            "kind": "continual",
            "data": {"dataset": "digits", "val_fraction": 0.0, "batch_size": 64, "limit_test": 100},
            "network": {"backend": "rate", "hidden": [16]},
            "rule": {"name": "backprop", "lr": 0.05},
            "train": {"report": False, "progress": False, "max_steps": 2},
            "continual": {"stream": "split", "n_tasks": 2, "classes_per_task": 2, "epochs_per_task": 1},
            "plugins": [{"name": "task_log_test"}],
        })
        res = run_experiment(cfg, out=tmp_path / "s.h5", progress=False)
    finally:
        registry.PLUGINS.unregister("task_log_test")
    rule = res.experiment.rule
    stream = TaskInfo(0, 2, "task", "sequential", ((0, 1), (2, 3)))
    assert rule.ctx.stream == stream
    tasks = [(e[1], e[3]) for e in out if e[1] in ("before_task", "after_task")]
    assert tasks == [("before_task", stream), ("after_task", stream),
                     ("before_task", stream.at(1)), ("after_task", stream.at(1))]
    assert all(e[2] is rule for e in out)
    assert [e[1] for e in out][-1] == "close"
