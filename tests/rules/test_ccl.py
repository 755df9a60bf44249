"""Counter-current learning: loss forms by hand, locality, feedback net, short runs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from bioplaus.config import load_config
from bioplaus.errors import ConfigError
from bioplaus.experiments import run_experiment
from bioplaus.nets import build_net
from bioplaus.rules.base import RuleContext
from bioplaus.rules.ccl import (
    CCL,
    alignment,
    flood_mask,
    loss_cnn,
    loss_eq2,
    loss_mlp,
)
from bioplaus.rules.ccl_ae import ae_pair_loss
from bioplaus.training.optim import centralize_gradients

# ----------------------------------------------------------------------------- loss forms


def test_loss_mlp_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    y = torch.eye(2)
    # A Bᵀ = diag(1, 2); one entry off by 1 -> mean 1/4; scale 0.5 * 256 / d(=2) = 64.
    assert float(loss_mlp(a, b, y, 0.5)) == pytest.approx(16.0)
    assert float(loss_mlp(a, torch.eye(2), y, 0.5)) == 0.0


def test_loss_mlp_gradients_match_autograd() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = F.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).double()
    assert torch.autograd.gradcheck(lambda a, b: loss_mlp(a, b, y, 0.5), (a, b))
    ref = F.mse_loss(a @ b.T, y) * (0.5 * 256 / 5)
    torch.testing.assert_close(loss_mlp(a, b, y, 0.5), ref)


def test_loss_cnn_by_hand() -> None:
    a = torch.tensor([[3.0, 4.0], [3.0, 4.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    y = torch.eye(2)
    # Â rows (.6, .8); ÂB̂ᵀ - Y = [[-.4, .8], [.6, -.2]] -> mean sq .3, x .5 = .15
    # ÂÂᵀ = ones -> (1 + 1)/4 = .5, x .5 = .25; B̂B̂ᵀ = I -> 0.
    assert float(loss_cnn(a, b, y, 0.5, 0.5)) == pytest.approx(0.4, abs=1e-6)
    # Orthonormal rows matched to their classes: all three terms vanish.
    assert float(loss_cnn(torch.eye(2), torch.eye(2) * 3, y, 0.5, 0.5)) == pytest.approx(0.0, abs=1e-6)


def test_loss_eq2_by_hand() -> None:
    a = torch.tensor([[1.0, 2.0]])
    b = torch.zeros(1, 2)
    assert float(loss_eq2(a, b, 0.5)) == pytest.approx(0.5 * (1 + 4) / 2)


def test_alignment_flooding_centralisation() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    assert float(alignment(a, b, y, per_class=True)) == pytest.approx((1 + 1 / math.sqrt(2)) / 2)
    m = flood_mask(torch.tensor([[10.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 0]), 0.1)
    assert m.tolist() == [0.0, 1.0]
    w = torch.zeros(2, 2, requires_grad=True)
    w.grad = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    centralize_gradients([w])
    assert w.grad.tolist() == [[-1.0, 1.0], [0.0, 0.0]]


def test_center_option_subtracts_batch_and_class_means() -> None:
    rule = _rule(center=True)
    a = torch.tensor([[1.0, 0.0], [3.0, 2.0]])  # batch mean (2, 1)
    b = torch.tensor([[1.0, 1.0], [1.0, 3.0]])  # class mean (1, 2)
    y1 = torch.eye(2)
    got = rule.local_loss(a, b, torch.tensor([0, 1]), y1)
    want = loss_mlp(a - torch.tensor([2.0, 1.0]), b - torch.tensor([1.0, 2.0]), y1, 0.5)
    assert float(got) == pytest.approx(float(want))
    # centred: A = [[-1,-1],[1,1]], B = [[0,-1],[0,1]] -> ABᵀ = [[1,-1],[-1,1]]; vs I:
    # squared errors 0,1,1,0 -> mean .5, x .5 x 256 / 2 = 32
    assert float(got) == pytest.approx(32.0)


def test_ae_pair_loss_by_hand() -> None:
    a = torch.ones(1, 1, 2, 2)
    b = torch.zeros(1, 1, 2, 2)
    # mean((A-B)^2) = 1, times H = 2; the normalised maps of constants are both 0.
    assert float(ae_pair_loss(a, b, 1.0, 1.0, end=True)) == pytest.approx(2.0)
    assert float(ae_pair_loss(a, b, 1.0, 1.0, end=False)) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- the rule


def _rule(backend: str = "rate", arch: str = "mlp", clip: float = 0.0, **opts: object) -> CCL:
    raw = {
        "data": {"dataset": "digits"},
        "network": {"backend": backend, "arch": arch, "hidden": [12] if arch == "cnn" else [12, 10, 8],
                    "channels": [4, 6] if arch == "cnn" else [],
                    # spiking: enough drive that the deep feedback chain fires at T = 8
                    "init_gain": 3.0 if backend == "spiking" else 1.0,
                    "spiking": {"T": 8}},
        "rule": {"name": "ccl", "lr": 0.5, "clip": clip, **opts},
    }
    cfg = load_config(raw)
    shape = (1, 8, 8) if arch == "cnn" else (64,)
    net = build_net(cfg.network, shape, 5, seed=0)
    rule = CCL(cfg.rule)
    rule.setup(net, RuleContext.of(cfg, 10, 100, 5))
    return rule


def _batch(arch: str = "mlp") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 8, 8, generator=g) if arch == "cnn" else torch.rand(16, 64, generator=g)
    return x * 2, torch.arange(16) % 5


@pytest.mark.parametrize(
    ("backend", "arch", "form"),
    [("rate", "mlp", "mlp"), ("rate", "mlp", "eq2"), ("rate", "cnn", "cnn"), ("spiking", "mlp", "mlp")],
)
def test_locality_upper_weights_do_not_change_lower_update(backend: str, arch: str, form: str) -> None:
    """Perturbing U_m for m > l leaves layer l's forward update unchanged (same batch, same V)."""
    x, y = _batch(arch)
    base = _rule(backend, arch, loss_form=form)
    n = len(base.net.layers)
    for k in range(n - 1):
        r1, r2 = copy.deepcopy(base), copy.deepcopy(base)
        with torch.no_grad():
            for m in range(k + 1, n):
                r2.net.layers[m].weight.add_(torch.randn_like(r2.net.layers[m].weight))
        w0 = base.net.layers[k].weight.detach().clone()
        r1.train_step(x, y)
        r2.train_step(x, y)
        d1 = r1.net.layers[k].weight.detach() - w0
        d2 = r2.net.layers[k].weight.detach() - w0
        assert d1.abs().sum() > 0, f"layer {k} did not learn"
        torch.testing.assert_close(d1, d2, rtol=0, atol=1e-7)
    # Control: the output layer does see the perturbation of its own weights' input error.
    r3 = copy.deepcopy(base)
    with torch.no_grad():
        r3.net.layers[0].weight.mul_(3.0)
    w_out = base.net.layers[-1].weight.detach().clone()
    r1 = copy.deepcopy(base)
    r1.train_step(x, y)
    r3.train_step(x, y)
    assert not torch.allclose(r1.net.layers[-1].weight - w_out, r3.net.layers[-1].weight - w_out)


