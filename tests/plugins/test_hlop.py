"""HLOP, the exact projection baseline and EWC: subspace learning, protection, optimiser checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bioplaus import registry
from bioplaus.config import load_config
from bioplaus.errors import ConfigError
from bioplaus.nets import build_net
from bioplaus.plugins.base import PluginList
from bioplaus.plugins.ewc import EWC
from bioplaus.plugins.hlop import HLOP, Lateral, orthonormal_rows, quantise
from bioplaus.plugins.projection import (
    ExactProjection,
    new_dims,
    presynaptic_rows,
    principal_angles,
    project_rows_,
)
from bioplaus.rules.backprop import Backprop
from bioplaus.rules.base import RuleContext
from bioplaus.training.task import TaskInfo

# ----------------------------------------------------------------------------- helpers


pytestmark = pytest.mark.usefixtures("one_thread")


def _spectrum_data(n: int, evals: list[float], rows: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows x ~ N(0, Q diag(λ) Qᵀ) in R^n with a random rotation Q; returns (X, Q)."""
    lam = torch.tensor(evals + [0.05] * (n - len(evals)))
    Q = torch.linalg.qr(torch.randn(n, n, generator=gen)).Q
    X = (torch.randn(rows, n, generator=gen) * lam.sqrt()) @ Q.T
    return X, Q


def _rule(net_cfg: dict, n_in: tuple[int, ...], n_cls: int, plugins: list, optimizer: str = "sgd", lr: float = 0.1):
    cfg = load_config({"network": net_cfg, "rule": {"name": "backprop", "optimizer": optimizer, "lr": lr}})
    net = build_net(cfg.network, n_in, n_cls, seed=0)
    rule = Backprop(cfg.rule)
    ctx = RuleContext.of(cfg, 10, 10, n_cls)
    rule.setup(net, ctx)
    rule.plugins = PluginList(plugins)
    for p in plugins:
        p.setup(rule, ctx)
    return rule


# ----------------------------------------------------------------------------- Oja's subspace rule


def test_hebbian_subspace_reaches_top_k_pca() -> None:
    """Oja's subspace rule (HLOP's settings: momentum 0.9, 5 iterations) finds the top-k
    eigenvectors of a spectrum with a gap: largest principal angle below 3 degrees."""
    gen = torch.Generator().manual_seed(0)
    n, k = 30, 4
    X, Q = _spectrum_data(n, [4.0, 3.0, 2.5, 2.0], 64 * 400, gen)
    lat = Lateral(n, lr=0.01)
    lat.add(k, gen)
    for b in range(400):
        lat.hebbian(X[b * 64 : (b + 1) * 64], iterations=5, momentum=0.9, clip=10.0)
    ang = principal_angles(lat.new, Q[:, :k].T)
    assert float(ang.max()) < 3.0
    # Oja's rule also makes the rows orthonormal.
    assert torch.allclose(lat.new @ lat.new.T, torch.eye(k), atol=0.05)


def test_new_neurons_learn_the_residual_subspace() -> None:
    """With the top-2 directions frozen in H_old, 2 new neurons find eigenvectors 3 and 4."""
    gen = torch.Generator().manual_seed(1)
    n = 25
    X, Q = _spectrum_data(n, [5.0, 4.0, 3.0, 2.5], 64 * 400, gen)
    lat = Lateral(n, lr=0.01)
    lat.old = Q[:, :2].T.contiguous()
    lat.add(2, gen)
    for b in range(400):
        lat.hebbian(X[b * 64 : (b + 1) * 64], iterations=5, momentum=0.9, clip=10.0)
    assert float(principal_angles(lat.new, Q[:, 2:4].T).max()) < 3.0
    # The frozen neurons did not move, and the new ones left their subspace.
    assert torch.equal(lat.old, Q[:, :2].T.contiguous())
    assert float((lat.new @ lat.old.T).abs().max()) < 0.05


