"""Feedback alignment (FA) and direct feedback alignment (DFA): gradients by hand, short runs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bioplaus.config import load_config
from bioplaus.experiments import run_experiment
from bioplaus.nets import build_net
from bioplaus.rules.base import RuleContext
from bioplaus.rules.feedback_alignment import (
    DirectFeedbackAlignment,
    FeedbackAlignment,
    _FAConv,
    _FALinear,
)


def test_fa_linear_backward_uses_b_not_w() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, generator=g, requires_grad=True)
    w = torch.randn(3, 4, generator=g, requires_grad=True)
    b = torch.randn(3, 4, generator=g)
    y = _FALinear.apply(x, w, b, None)
    torch.testing.assert_close(y, x @ w.T)
    up = torch.randn(5, 3, generator=g)
    y.backward(up)
    torch.testing.assert_close(x.grad, up @ b)
    torch.testing.assert_close(w.grad, up.T @ x.detach())


def test_fa_conv_backward_uses_b_not_w() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 6, generator=g, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, generator=g, requires_grad=True)
    b = torch.randn(4, 3, 3, 3, generator=g)
    y = _FAConv.apply(x, w, b, None, (1, 1), (1, 1))
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1))
    up = torch.randn_like(y)
    y.backward(up)
    # the input gradient of a convolution with kernel B, computed by autograd on B
    xb = x.detach().clone().requires_grad_(True)
    F.conv2d(xb, b, padding=1).backward(up)
    torch.testing.assert_close(x.grad, xb.grad)
    wr = w.detach().clone().requires_grad_(True)
    F.conv2d(x.detach(), wr, padding=1).backward(up)
    torch.testing.assert_close(w.grad, wr.grad)


def _setup(rule_cls: type, backend: str = "rate") -> object:
    cfg = load_config({
        "data": {"dataset": "digits"},
        "network": {"backend": backend, "hidden": [7], "spiking": {"T": 5}, "init_gain": 2.0},
        "rule": {"name": rule_cls.name, "lr": 0.1},
    })
    net = build_net(cfg.network, (6,), 3, seed=0)
    rule = rule_cls(cfg.rule)
    rule.setup(net, RuleContext.of(cfg, 10, 100, 3))
    return rule


def test_fa_hidden_gradient_goes_through_b() -> None:
    rule = _setup(FeedbackAlignment)
    net = rule.net
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 6, generator=g), torch.tensor([0, 1, 2, 0])
    w1, w2 = (la.weight.detach().clone() for la in net.layers)
    b2 = rule.feedback.mats()[1]
    u1 = x @ w1.T
    h = F.elu(u1)
    logits = h @ w2.T
    e = (torch.softmax(logits, 1) - F.one_hot(y, 3)) / 4
    d1 = (e @ b2) * torch.where(u1 > 0, torch.ones_like(u1), torch.exp(u1))
    rule.optimizer.zero_grad()
    F.cross_entropy(net(x), y).backward()
    torch.testing.assert_close(net.layers[0].weight.grad, d1.T @ x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net.layers[1].weight.grad, e.T @ h, rtol=1e-5, atol=1e-6)


def test_dfa_update_by_hand() -> None:
    rule = _setup(DirectFeedbackAlignment)
    net = rule.net
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 6, generator=g), torch.tensor([0, 1, 2, 0])
    w1, w2 = (la.weight.detach().clone() for la in net.layers)
    b1 = rule.feedback.mats()[0]
    assert tuple(b1.shape) == (3, 7)
    u1 = x @ w1.T
    h = F.elu(u1)
    e = (torch.softmax(h @ w2.T, 1) - F.one_hot(y, 3)) / 4
    d1 = (e @ b1) * torch.where(u1 > 0, torch.ones_like(u1), torch.exp(u1))
    rule.cfg.lr = 0.1
    rule.train_step(x, y)
    torch.testing.assert_close(net.layers[0].weight.detach(), w1 - 0.1 * d1.T @ x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net.layers[1].weight.detach(), w2 - 0.1 * e.T @ h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule_cls", [FeedbackAlignment, DirectFeedbackAlignment])
def test_spiking_step_with_constant_and_varying_input(rule_cls: type) -> None:
    """Direct encoding hoists the synapse (stride-0 input); Poisson input does not."""
    for encoder in ("direct", "poisson"):
        rule = _setup(rule_cls, "spiking")
        rule.net.encoder = encoder
        x = torch.rand(8, 6) * 3
        y = torch.arange(8) % 3
        w0 = rule.net.layers[0].weight.detach().clone()
        m = rule.train_step(x, y)
        assert math.isfinite(m["loss"])
        assert not torch.equal(rule.net.layers[0].weight.detach(), w0), encoder


@pytest.mark.parametrize(("name", "backend", "target"),
                         [("fa", "rate", 0.88), ("dfa", "rate", 0.88), ("fa", "spiking", 0.85),
                          ("dfa", "spiking", 0.85)])
def test_short_runs_on_digits(tmp_path, name: str, backend: str, target: float) -> None:  # noqa: ANN001
    cfg = load_config({
        "data": {"dataset": "digits", "batch_size": 32, "val_fraction": 0.0},
        "network": {"backend": backend, "hidden": [64, 64], "spiking": {"T": 6}},
        "rule": {"name": name, "lr": 0.1},
        "train": {"epochs": 10, "report": False, "progress": False, "threads": 1},
        "record": {"weights_every": 0},
    })
    res = run_experiment(cfg, out=tmp_path / f"{name}.h5")
    assert res.metrics["test_acc"] >= target
    from bioplaus import open_run

    run = open_run(tmp_path / f"{name}.h5")
    assert "layer0/alignment" in run.metrics
    import h5py

    with h5py.File(tmp_path / f"{name}.h5", "r") as f:
        assert "feedback" in f["model"]


def test_deepcopy_rebinds_the_fa_synapse() -> None:
    import copy

    rule = _setup(FeedbackAlignment)
    net2 = copy.deepcopy(rule.net)
    for la in net2.layers:
        assert la.synapse_fn.synapse is la.synapse
    x = torch.randn(3, 6)
    with torch.no_grad():
        net2.layers[1].weight.zero_()
    with torch.no_grad():
        assert float(net2(x).abs().sum()) == 0.0
        assert float(rule.net(x).abs().sum()) > 0.0