def test_feedback_net_mirrors_widths_and_uses_class_identity() -> None:
    rule = _rule()
    protos = rule.feedback_prototypes()
    widths = [64, 12, 10, 8]
    assert [tuple(p.shape) for p in protos] == [(5, w) for w in widths]
    # The feedback net has its own weights: one per forward layer, transposed shapes.
    for la, fl in zip(rule.net.layers, rule.feedback.layers):
        assert tuple(fl.weight.shape) == tuple(la.weight.shape[::-1])
    assert set(rule.extra_modules()) == {"feedback"}


def test_cnn_feedback_shapes_match_forward() -> None:
    rule = _rule("rate", "cnn")
    x, y = _batch("cnn")
    _, acts, fbs, _ = rule._pairs(x, y)
    for a, b in zip(acts, fbs):
        assert a.shape[0] == 16 and b.shape[0] == 5  # samples vs class prototypes
        assert a[0].numel() == b[0].numel()
    assert fbs[1].dim() == 4  # conv feedback maps keep their spatial layout
    assert rule.form == "cnn"


def test_spiking_feedback_constant_input_and_time_average() -> None:
    rule = _rule("spiking")
    x, y = _batch()
    m = rule.train_step(x, y)
    assert math.isfinite(m["loss"]) and math.isfinite(m["local_loss"])
    protos = rule.feedback_prototypes()
    assert all(p.dim() == 2 for p in protos)
    # hidden feedback rates are spike rates in [0, 1]
    assert float(protos[1].min()) >= 0.0 and float(protos[1].max()) <= 1.0