def test_principal_angles_and_helpers() -> None:
    gen = torch.Generator().manual_seed(2)
    A = orthonormal_rows(3, 10, gen)
    assert torch.allclose(A @ A.T, torch.eye(3), atol=1e-5)
    assert float(principal_angles(A, 2.0 * A).max()) < 1e-3  # same span
    e = torch.eye(10)
    assert torch.allclose(principal_angles(e[:2], e[2:4]), torch.tensor([90.0, 90.0], dtype=torch.float64))
    assert torch.allclose(principal_angles(e[:1], (e[0] + e[1])[None]), torch.tensor([45.0], dtype=torch.float64))
    # The PMNIST schedule of the public code.
    dims = [new_dims(t, [80, 200, 100], [70, 70, 70], 3, 20, 0, 1) for t in range(10)]
    assert dims == [200, 70, 70, 50, 50, 50, 30, 30, 30, 10]
    q = quantise(torch.tensor([0.26, -30.0, 3.0]), scale=20.0, steps=40)
    assert torch.allclose(q, torch.tensor([0.5, -20.0, 3.0]))


# ----------------------------------------------------------------------------- protection


def _two_tasks(n_in: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task A: inputs in a k-dim subspace; task B: inputs anywhere, other labels."""
    basis = torch.linalg.qr(torch.randn(n_in, k, generator=gen)).Q.T  # [k, n]
    xa = torch.randn(256, k, generator=gen) @ basis
    ya = torch.randint(0, 4, (256,), generator=gen)
    xb = torch.randn(256, n_in, generator=gen)
    yb = torch.randint(0, 4, (256,), generator=gen)
    return xa, ya, xb, yb


def _train(rule, x: torch.Tensor, y: torch.Tensor, steps: int, hlop: HLOP | None) -> None:
    for s in range(steps):
        i = (s * 32) % len(x)
        rule.train_step(x[i : i + 32], y[i : i + 32])
        if hlop is not None:
            hlop.after_step(rule, s, {})


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_linear_layer_keeps_old_outputs_while_learning_new_task(optimizer: str) -> None:
    """One linear layer (logits = W x). After HLOP has converged on task A's inputs, learning
    task B moves the outputs on task A's inputs by < 1e-3 of their size (SGD: gradient
    projection; Adam: projection of the final step), while plain training moves them by
    more than 10 % and both learn task B."""
    gen = torch.Generator().manual_seed(3)
    n_in, k = 20, 5
    xa, ya, xb, yb = _two_tasks(n_in, k, gen)
    moved = {}
    for protect in (True, False):
        hl = HLOP({"neurons_first": [k], "neurons_per_task": [k], "lr": [0.02], "adaptive": "project_step", "angles": False})
        plugins = [hl] if protect else []
        lr = 0.05 if optimizer == "sgd" else 0.01
        rule = _rule({"backend": "rate", "hidden": []}, (n_in,), 4, plugins, optimizer=optimizer, lr=lr)
        hl_active = hl if protect else None
        if protect:
            hl.before_task(rule, TaskInfo(0, 2), None)
        _train(rule, xa, ya, 300, hl_active)
        if protect:
            lat = hl.lateral[0]
            assert float(principal_angles(lat.new, xa[:k]).max()) < 1.0  # converged on span(A)
            lat.merge()
            hl.before_task(rule, TaskInfo(1, 2), None)
        with torch.no_grad():
            before = rule.net(xa).clone()
        with torch.no_grad():
            loss_b0 = float(F.cross_entropy(rule.net(xb), yb))
        _train(rule, xb, yb, 200, hl_active)
        with torch.no_grad():
            after = rule.net(xa)
        with torch.no_grad():
            assert float(F.cross_entropy(rule.net(xb), yb)) < 0.9 * loss_b0  # task B is learned
        moved[protect] = float((after - before).norm() / before.norm())
    assert moved[True] < 1e-3
    assert moved[False] > 0.1


def test_adam_is_refused_unless_the_step_is_projected() -> None:
    with pytest.raises(ConfigError, match="Adam.*project_step"):
        _rule({"backend": "rate", "hidden": [8]}, (6,), 3, [HLOP({})], optimizer="adam")
    with pytest.raises(ConfigError, match="weight_decay"):
        cfg = load_config({"network": {"backend": "rate", "hidden": [8]}, "rule": {"weight_decay": 1e-4}})
        net = build_net(cfg.network, (6,), 3)
        rule = Backprop(cfg.rule)
        ctx = RuleContext.of(cfg, 1, 1, 3)
        rule.setup(net, ctx)
        ExactProjection({}).setup(rule, ctx)
    # SGD with momentum keeps the projected subspace: accepted.
    cfg = load_config({"network": {"backend": "rate", "hidden": [8]}, "rule": {"momentum": 0.9}})
    rule = Backprop(cfg.rule)
    rule.setup(build_net(cfg.network, (6,), 3), RuleContext.of(cfg, 1, 1, 3))
    HLOP({}).setup(rule, RuleContext.of(cfg, 1, 1, 3))


@pytest.mark.parametrize("backend", ["rate", "spiking", "spiking_small_products"])
def test_input_projection_equals_gradient_projection(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Σ δ (x - HᵀHx)ᵀ from the captured error equals G (I - HᵀH) (BPTT: per time step);
    ``spiking_small_products``: with even these small spike products on the CPU's fast
    exact path (table lookup or bf16 split, where the CPU has one)."""
    if backend == "spiking_small_products":
        from bioplaus.neurons import synapses

        monkeypatch.setattr(synapses, "_SPIKE_GEMM_MIN_MACS", 0)
        backend = "spiking"
    grads = {}
    for mode in ("grad", "input"):
        hl = HLOP({"projection": mode, "neurons_first": [6], "neurons_per_task": [6], "angles": False})
        rule = _rule({"backend": backend, "hidden": [24, 16], "spiking": {"T": 5, "threshold": 0.3}}, (1, 8, 8), 10, [hl])
        gen = torch.Generator().manual_seed(4)
        x = torch.rand(16, 1, 8, 8, generator=gen) * 2
        y = torch.randint(0, 10, (16,), generator=gen)
        hl.before_task(rule, TaskInfo(0, 2), None)
        _train(rule, x, y, 3, hl)
        for lat in hl.lateral.values():
            lat.merge()
        hl.before_task(rule, TaskInfo(1, 2), None)
        rule.optimizer.step = lambda *a, **k: None  # keep the weights: compare one gradient
        rule.train_step(torch.rand(16, 1, 8, 8, generator=gen) * 2, y)
        grads[mode] = {i: la.weight.grad.clone() for i, la in enumerate(rule.net.layers)}
    for i in grads["grad"]:
        assert grads["grad"][i].abs().max() > 0
        torch.testing.assert_close(grads["input"][i], grads["grad"][i], atol=1e-6, rtol=1e-4)


