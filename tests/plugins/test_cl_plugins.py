"""Replay, A-GEM, SI, LwF and GPM: each against a hand-computed update or a known property."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare

from bioplaus.api import run
from bioplaus.config import load_config
from bioplaus.conformance import TINY_STREAM, merge
from bioplaus.errors import ConfigError
from bioplaus.nets import build_net
from bioplaus.plugins.agem import AGEM, agem_project
from bioplaus.plugins.base import PluginList
from bioplaus.plugins.gpm import GPM
from bioplaus.plugins.lwf import LwF, distillation_loss
from bioplaus.plugins.memory import ReservoirBuffer, head_mask
from bioplaus.plugins.projection import project_rows_
from bioplaus.plugins.replay import Replay
from bioplaus.plugins.si import SI
from bioplaus.record import open_run
from bioplaus.rules.backprop import Backprop
from bioplaus.rules.base import RuleContext
from bioplaus.training.task import TaskInfo

pytestmark = pytest.mark.usefixtures("one_thread")


def _rule(plugins: list, n_in: int = 6, n_cls: int = 4, lr: float = 0.1, hidden: list[int] | None = None,
          stream: TaskInfo | None = None) -> Backprop:
    cfg = load_config({"network": {"backend": "rate", "hidden": hidden or []}, "rule": {"name": "backprop", "lr": lr}})
    net = build_net(cfg.network, (n_in,), n_cls, seed=0)
    rule = Backprop(cfg.rule)
    ctx = RuleContext.of(cfg, 10, 10, n_cls)
    ctx.stream = stream
    rule.setup(net, ctx)
    rule.plugins = PluginList(plugins)
    for p in plugins:
        p.setup(rule, ctx)
    return rule


def _batch(seed: int, n: int = 8, n_in: int = 6, n_cls: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_in, generator=g), torch.randint(0, n_cls, (n,), generator=g)


# ----------------------------------------------------------------------------- replay


def test_reservoir_buffer_is_a_uniform_sample() -> None:
    """Over 2000 seeded streams of 50 items into 10 slots every item ends in the buffer
    equally often (chi-square, 49 dof); keeping the first 10 (a non-uniform buffer) fails."""
    n, size, trials = 50, 10, 2000
    counts = np.zeros(n)
    gen = torch.Generator().manual_seed(11)
    items = torch.arange(n, dtype=torch.float32).view(n, 1)
    for _ in range(trials):
        buf = ReservoirBuffer(size, gen)
        buf.add(items[:20], torch.zeros(20, dtype=torch.long), 0)  # two batches: the order of offers is what counts
        buf.add(items[20:], torch.zeros(30, dtype=torch.long), 1)
        assert len(buf) == size and buf.seen == n
        counts[buf.x[:, 0].long().numpy()] += 1
    assert counts.sum() == trials * size
    assert chisquare(counts).pvalue > 1e-3
    first = np.zeros(n)
    first[:size] = trials
    assert chisquare(first + 1e-9).pvalue < 1e-6  # the statistic can fail
    # tasks are remembered with the rows
    assert set(buf.t.tolist()) <= {0, 1}
    x, y, t = buf.sample(4)
    assert x.shape == (4, 1) and len(set(x[:, 0].tolist())) == 4


def test_replay_extends_the_batch_and_keeps_each_samples_head() -> None:
    stream = TaskInfo(0, 2, "task", "sequential", ((0, 1), (2, 3)))
    rp = Replay({"size": 6, "ratio": 0.5})
    rule = _rule([rp], stream=stream)
    x0, y0 = _batch(1, n_cls=2)
    rp.before_task(rule, stream, None)
    bx, by = rp.before_step(rule, x0, y0)
    assert torch.equal(bx, x0)  # empty buffer: the batch as it was
    rp.after_step(rule, 1, {})
    assert len(rp.buffer) == 6
    rule.active_classes = torch.tensor([2, 3])
    rp.before_task(rule, stream.at(1), None)
    x1, y1 = _batch(2)
    bx, by = rp.before_step(rule, x1, y1 % 2 + 2)
    assert bx.shape == (12, 6) and torch.equal(bx[:8], x1)
    stored = {tuple(r.tolist()) for r in rp.buffer.x}
    assert all(tuple(r.tolist()) in stored for r in bx[8:])
    mask = rule.active_classes
    assert mask.dtype == torch.bool and mask.shape == (12, 4)
    assert mask[:8, 2:].all() and not mask[:8, :2].any() and mask[8:, :2].all() and not mask[8:, 2:].any()
    logits = rule.mask_logits(torch.zeros(12, 4))
    assert float(logits[0, 0]) == -1e9 and float(logits[9, 0]) == 0.0
    rp.after_step(rule, 2, {})
    assert torch.equal(rule.active_classes, torch.tensor([2, 3]))  # the task's own head again
    assert head_mask(TaskInfo(0, 2, "domain", "sequential", ((0, 1), (2, 3))), torch.zeros(3, dtype=torch.long), 4) is None


# ----------------------------------------------------------------------------- A-GEM


def test_agem_projection_is_the_closed_form() -> None:
    g_ref = torch.tensor([1.0, 2.0, -1.0])
    g = torch.tensor([-3.0, 0.5, 1.0])  # g·g_ref = -3 + 1 - 1 = -3 < 0
    out, hit = agem_project(g, g_ref)
    assert hit
    torch.testing.assert_close(out, g - (-3.0 / 6.0) * g_ref)
    assert abs(float(out @ g_ref)) < 1e-6
    g2 = torch.tensor([1.0, 0.0, 0.0])
    out2, hit2 = agem_project(g2, g_ref)
    assert not hit2 and torch.equal(out2, g2)


def test_agem_after_backward_uses_the_memory_gradient() -> None:
    ag = AGEM({"per_task": 8, "sample_size": 8})
    rule = _rule([ag])
    xm, ym = _batch(3)
    ag.after_task(rule, TaskInfo(), [(xm, ym)])
    assert len(ag.mem_x[0]) == 8
    W = rule.net.layers[0].weight
    assert ag.params == [W]  # a layer without bias
    g_ref = torch.autograd.grad(F.cross_entropy(rule.net(xm), ym), W)[0].flatten()
    for sign in (-1.0, 1.0):
        W.grad = (sign * g_ref + 0.1).view_as(W).clone()
        g = W.grad.flatten().clone()
        ag.after_backward(rule)
        want, _ = agem_project(g, g_ref)
        torch.testing.assert_close(W.grad.flatten(), want, atol=1e-6, rtol=1e-5)
    assert ag.projected == 1 and ag.steps == 2


# ----------------------------------------------------------------------------- SI


def test_si_omega_is_the_hand_summed_path_integral() -> None:
    """Two SGD steps: ω = -g₁Δθ₁ - g₂Δθ₂ = η(g₁² + g₂²) with the unregularised gradients,
    Ω = ω / ((θ₂ - θ₀)² + ξ), and the penalty's gradient 2cΩ(θ - θ*)."""
    si = SI({"c": 0.5, "xi": 0.01, "cap": False})
    rule = _rule([si], lr=0.1)
    W = rule.net.layers[0].weight
    si.before_task(rule, TaskInfo(), None)
    theta0 = W.detach().clone()
    grads = []
    for seed in (4, 5):
        x, y = _batch(seed)
        g = torch.autograd.grad(F.cross_entropy(rule.net(x), y), W)[0]
        grads.append(g)
        rule.train_step(x, y)
    omega = 0.1 * (grads[0] ** 2 + grads[1] ** 2)
    torch.testing.assert_close(si.omega[0], omega, atol=1e-7, rtol=1e-5)
    si.after_task(rule, TaskInfo(), None)
    big = omega / ((W.detach() - theta0) ** 2 + 0.01)
    torch.testing.assert_close(si.big_omega[0], big, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        W.add_(0.3)
    W.grad = torch.zeros_like(W)
    si.after_backward(rule)
    torch.testing.assert_close(W.grad, 2 * 0.5 * big * 0.3, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------- LwF


def test_lwf_target_is_the_old_models_output_and_its_gradient_the_closed_form() -> None:
    T, lam = 2.0, 0.7
    lwf = LwF({"lam": lam, "temperature": T})
    stream = TaskInfo(0, 2, "domain", "sequential", ((0, 1), (2, 3)))
    rule = _rule([lwf], stream=stream)
    net = rule.net
    lwf.after_task(rule, stream, None)
    x, y = _batch(6)
    old_out = net(x).detach()
    rule.train_step(*_batch(7))  # the net moves; the old model does not
    torch.testing.assert_close(lwf.targets(x), old_out)
    assert lwf.classes.tolist() == [0, 1]
    # a zero rule gradient leaves the distillation term's: dKL/dz = (p - q) / (T B) on the old classes
    W = net.layers[0].weight
    lwf.before_step(rule, x, y)
    W.grad = torch.zeros_like(W)
    lwf.after_backward(rule)
    z = net(x).detach()
    p = F.softmax(z[:, :2] / T, 1)
    q = F.softmax(old_out[:, :2] / T, 1)
    dz = torch.zeros_like(z)
    dz[:, :2] = lam * (p - q) / (T * len(x))
    torch.testing.assert_close(W.grad, dz.T @ x, atol=1e-6, rtol=1e-5)
    assert float(distillation_loss(old_out, old_out, lwf.classes, T)) == pytest.approx(0.0, abs=1e-7)


# ----------------------------------------------------------------------------- GPM


def test_gpm_projected_update_has_no_component_in_the_stored_subspace() -> None:
    gen = torch.Generator().manual_seed(9)
    gpm = GPM({"threshold": [0.9], "threshold_step": [0.05], "samples": 64, "layers": [0]})
    rule = _rule([gpm], n_in=12, n_cls=3)
    assert gpm.energy_threshold(0, 0) == pytest.approx(0.9) and gpm.energy_threshold(0, 3) == pytest.approx(1.0)
    basis = torch.linalg.qr(torch.randn(12, 4, generator=gen)).Q.T
    x = (torch.randn(64, 4, generator=gen) * torch.tensor([4.0, 2.0, 1.0, 0.5])) @ basis
    loader = [(x, torch.zeros(64, dtype=torch.long))]
    gpm.before_task(rule, TaskInfo(0, 2), loader)
    gpm.after_task(rule, TaskInfo(0, 2), loader)
    U = gpm.bases[0]
    # the smallest k whose energy reaches 0.9: energies 16, 4, 1, 0.25 of 21.25 -> k = 2
    e = torch.linalg.svdvals(x) ** 2
    k = int((torch.cumsum(e, 0) / e.sum() < 0.9).sum()) + 1
    assert U.shape[0] == k
    torch.testing.assert_close(U @ U.T, torch.eye(k), atol=1e-5, rtol=0)
    # task 1: a training step's gradient is projected off span(U)
    gpm.before_task(rule, TaskInfo(1, 2), loader)
    W = rule.net.layers[0].weight
    W.grad = torch.randn(3, 12, generator=gen)
    g0 = W.grad.clone()
    gpm.after_backward(rule)
    assert float((W.grad @ U.T).abs().max()) < 1e-5
    torch.testing.assert_close(W.grad, project_rows_(g0, U))


def test_gpm_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="activity"):
        GPM({"activity": "bursts"})
    with pytest.raises(ConfigError, match="threshold"):
        GPM({"threshold": [1.5]})


# ----------------------------------------------------------------------------- every backend and rule


PLUGINS = [{"name": "replay", "size": 64, "ratio": 0.5}, {"name": "agem", "per_task": 32, "sample_size": 16},
           {"name": "si"}, {"name": "lwf"}, {"name": "gpm", "samples": 32}]


@pytest.mark.parametrize("backend", ["spiking", "rate-fa", "rate-ccl"])
def test_plugins_run_on_spiking_nets_and_with_fa_and_ccl(backend: str, tmp_path: Path) -> None:
    """Each plugin on a spiking net (BPTT) alone; all five stacked on feedback alignment and CCL."""
    over: dict = {"continual": {"setting": "domain"}, "network": {"hidden": [16]}}
    if backend == "spiking":
        over["network"] = {"backend": "spiking", "hidden": [16], "spiking": {"T": 3}}
        runs = [[p] for p in PLUGINS]
    else:
        over["rule"] = {"name": backend.split("-")[1], "lr": 0.05}
        runs = [PLUGINS]
    for i, plugins in enumerate(runs):
        cfg = merge(merge(TINY_STREAM, over), {"plugins": plugins})
        cfg["data"]["limit_train"] = 128
        res = run(cfg, out=tmp_path / f"r{i}.h5", progress=False, report=False, overwrite=True)
        assert res.status == "done", plugins
        with open_run(res.path) as rf:
            R = np.asarray(rf.array("/continual/acc_matrix"))
        assert R.shape == (2, 2) and np.isfinite(R).all()