def test_epoch_metrics_names_known_before_training() -> None:
    rule = _rule()
    m0 = rule.epoch_metrics()
    assert "layer0/local_loss" in m0 and "layer0/alignment" in m0 and math.isnan(m0["layer0/alignment"])
    x, y = _batch()
    rule.train_step(x, y)
    m1 = rule.epoch_metrics()
    assert set(m1) == set(m0)
    assert all(math.isfinite(v) for v in m1.values())


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="loss_form"):
        load_config({"rule": {"name": "ccl", "loss_form": "nope"}})
    with pytest.raises(ConfigError, match="flooding"):
        load_config({"rule": {"name": "ccl", "flooding": 1.5}})


def test_options_warmup_flooding_gc_and_feedback_lr() -> None:
    rule = _rule(clip=1.0, warmup=10, flooding=0.1, grad_centralization=True,
                 lr_feedback=0.25, clip_feedback=0.5)
    assert rule.optimizer.param_groups[1]["lr"] == 0.25  # the feedback net's group
    assert rule.optimizer.param_groups[0]["lr"] == 0.5
    x, y = _batch()
    w0 = rule.net.layers[0].weight.detach().clone()
    rule.train_step(x, y)
    dw = rule.net.layers[0].weight.detach() - w0
    # Gradient centralisation: the update of every output row has zero mean over inputs.
    torch.testing.assert_close(dw.mean(1), torch.zeros(dw.shape[0]), atol=1e-7, rtol=0)


# ----------------------------------------------------------------------------- short runs


def _digits_cfg(tmp_path, **rule):  # noqa: ANN001, ANN202
    raw = {
        "seed": 0,
        "data": {"dataset": "digits", "batch_size": 32, "val_fraction": 0.0},
        "network": {"hidden": [64, 64]},
        "rule": {"name": "ccl", "lr": 1.0, "clip": 1.0, **rule},
        "train": {"epochs": 15, "report": False, "progress": False, "threads": 1},
        "record": {"weights_every": 0},
    }
    return load_config(raw)


def test_short_ccl_run_on_digits_reaches_90_percent(tmp_path) -> None:  # noqa: ANN001
    """Rate MLP 64-64-64-10, MLP loss form, SGD lr 1, clip 1: >= 90 % test accuracy."""
    res = run_experiment(_digits_cfg(tmp_path), out=tmp_path / "c.h5")
    assert res.status == "done"
    assert res.metrics["test_acc"] >= 0.90
    from bioplaus import open_run

    run = open_run(tmp_path / "c.h5")
    assert "layer0/alignment" in run.metrics and "layer1/local_loss" in run.metrics
    assert len(run.metric("layer0/local_loss")) == 16  # epoch 0 plus 15 epochs
    # the feedback net is saved with the model
    import h5py

    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert "feedback" in f["model"]


def test_short_spiking_ccl_run_on_digits(tmp_path) -> None:  # noqa: ANN001
    """Spiking (LIF, T = 6) CCL, CNN-form loss on the MLP: >= 85 % test accuracy."""
    cfg = _digits_cfg(tmp_path, loss_form="cnn")
    cfg.network.backend = "spiking"
    cfg.network.spiking.T = 6
    res = run_experiment(cfg, out=tmp_path / "s.h5")
    assert res.metrics["test_acc"] >= 0.85