def test_conv_layer_projection_on_unfolded_patches() -> None:
    """A conv layer's presynaptic rows are its C·k·k patches; its projected gradient has no
    component along the frozen lateral rows."""
    hl = HLOP({"layers": [0], "neurons_first": [5], "neurons_per_task": [5], "lr": [0.01], "angles": False})
    rule = _rule({"backend": "rate", "arch": "cnn", "channels": [4], "hidden": []}, (2, 6, 6), 3, [hl])
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(8, 2, 6, 6, generator=gen)
    y = torch.randint(0, 3, (8,), generator=gen)
    hl.before_task(rule, TaskInfo(0, 2), None)
    _train(rule, x, y, 5, hl)
    conv = rule.net.layers[0]
    assert presynaptic_rows(conv).shape == (8 * 36, 2 * 9)
    lat = hl.lateral[0]
    lat.new = orthonormal_rows(5, 18, gen)  # an exactly orthonormal frozen set
    lat.merge()
    hl.before_task(rule, TaskInfo(1, 2), None)
    saved = {}
    rule.optimizer.step = lambda *a, **k: saved.update(g=conv.weight.grad.clone())
    rule.train_step(x, y)
    G = saved["g"].view(4, -1)
    assert G.abs().max() > 0
    assert float((G @ lat.old.T).abs().max()) < 1e-6


def test_hlop_lateral_spikes_option_learns() -> None:
    """Quantised lateral activity (spike counts over 40 steps) still finds the subspace."""
    gen = torch.Generator().manual_seed(6)
    X, Q = _spectrum_data(20, [4.0, 3.0, 2.0], 64 * 300, gen)
    lat = Lateral(20, lr=0.01)
    lat.add(3, gen)
    q = lambda v: quantise(v, 20.0, 40)  # noqa: E731
    for b in range(300):
        lat.hebbian(X[b * 64 : (b + 1) * 64], iterations=5, momentum=0.9, clip=10.0, q=q)
    assert float(principal_angles(lat.new, Q[:, :3].T).max()) < 8.0


# ----------------------------------------------------------------------------- baselines


def test_exact_projection_threshold_and_orthogonality() -> None:
    gen = torch.Generator().manual_seed(7)
    pj = ExactProjection({"mode": "threshold", "threshold": 0.9, "samples": 64, "layers": [0]})
    rule = _rule({"backend": "rate", "hidden": []}, (12,), 3, [pj])
    basis = torch.linalg.qr(torch.randn(12, 3, generator=gen)).Q.T
    x = (torch.randn(64, 3, generator=gen) * torch.tensor([3.0, 2.0, 1.0])) @ basis
    loader = [(x, torch.zeros(64, dtype=torch.long))]
    pj.before_task(rule, TaskInfo(), loader)
    pj.after_task(rule, TaskInfo(), loader)
    U = pj.bases[0]
    assert 1 <= U.shape[0] <= 3
    assert torch.allclose(U @ U.T, torch.eye(U.shape[0]), atol=1e-5)
    # the chosen rows hold >= 90 % of the activity's energy
    assert float(((x @ U.T) ** 2).sum() / (x**2).sum()) >= 0.9
    G = torch.randn(3, 12, generator=gen)
    project_rows_(G, U)
    assert float((G @ U.T).abs().max()) < 1e-5


def test_ewc_penalty_gradient_and_cap() -> None:
    ewc = EWC({"lam": 10.0, "samples": 8})
    rule = _rule({"backend": "rate", "hidden": []}, (5,), 3, [ewc], lr=0.1)
    gen = torch.Generator().manual_seed(8)
    loader = [(torch.randn(8, 5, generator=gen), torch.randint(0, 3, (8,), generator=gen))]
    ewc.after_task(rule, TaskInfo(), loader)
    assert all(float(f.min()) >= 0 for f in ewc.fisher) and float(ewc.fisher[0].sum()) > 0
    w = rule.net.layers[0].weight
    ewc.fisher = [torch.full_like(w, 0.5)]
    ewc.anchor = [w.detach().clone()]
    with torch.no_grad():
        w.add_(1.0)
    w.grad = torch.zeros_like(w)
    ewc.after_backward(rule)
    torch.testing.assert_close(w.grad, torch.full_like(w, 5.0))  # λ F (θ - θ*) = 10·0.5·1
    ewc.fisher = [torch.full_like(w, 100.0)]
    w.grad = torch.zeros_like(w)
    ewc.after_backward(rule)
    torch.testing.assert_close(w.grad, torch.full_like(w, 10.0))  # capped at 1/η = 10


def test_plugins_are_registered_and_validate_options() -> None:
    assert {"hlop", "ewc", "projection"} <= set(registry.plugin_names())
    with pytest.raises(ConfigError, match="activity"):
        HLOP({"activity": "bursts"})
    with pytest.raises(ConfigError, match="unknown key"):
        load_config({"plugins": [{"name": "hlop", "neurons": 3}]})
    with pytest.raises(ConfigError, match="mode"):
        ExactProjection({"mode": "svd"})
    assert math.isclose(HLOP({}).opts.momentum, 0.9)


def test_residual_init_starts_off_the_old_subspace() -> None:
    gen = torch.Generator().manual_seed(9)
    lat = Lateral(12, lr=0.01)
    lat.add(4, gen)
    lat.merge()
    lat.add(3, gen, residual=True)
    assert float((lat.new @ lat.old.T).abs().max()) < 1e-5
    assert torch.allclose(lat.new @ lat.new.T, torch.eye(3), atol=1e-5)
    lat.merge()
    lat.add(10, gen)  # capped at the room left in R^12
    assert lat.new.shape == (5, 12) and lat.dim == 12