def test_autoencoder_rule_lowers_reconstruction_error(tmp_path) -> None:  # noqa: ANN001
    raw = {
        "data": {"dataset": "digits", "batch_size": 32, "val_fraction": 0.0, "normalize": "unit"},
        "network": {"arch": "cnn", "channels": [8, 16], "activation": "relu"},
        "rule": {"name": "ccl_ae", "lr": 0.05, "momentum": 0.9, "clip": 0.5, "warmup": 20},
        "train": {"epochs": 4, "report": False, "progress": False, "threads": 1},
        "record": {"weights_every": 0},
    }
    res = run_experiment(load_config(raw), out=tmp_path / "ae.h5")
    from bioplaus import open_run

    mse = open_run(tmp_path / "ae.h5").metric("test_mse")
    # digits scaled to [0, 1]: an all-zero reconstruction (the start) has MSE ≈ 0.19
    assert mse[0] > 0.1
    assert res.metrics["test_mse"] < 0.6 * mse[0]
    bp = dict(raw, rule={"name": "ccl_ae", "method": "bp", "lr": 0.05, "momentum": 0.9})
    res_bp = run_experiment(load_config(bp), out=tmp_path / "bp.h5")
    assert res_bp.metrics["test_mse"] < 0.6 * mse[0]


def test_ccl_reconstruction_targets_match_shapes() -> None:
    from bioplaus.rules.ccl_ae import ConvAE, ConvAEFeedback

    ae = ConvAE([4, 8, 16], (1, 28, 28), "relu", True)
    fb = ConvAEFeedback(ae, True)
    x = torch.rand(2, 1, 28, 28)
    acts, sigs = ae(x), fb(x)
    assert len(acts) == len(sigs) == 7  # x, 3 encoder maps, 3 decoder maps
    assert [a.shape for a in acts] == [s.shape for s in sigs]
    assert acts[-1].shape == x.shape
    # gradients never cross a layer: the reconstruction's graph reaches only dec[0]
    loss = F.mse_loss(acts[-1], x)
    loss.backward()
    assert ae.enc[0]["conv"].weight.grad is None
    assert ae.dec[0]["conv"].weight.grad is not None


def test_row_mask_in_loss_equals_masking_activities() -> None:
    """Flooding applied to the N x C similarity gives the loss and gradients of masking A."""
    from bioplaus.rules.ccl import loss_mlp

    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 5, generator=g, requires_grad=True)
    b = torch.randn(3, 5, generator=g, requires_grad=True)
    y = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
    m = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    l1 = loss_mlp(a, b, y, 0.5, m)
    ga, gb = torch.autograd.grad(l1, (a, b))
    l2 = loss_mlp(a * m[:, None], b, y, 0.5)
    ga2, gb2 = torch.autograd.grad(l2, (a, b))
    assert torch.allclose(l1, l2) and torch.allclose(ga, ga2) and torch.allclose(gb, gb2)
    assert float(ga[1].abs().sum()) == 0.0


@pytest.mark.parametrize("masked", [False, True])
def test_batched_pair_losses_equal_per_pair_losses(masked: bool) -> None:
    """One graph node for all pairs gives the per-pair losses and gradients bit for bit."""
    from bioplaus.rules.ccl import loss_mlp_pairs

    g = torch.Generator().manual_seed(1)
    dims = [12, 7, 7, 5]
    acts = [torch.randn(8, d, generator=g, requires_grad=True) for d in dims]
    fbs = [torch.randn(3, d, generator=g, requires_grad=True) for d in dims]
    y = torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])]
    rows = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]) if masked else None
    w = torch.randn(len(dims), generator=g)
    ref = torch.stack([loss_mlp(a, b, y, 0.5, rows) for a, b in zip(acts, fbs)])
    g_ref = torch.autograd.grad((ref * w).sum(), acts + fbs)
    got = loss_mlp_pairs(acts, fbs, y, 0.5, rows)
    g_got = torch.autograd.grad((got * w).sum(), acts + fbs)
    assert torch.equal(got, ref)
    for u, v in zip(g_got, g_ref):
        assert torch.equal(u, v)