def test_orthonormal_projector_spans_the_lateral_rows() -> None:
    gen = torch.Generator().manual_seed(10)
    lat = Lateral(10, lr=0.01, orthonormal=True)
    lat.new = torch.randn(3, 10, generator=gen)  # a Hebbian H that is not orthonormal
    lat.merge()
    assert torch.allclose(lat.proj @ lat.proj.T, torch.eye(3), atol=1e-5)
    assert float(principal_angles(lat.proj, lat.old).max()) < 1e-3
    G = torch.randn(4, 10, generator=gen)
    project_rows_(G, lat.proj)
    assert float((G @ lat.old.T).abs().max()) < 1e-5  # exactly off span(H_old)
    plain = Lateral(10, lr=0.01)
    plain.new = lat.old.clone()
    plain.merge()
    assert torch.equal(plain.proj, plain.old)  # the code's H_oldᵀ H_old


def test_input_projection_falls_back_when_the_gradient_has_other_terms() -> None:
    """An EWC penalty added to W.grad before HLOP: the rebuilt Σ δ xᵀ would drop it, so
    the input path detects the mismatch and projects W.grad itself (penalty included)."""
    out = {}
    for mode in ("grad", "input"):
        ewc = EWC({"lam": 1.0, "samples": 8})
        hl = HLOP({"projection": mode, "layers": [0], "neurons_first": [4], "neurons_per_task": [4], "angles": False})
        rule = _rule({"backend": "rate", "hidden": [8]}, (6,), 3, [ewc, hl])
        gen = torch.Generator().manual_seed(11)
        x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        hl.before_task(rule, TaskInfo(0, 2), None)
        _train(rule, x, y, 3, hl)
        ewc.after_task(rule, TaskInfo(0, 2), [(x, y)])
        hl.lateral[0].merge()
        hl.before_task(rule, TaskInfo(1, 2), None)
        with torch.no_grad():
            rule.net.layers[0].weight.add_(0.1)  # away from the EWC anchor
        rule.optimizer.step = lambda *a, **k: None
        rule.train_step(x, y)
        out[mode] = rule.net.layers[0].weight.grad.clone()
        if mode == "input":
            assert hl.fallbacks == 1
    torch.testing.assert_close(out["input"], out["grad"])


@pytest.mark.parametrize("k", [3, 9])
def test_complement_and_input_side_projection_equal_the_reference(k: int) -> None:
    """G (I - BᵀB) three ways: the reference G - (G Bᵀ) B, via the orthonormal complement
    (k > n/2), and on the input side Σ δ (x - BᵀBx)ᵀ; equal up to float rounding."""
    gen = torch.Generator().manual_seed(12)
    n = 12
    lat = Lateral(n, lr=0.01, orthonormal=True)
    lat.new = torch.randn(k, n, generator=gen)
    lat.merge()
    assert (lat.comp is not None) == (2 * k > n)
    if lat.comp is not None:
        assert lat.comp.shape == (n - k, n)
        torch.testing.assert_close(lat.comp @ lat.proj.T, torch.zeros(n - k, k), atol=1e-6, rtol=0)
    D, X = torch.randn(40, 7, generator=gen), torch.randn(40, n, generator=gen)
    G = D.T @ X
    ref = project_rows_(G.clone(), lat.proj)
    torch.testing.assert_close(lat.project_rows(G), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(D.T @ lat.project_rows(X), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rows", [8, 64])  # residual once per call | (yᵀX)-form per iteration
@pytest.mark.parametrize("k_old", [5, 10])  # the old rows | the map I - H_oldᵀH_old (k_old > n/2)
def test_cheaper_hebbian_forms_equal_the_reference(rows: int, k_old: int) -> None:
    """Every cheaper form of Oja's update (residual map I - H_oldᵀH_old, per-iteration
    (yᵀX)(I - H_oldᵀH_old), k x k Gram) gives the reference X - (X H_oldᵀ) H_old,
    yᵀ(r - yH) up to float rounding."""
    gen = torch.Generator().manual_seed(13)
    n = 16
    X = torch.randn(rows, n, generator=gen)
    fast = Lateral(n, lr=0.05)
    fast.new = orthonormal_rows(k_old, n, gen)
    fast.merge()
    fast.add(3, gen)
    ref_old, ref_new = fast.old.clone(), fast.new.clone()
    for _ in range(3):
        fast.hebbian(X, iterations=4, momentum=0.9, clip=10.0)
    assert (fast._resid is not None) == (2 * k_old > n)
    new, mom = ref_new.clone(), torch.zeros_like(ref_new)
    r = X - (X @ ref_old.T) @ ref_old
    for _ in range(3 * 4):
        y = X @ new.T
        delta = (y.T @ (r - y @ new)).div_(rows).clamp_(-10.0, 10.0)
        mom.mul_(0.9).add_(delta, alpha=0.1)
        new.add_(mom, alpha=0.05)
    torch.testing.assert_close(fast.new, new, atol=1e-5, rtol=1e-5)


def _lut_available(path: str) -> bool:
    from bioplaus.neurons.kernel import kernel

    k = kernel()
    return k is not None and hasattr(k, "lut_paths") and path in k.lut_paths()


@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.skipif(not _lut_available(p), reason=f"no {p} on this machine"))
    for p in ("lut512", "lut256", "lutportable")
])
@pytest.mark.parametrize("rows", [8, 96])
@pytest.mark.parametrize("k_old", [5, 24])
def test_hebbian_on_spike_rows_by_table_lookup_equals_float32(
    monkeypatch: pytest.MonkeyPatch, rows: int, k_old: int, path: str
) -> None:
    """Oja's update on 0/1 presynaptic rows: the table-lookup products (X Hᵀ, Xᵀ y, X M) on
    each path (AVX-512, AVX2, portable) give the float32 GEMMs' lateral weights to float
    rounding, in every form of the update."""
    from bioplaus.neurons import synapses

    monkeypatch.setattr(synapses, "_SPIKE_GEMM_MIN_MACS", 0)
    gen = torch.Generator().manual_seed(17)
    n = 40
    X = (torch.rand(rows, n, generator=gen) < 0.25).float()
    out = {}
    for mode in ("fp32", path):
        monkeypatch.setattr(synapses, "_SPIKE_GEMM", mode)
        assert synapses.BinaryRows.of(X).packed == (mode == path)
        g = torch.Generator().manual_seed(3)
        lat = Lateral(n, lr=0.05)
        lat.new = orthonormal_rows(k_old, n, g)
        lat.merge()
        lat.add(4, g)
        start = lat.new.clone()
        for _ in range(3):
            lat.hebbian(X, iterations=5, momentum=0.9, clip=10.0)
        out[mode] = lat.new.clone()
        assert float((out[mode] - start).abs().max()) > 1e-3  # the rule moved the weights
    torch.testing.assert_close(out[path], out["fp32"], atol=1e-5, rtol=1e-5)