def test_fused_sgd_and_joint_clipping_equal_the_reference() -> None:
    """The fused SGD step and the one-pass clipping of two groups change no number."""
    from bioplaus.training.optim import clip_grad_norm, clip_grad_norms

    shapes = [(6, 9), (4, 6), (9, 4)]
    out = []
    for kind in ({"foreach": True}, {"fused": True}):
        g = torch.Generator().manual_seed(2)  # the same gradients for both kinds
        ps = [torch.randn(s, generator=torch.Generator().manual_seed(3)).requires_grad_() for s in shapes]
        opt = torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3, **kind)
        for _ in range(5):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=g)
            if "fused" in kind:
                clip_grad_norms([(ps[:2], 1.0), (ps[2:], 0.5)])
            else:
                clip_grad_norm(ps[:2], 1.0)
                clip_grad_norm(ps[2:], 0.5)
            opt.step()
        out.append([p.detach().clone() for p in ps])
    for u, v in zip(*out):
        assert torch.equal(u, v)


@pytest.mark.parametrize("nesterov", [False, True])
def test_clip_folded_into_fused_sgd_equals_clip_then_step(nesterov: bool) -> None:
    """Clip factors applied inside the fused SGD kernel: the separate clip + step to rounding.

    Two clip groups (one within its bound on some steps), weight decay, momentum, a group
    that mixes parameters of both clip groups; gradients left in ``p.grad`` are the clipped
    ones, as after the separate multiply.
    """
    from bioplaus.training.optim import clip_grad_norms, clip_scales, fused_sgd_step

    shapes = [(6, 9), (4, 6), (9, 4), (5,)]
    out, grads_after = [], []
    for folded in (False, True):
        g = torch.Generator().manual_seed(2)
        ps = [torch.randn(s, generator=torch.Generator().manual_seed(3)).requires_grad_() for s in shapes]
        groups = [{"params": ps[:1]}, {"params": ps[1:3], "lr": 0.05}, {"params": ps[3:]}]
        opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=nesterov,
                              fused=True)
        for step in range(6):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=g) * (3.0 if step % 2 else 0.1)
            clip = [(ps[:2], 1.0), (ps[2:], 0.5)]  # the second optimiser group mixes both
            if folded:
                fused_sgd_step(opt, clip_scales(clip))
            else:
                clip_grad_norms(clip)
                opt.step()
        out.append([p.detach().clone() for p in ps])
        grads_after.append([p.grad.clone() for p in ps])
    for u, v in zip(*out):
        torch.testing.assert_close(u, v, rtol=1e-6, atol=1e-7)
    for u, v in zip(*grads_after):
        torch.testing.assert_close(u, v, rtol=1e-6, atol=1e-7)


def test_ccl_training_with_folded_clip_tracks_the_separate_clip() -> None:
    """25 CCL steps (both nets clipped, momentum) with the folded clip: clip-then-step to rounding."""
    import bioplaus.training.optim as base

    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(16, 64, generator=g), torch.randint(0, 5, (16,), generator=g)) for _ in range(25)]
    runs, clipped = [], []
    orig_fused, orig_scales = base._plain_fused_sgd, base.clip_scales

    def counting(groups):  # noqa: ANN001, ANN202
        scales = orig_scales(groups)
        clipped.append(len(scales))
        return scales

    for folded in (True, False):
        rule = _rule(clip=0.05, clip_feedback=0.05, momentum=0.9)
        assert base._plain_fused_sgd(rule.optimizer)
        base.clip_scales = counting  # type: ignore[assignment]
        if not folded:
            base._plain_fused_sgd = lambda opt: False  # type: ignore[assignment]
        try:
            for x, y in batches:
                rule.train_step(x, y)
        finally:
            base._plain_fused_sgd, base.clip_scales = orig_fused, orig_scales
        runs.append([p.detach().clone() for p in [*rule.net.parameters(), *rule.feedback.parameters()]])
    assert len(clipped) == 25 and sum(clipped) > 0  # the folded path ran and clipped
    for u, v in zip(*runs):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)