def test_warns_once_when_lateral_neurons_fill_the_input(capsys: pytest.CaptureFixture[str]) -> None:
    """Lateral neurons >= the input dimension (issue 23: 80 for digits' 64 pixels): one line
    on stderr, once per layer, naming the layer, the counts and the task; and indeed the
    merged projector then removes every direction of the layer's gradient (it is frozen)."""
    n_in = 12
    hl = HLOP({"neurons_first": [8], "neurons_per_task": [6], "lr": [0.02], "angles": False})
    rule = _rule({"backend": "rate", "hidden": []}, (n_in,), 4, [hl])
    hl.before_task(rule, TaskInfo(0, 4), None)  # 8 < 12: quiet
    assert capsys.readouterr().err == ""
    hl.lateral[0].merge()
    hl.before_task(rule, TaskInfo(1, 4), None)  # 8 + 6 >= 12: warned
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bioplaus: warning: plugins.hlop: layer 0 gets 14 lateral")
    assert "for its 12 inputs by task 1" in err and "below 12" in err
    hl.lateral[0].merge()
    hl.before_task(rule, TaskInfo(2, 4), None)  # once
    assert capsys.readouterr().err == ""
    G = torch.randn(3, n_in, generator=torch.Generator().manual_seed(0))
    assert float(hl.lateral[0].project_rows(G).abs().max()) < 1e-5  # nothing left to learn


def test_no_capacity_warning_on_the_last_task(capsys: pytest.CaptureFixture[str]) -> None:
    """A full subspace on the stream's last task (or a plain run, one task) freezes nothing."""
    hl = HLOP({"neurons_first": [30], "neurons_per_task": [5], "lr": [0.02], "angles": False})
    rule = _rule({"backend": "rate", "hidden": []}, (12,), 4, [hl])
    hl.before_task(rule, TaskInfo(0, 1), None)
    assert capsys.readouterr().err == ""
