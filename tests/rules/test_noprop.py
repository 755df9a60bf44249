"""NoProp: the schedule's direction and weights, the inference coefficients, block
independence, the training modes' equivalence, and inference from pure noise."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import bioplaus
from bioplaus.errors import ConfigError
from bioplaus.record.reader import open_run
from bioplaus.rules.base import RuleContext
from bioplaus.rules.noprop import NoProp, NoPropModel, head_loss
from bioplaus.rules.noprop.blocks import (
    cosine_alpha_bar,
    inference_coefficients,
    kl_to_standard,
    relu_max_pool2,
    snr,
    snr_weights,
)
from bioplaus.rules.noprop.parallel import split_blocks

TINY = {"channels": [4, 8, 8], "width": 16, "T": 3}


def tiny_rule(**opts: object) -> NoProp:
    from bioplaus.config import RuleConfig

    rule = NoProp(RuleConfig(name="noprop", optimizer="adamw", lr=1e-3, weight_decay=1e-3, options={**TINY, **opts}))
    ctx = RuleContext(n_classes=10, input_shape=(1, 8, 8), seed=3)
    rule.setup(rule.build_model(ctx), ctx)
    return rule


# ----------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("T", [1, 3, 10, 50])
def test_alpha_bar_rises_and_every_snr_weight_is_positive(T: int) -> None:
    ab = cosine_alpha_bar(T)
    assert ab.shape == (T + 1,)
    assert bool((ab[1:] > ab[:-1]).all()), "ᾱ_t must rise with t (block T sees the cleanest input)"
    assert 0 < float(ab[0]) < 1e-3 and 1 - 1e-3 < float(ab[-1]) < 1
    w = snr_weights(ab, eta=0.1)
    assert w.shape == (T,) and bool((w > 0).all())
    # the formula written in the docs: ᾱ_t = cos²((π/2)(1 − t/T + s)/(1 + 2s)), s = 0.008
    for t in range(T + 1):
        expect = math.cos(0.5 * math.pi * (1 - t / T + 0.008) / 1.016) ** 2
        assert float(ab[t]) == pytest.approx(expect, rel=1e-12)
    # weight_t = (T/2) η (SNR(t) − SNR(t−1))
    r = [a / (1 - a) for a in ab.tolist()]
    assert float(w[-1]) == pytest.approx(0.5 * T * 0.1 * (r[-1] - r[-2]), rel=1e-10)


def test_inference_coefficients_against_hand_values() -> None:
    ab = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    a, b, c = inference_coefficients(ab)
    # t = 1: α_0 = 0.1 / 0.5 = 0.2
    assert float(a[0]) == pytest.approx(math.sqrt(0.5) * 0.8 / 0.9)
    assert float(b[0]) == pytest.approx(math.sqrt(0.2) * 0.5 / 0.9)
    assert float(c[0]) == pytest.approx(0.5 * 0.8 / 0.9)
    # t = 2: α_1 = 0.5 / 0.9
    al = 0.5 / 0.9
    assert float(a[1]) == pytest.approx(math.sqrt(0.9) * (1 - al) / 0.5)
    assert float(b[1]) == pytest.approx(math.sqrt(al) * 0.1 / 0.5)
    assert float(c[1]) == pytest.approx(0.1 * (1 - al) / 0.5)


def test_exact_guess_keeps_the_chain_on_the_marginals() -> None:
    """With û_t = u_y the update maps q(z_{t−1}|y) onto q(z_t|y): the posterior is exact."""
    ab = cosine_alpha_bar(10)
    a, b, c = inference_coefficients(ab)
    mean = a + b * ab[:-1].sqrt()  # coefficient of u_y in E[z_t]
    var = b**2 * (1 - ab[:-1]) + c
    assert torch.allclose(mean, ab[1:].sqrt(), atol=1e-12)
    assert torch.allclose(var, 1 - ab[1:], atol=1e-12)
    assert bool((c > 0).all()) and bool((a > 0).all()) and bool((b >= 0).all())


def test_kl_matches_torch_distributions() -> None:
    u = torch.randn(4, 7, dtype=torch.float64)
    a0 = 0.03
    q = torch.distributions.Normal(math.sqrt(a0) * u, math.sqrt(1 - a0) * torch.ones_like(u))
    p = torch.distributions.Normal(torch.zeros_like(u), torch.ones_like(u))
    ref = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(kl_to_standard(u, a0), ref, atol=1e-12)


def test_snr_is_ratio() -> None:
    ab = torch.tensor([0.2, 0.5])
    assert torch.allclose(snr(ab), torch.tensor([0.25, 1.0]))


@pytest.mark.parametrize("shape", [(16, 8, 28, 28), (3, 2, 7, 9), (2, 1, 2, 3)])
def test_fast_relu_max_pool_equals_torch(shape: tuple[int, ...]) -> None:
    """Values and gradients equal ``max_pool2d(relu(h), 2)`` bit for bit, including ties
    (positive, zero and negative windows), odd sizes and the no-grad path."""
    h = torch.randn(*shape)
    h[0, 0, 0, 0] = h[0, 0, 0, 1] = h[0, 0, 1, 0] = 0.7  # a positive tie: the first one wins
    if shape[-1] >= 4:
        h[0, 0, 0, 2:4] = 0.0
        h[0, 0, 1, 2:4] = -1.0
    a, b = h.clone().requires_grad_(), h.clone().requires_grad_()
    ra, rb = torch.nn.functional.max_pool2d(torch.relu(a), 2), relu_max_pool2(b)
    g = torch.randn_like(ra)
    ra.backward(g)
    rb.backward(g)
    assert torch.equal(ra, rb) and torch.equal(a.grad, b.grad)
    with torch.no_grad():
        assert torch.equal(relu_max_pool2(h), ra)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(relu_max_pool2, (x,))


# ----------------------------------------------------------------------------- independence


@pytest.mark.parametrize("embedding", ["onehot", "learned"])
def test_block_step_runs_and_updates_only_its_block(embedding: str) -> None:
    rule = tiny_rule(embedding=embedding)
    m: NoPropModel = rule.net
    calls = {t: 0 for t in range(1, 4)}
    hooks = [b.register_forward_hook(lambda *_a, t=t: calls.__setitem__(t, calls[t] + 1))
             for t, b in enumerate(m.blocks, start=1)]
    before = [[p.detach().clone() for p in b.parameters()] for b in m.blocks]
    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    unit = rule.units[1]  # block 2
    rule.block_step(unit, x, y)
    for h in hooks:
        h.remove()
    assert calls == {1: 0, 2: 1, 3: 0}, "training block 2 must run no other block"
    for t, b in enumerate(m.blocks, start=1):
        changed = any(not torch.equal(p0, p) for p0, p in zip(before[t - 1], b.parameters(), strict=True))
        assert changed == (t == 2)
        grads = [p.grad for p in b.parameters()]
        if t != 2:
            assert all(g is None for g in grads), f"block {t} received a gradient from block 2's loss"
    # the shared p_out (and a learned W_embed) take part in every block's loss
    assert m.head.weight.grad is not None
    assert (m.embed.W.grad is not None) == (embedding == "learned")


def test_block_loss_gradient_reaches_only_its_block() -> None:
    rule = tiny_rule()
    m: NoPropModel = rule.net
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8)
    wl2, _, _ = rule.units[0].loss(x, y)
    ce, kl = head_loss(m, y, torch.Generator().manual_seed(0))
    params = {n: p for n, p in m.named_parameters()}
    grads = torch.autograd.grad(wl2 + ce + kl, list(params.values()), allow_unused=True)
    touched = {n.split(".")[1] if n.startswith("blocks.") else n.split(".")[0]
               for n, g in zip(params, grads, strict=True) if g is not None and bool((g != 0).any())}
    assert touched == {"0", "head"}


@pytest.mark.parametrize("readout", ["logits", "p_out"])
def test_backprop_over_blocks_readout(readout: str) -> None:
    """Backprop over blocks classifies with the last block's logits (default) or p_out(z_T),
    in training and in inference, and its loss reaches every block."""
    rule = tiny_rule(variant="backprop", bp_readout=readout)
    m: NoPropModel = rule.net
    m.eval()
    x = torch.rand(8, 1, 8, 8)
    blk: list[torch.Tensor] = []
    zs = m.chain(x, "mean", torch.Generator().manual_seed(5), 3, blk)
    expect = blk[-1] if readout == "logits" else m.head(zs[-1])
    assert len(blk) == 3 and torch.equal(m(x, torch.Generator().manual_seed(5)), expect)
    m.train()
    rule.train_step(x, torch.arange(8))
    for b in m.blocks:
        assert all(p.grad is not None for p in b.parameters() if p.requires_grad)
    assert (m.head.weight.grad is None) == (readout == "logits")


def test_split_blocks() -> None:
    assert split_blocks(10, 2) == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    assert split_blocks(3, 5) == [[1], [2], [3]]
    assert sum(split_blocks(7, 3), []) == list(range(1, 8))


# ----------------------------------------------------------------------------- runs

BASE = {
    "data": {"dataset": "digits", "batch_size": 32, "limit_train": 256, "limit_test": 200},
    "rule": {"name": "noprop", "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-3, **TINY},
    "train": {"epochs": 2, "threads": 1, "report": False},
    "record": {"weights_every": 0},
}


def run_cfg(tmp_path, name: str, rule: dict | None = None, **top: dict) -> object:
    cfg = {k: dict(v) for k, v in BASE.items()}
    cfg["rule"].update(rule or {})
    for k, v in top.items():
        cfg[k].update(v)
    return bioplaus.run(cfg, out=tmp_path / f"{name}.h5", progress=False)


def block_params(path) -> dict[str, np.ndarray]:
    with open_run(path) as r:
        return {k: np.asarray(r.array(f"/model/net/{k}")) for k in r.model_keys("net") if k.startswith("blocks.")}


def test_modes_give_the_same_block_parameters(tmp_path) -> None:
    """Each block's noise, dropout masks and initialisation come from its own seed and it
    sees the loader's batch order of each epoch, so where and in which order the blocks
    train does not change them (one thread everywhere: the same float reductions)."""
    runs = {mode: run_cfg(tmp_path, mode, {"mode": mode, "workers": 2}, data={"limit_train": 128, "limit_test": 50})
            for mode in ("sequential", "interleaved", "parallel")}
    params = {mode: block_params(res.path) for mode, res in runs.items()}
    assert len(params["sequential"]) > 10
    for mode in ("interleaved", "parallel"):
        assert params[mode].keys() == params["sequential"].keys()
        for k, v in params["sequential"].items():
            assert np.array_equal(v, params[mode][k]), f"{mode}: {k} differs from sequential"
    assert runs["sequential"].steps == runs["parallel"].steps == 3 * 2 * 4
    assert runs["interleaved"].steps == 2 * 4


def test_sampled_inference_averages_the_chains() -> None:
    """K = 1 is the single chain; K > 1 is the log of the mean of K chains' softmax outputs,
    drawn one after another from the same generator."""
    from bioplaus.device import generator

    rule = tiny_rule()
    m = rule.net.eval()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        zs1, one = m.sampled_step_logits(x, "stochastic", generator(7), 3, 1)
        ref_zs, ref = m.step_logits(x, "stochastic", generator(7), 3)
        assert all(torch.equal(a, b) for a, b in zip(one, ref)) and torch.equal(zs1[-1], ref_zs[-1])
        g = generator(7)
        chains = [m.step_logits(x, "stochastic", g, 3)[1] for _ in range(4)]
        _, avg = m.sampled_step_logits(x, "stochastic", generator(7), 3, 4)
    for k in range(3):
        mean = torch.stack([torch.softmax(c[k], 1) for c in chains]).mean(0)
        assert torch.allclose(avg[k].exp(), mean, atol=1e-6)
        assert torch.allclose(avg[k].exp().sum(1), torch.ones(5), atol=1e-5)


def test_inference_from_pure_noise_beats_chance(tmp_path) -> None:
    res = run_cfg(
        tmp_path, "trained", {"channels": [8, 16, 16], "width": 32, "T": 3, "lr": 5e-3},
        data={"limit_train": 0, "limit_test": 0, "batch_size": 64}, train={"epochs": 5, "report": True},
    )
    m = res.metrics
    assert m["test_acc"] > 0.6, m  # stochastic inference from z_0 ~ N(0, I); chance is 0.1
    assert m["test_acc_det"] > 0.6, m
    with open_run(res.path) as r:
        dist = np.asarray(r.trace("noprop.z_dist"))
        assert dist.shape[1] == 4
        assert dist[-1, -1] < 0.5 * dist[-1, 0]  # the chain moves towards the true embedding
        assert "block3/snr_weight" in r.metrics and "block1/loss" in r.metrics
    names = {p.name for p in res.figures}
    assert {"noprop_steps.png", "noprop_trajectory.png"} <= names


@pytest.mark.parametrize("variant", ["ct", "fm", "backprop", "cnn"])
@pytest.mark.parametrize("embedding", ["onehot", "learned", "prototype"])
def test_every_variant_and_embedding_runs(tmp_path, variant: str, embedding: str) -> None:
    res = run_cfg(tmp_path, f"{variant}_{embedding}", {"variant": variant, "embedding": embedding, "eval_steps": 3},
                  data={"limit_train": 64, "limit_test": 40}, train={"epochs": 1})
    assert 0 <= res.metrics["test_acc"] <= 1 and math.isfinite(res.metrics["test_loss"])


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "floor", "epochs"), [("ct", 0.3, 6), ("fm", 0.3, 14), ("backprop", 0.3, 6), ("cnn", 0.6, 6)])
def test_other_variants_learn(tmp_path, variant: str, floor: float, epochs: int) -> None:
    res = run_cfg(
        tmp_path, variant, {"variant": variant, "eval_steps": 10, "lr": 5e-3, "channels": [8, 16, 16], "width": 48},
        data={"limit_train": 0, "limit_test": 0, "batch_size": 64}, train={"epochs": epochs},
    )
    assert res.metrics["test_acc"] > floor, res.metrics


@pytest.mark.parametrize("shape", [(64,), (3, 28), (1, 2, 8)])
def test_inputs_too_small_for_the_image_path_are_a_config_error(shape: tuple[int, ...]) -> None:
    from bioplaus.config import RuleConfig

    rule = NoProp(RuleConfig(name="noprop", options=dict(TINY)))
    with pytest.raises(ConfigError, match="at least 4x4"):
        rule.build_model(RuleContext(n_classes=10, input_shape=shape, seed=0))


def test_parallel_needs_fixed_embedding() -> None:
    with pytest.raises(ConfigError, match="parallel"):
        NoProp.parse_options({"mode": "parallel", "embedding": "learned"})
    with pytest.raises(ConfigError, match="channels"):
        NoProp.parse_options({"channels": [4, 8]})
    with pytest.raises(ConfigError, match="variant"):
        NoProp.parse_options({"variant": "dx"})


def test_prototype_is_the_most_central_image() -> None:
    from bioplaus.rules.noprop.blocks import LabelEmbedding

    emb = LabelEmbedding("prototype", 2, 4, seed=0)
    v = torch.tensor([0.0, 1, 0.45, 3, 0.5, 5, 9, 6, 5.8, 20])
    x = v[:, None].repeat(1, 4)
    y = torch.tensor([0] * 5 + [1] * 5)
    emb.init_prototypes(x, y)
    # smallest median distance to the class: 0.45 (class 0) and 5.8 (class 1), not the means
    assert torch.equal(emb.W[0], x[2]) and torch.equal(emb.W[1], x[8])


def test_learned_embedding_is_orthogonal_at_init() -> None:
    from bioplaus.rules.noprop.blocks import LabelEmbedding

    W = LabelEmbedding("learned", 10, 20, seed=1).W.detach()
    assert torch.allclose(W @ W.T, torch.eye(10), atol=1e-5)


def test_spiking_blocks_use_lif_rates() -> None:
    from bioplaus.config import NetworkConfig, RuleConfig
    from bioplaus.rules.noprop.blocks import LIFRate

    net = NetworkConfig(backend="spiking")
    net.spiking.T = 5
    rule = NoProp(RuleConfig(name="noprop", optimizer="adam", lr=1e-3, options={**TINY}))
    ctx = RuleContext(n_classes=10, input_shape=(1, 8, 8), seed=0, network=net)
    rule.setup(rule.build_model(ctx), ctx)
    b = rule.net.blocks[0]
    assert isinstance(b.z_fc.act, LIFRate) and isinstance(b.fuse2.act, LIFRate)
    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    before = b.z_fc.weight.detach().clone()
    rule.block_step(rule.units[0], x, y)
    rate = b.fuse1.state.out.detach()
    assert torch.allclose(rate * 5, (rate * 5).round(), atol=1e-5)  # spike counts / T
    assert 0 <= float(rate.min()) and float(rate.max()) <= 1
    assert not torch.equal(before, b.z_fc.weight)  # the surrogate gradient reaches the LIF layers


def test_parallel_with_learned_embedding_is_a_config_error(tmp_path, capsys) -> None:
    from pathlib import Path

    from bioplaus.cli import main

    sim = Path(__file__).parents[2] / "sims" / "noprop_dt_fashion_dim20.toml"
    assert main(["run", str(sim), "--set", "rule.mode=parallel", "--out", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert "parallel" in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.h5").exists()


def test_projection_plugin_protects_the_declared_block_layers(tmp_path) -> None:
    """Plugins act on NoProp's blocks through `protected_layers`: with the exact projection
    plugin and SGD, every declared layer's change during task 1 is orthogonal to the
    subspace of task 0's presynaptic activity."""
    from bioplaus.plugins.base import Plugin
    from bioplaus.registry import PLUGINS

    snaps: dict[str, torch.Tensor] = {}
    bases: dict[int, torch.Tensor] = {}  # task 0's subspaces, as task 1 starts

    class Snapshot(Plugin):
        name = "np_snapshot"

        def setup(self, rule, ctx) -> None:  # noqa: ANN001
            self.rule = rule

        def before_task(self, rule, task, loader) -> None:  # noqa: ANN001
            if task.index == 1:
                snaps.update({la.name: la.weight.detach().clone() for la in self.rule.protected_layers()})
                bases.update({k: v.clone() for k, v in self.rule.plugins.find("projection").bases.items()})

    PLUGINS.register("np_snapshot", Snapshot)
    try:
        cfg = {
            "kind": "continual",
            "data": {"dataset": "digits", "batch_size": 32, "val_fraction": 0.0, "limit_test": 100},
            "rule": {"name": "noprop", "optimizer": "sgd", "lr": 0.05, **TINY, "T": 2},
            "continual": {"stream": "split", "n_tasks": 2, "classes_per_task": 2, "setting": "task", "epochs_per_task": 1},
            "train": {"threads": 1, "report": False},
            "record": {"weights_every": 0},
            "plugins": [{"name": "projection", "neurons_first": [3], "neurons_per_task": [2], "samples": 64},
                        {"name": "np_snapshot"}],
        }
        res = bioplaus.run(cfg, out=tmp_path / "proj.h5", progress=False)
    finally:
        PLUGINS.unregister("np_snapshot")
    exp = res.experiment
    layers = exp.rule.protected_layers()
    assert len(layers) == 2 * 10 + 1 and layers[-1].name == "head"  # 3 convs + 7 dense per block
    for i, layer in enumerate(layers):
        B = bases[i]
        assert B.shape[0] > 0, layer.name
        dW = (layer.weight.detach() - snaps[layer.name]).reshape(layer.weight.shape[0], -1)
        assert float(dW.norm()) > 0, f"{layer.name} did not learn task 1"
        assert float((dW @ B.T).norm()) <= 1e-4 * float(dW.norm()) + 1e-7, layer.name


def test_parallel_stopped_by_max_steps_evaluates_the_trained_blocks(tmp_path) -> None:
    a = run_cfg(tmp_path, "par_stop", {"mode": "parallel", "workers": 2}, data={"limit_train": 128, "limit_test": 50},
                train={"epochs": 1, "max_steps": 3})
    b = run_cfg(tmp_path, "seq_full", {"mode": "sequential"}, data={"limit_train": 128, "limit_test": 50},
                train={"epochs": 1})
    pa, pb = block_params(a.path), block_params(b.path)
    assert all(np.array_equal(pa[k], pb[k]) for k in pb)  # the workers finished their epoch


HLOP_STREAM = {
    "kind": "continual",
    "data": {"dataset": "digits", "batch_size": 32, "val_fraction": 0.0, "limit_test": 100},
    "rule": {"name": "noprop", "optimizer": "adam", "lr": 1e-3, **TINY},
    "continual": {"stream": "split", "n_tasks": 2, "classes_per_task": 2, "setting": "task", "epochs_per_task": 2,
                  "freeze_norm": True},
    "train": {"threads": 1, "report": False},
    "record": {"weights_every": 0},
    "plugins": [{"name": "hlop", "protect_output": False, "neurons_first": [3], "neurons_per_task": [2],
                 "lr": [0.01], "adaptive": "project_step", "angle_samples": 64}],
}


def hlop_stream(tmp_path, mode: str) -> object:
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in HLOP_STREAM.items()}
    cfg["rule"] = {**cfg["rule"], "mode": mode, "workers": 2}
    return bioplaus.run(cfg, out=tmp_path / f"{mode}.h5", progress=False)


def test_parallel_blocks_with_hlop_on_a_stream_equal_sequential(tmp_path) -> None:
    """Block-ordered modes give each block its own HLOP copy (its layers, its subspaces),
    which runs where the block trains: in this process (sequential) or in a worker
    (parallel). On a 2-task stream the two modes give the same block parameters, the same
    lateral weights and the same accuracy matrix, bit for bit."""
    seq, par = hlop_stream(tmp_path, "sequential"), hlop_stream(tmp_path, "parallel")
    assert seq.steps == par.steps and seq.steps % (2 * 2 * 3) == 0  # tasks x epochs x blocks x batches
    ps, pp = block_params(seq.path), block_params(par.path)
    assert len(ps) > 10 and ps.keys() == pp.keys()
    for k, v in ps.items():
        assert np.array_equal(v, pp[k]), f"{k} differs between sequential and parallel"
    with open_run(seq.path) as a, open_run(par.path) as b:
        n_layers = 3 * 10 + 1
        dims = a.metric(f"layer{n_layers - 3}/hlop_dim")  # block 3's last hidden layer, global index
        np.testing.assert_array_equal(dims, [3, 5])
        for i in range(n_layers - 1):
            if i % 10 == 9:  # each block's output layer (protect_output = false)
                assert not a.has(f"/hlop/layer{i}/task1/H")
                continue
            for task in (0, 1):
                path = f"/hlop/layer{i}/task{task}/H"
                assert np.array_equal(np.asarray(a.array(path)), np.asarray(b.array(path))), path
            np.testing.assert_array_equal(a.metric(f"layer{i}/hlop_dim"), b.metric(f"layer{i}/hlop_dim"))
        acc_a, acc_b = np.asarray(a.array("/continual/acc_matrix")), np.asarray(b.array("/continual/acc_matrix"))
        assert np.array_equal(acc_a, acc_b)
        assert a.metric("hlop/block1/hebb_seconds").shape == (2,)


def test_block_ordered_modes_give_each_block_its_own_plugin_copies() -> None:
    """A block-ordered rule replaces the run's plugins by one dispatcher; each block holds a
    copy set up on its layers only, whose logs name layers by their index in the rule's
    `protected_layers` and other metrics per block."""
    from bioplaus.plugins.hlop import HLOP

    rule = tiny_rule(mode="sequential")
    hl = HLOP({"protect_output": False, "neurons_first": [3], "neurons_per_task": [2], "lr": [0.01],
               "adaptive": "project_step"})
    adopted = rule.adopt_plugins([hl])
    assert [p.name for p in adopted] == ["noprop_blocks"]
    logs: list = []
    adopted[0].setup(rule, replace(rule.ctx, run=None))
    for u in rule.units:
        u.bind_plugins([hl], rule.ctx, rule.layer_offset(u.t), logs)
    copies = [u.plugins.find("hlop") for u in rule.units]
    assert all(c is not hl for c in copies) and len({id(c) for c in copies}) == 3
    assert copies[1].net_layers == rule.units[1].protected_layers() == rule.protected_layers()[10:20]
    assert copies[1].layers == list(range(9))  # the block's layers but its output
    copies[1].ctx.log(**{"layer2/hlop_dim": 3.0, "hlop/hebb_seconds": 0.5})
    copies[2].ctx.log_array("/hlop/layer0/task0/H", np.zeros(2))
    assert logs[0] == ("log", None, {"layer12/hlop_dim": 3.0, "hlop/block2/hebb_seconds": 0.5})
    assert logs[1][:2] == ("log_array", "/hlop/layer20/task0/H")
    assert tiny_rule().adopt_plugins([hl]) == [hl]  # interleaved: the run's plugins act on the whole model


def test_ewc_on_sequential_blocks_uses_each_block_as_a_classifier(tmp_path) -> None:
    """EWC's Fisher needs ``rule.net(x)``: a block's copy sees the block as a classifier of x
    alone (`BlockClassifier`); its penalty then acts on the block's parameters only."""
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in HLOP_STREAM.items()}
    cfg["rule"] = {**cfg["rule"], "mode": "sequential"}
    cfg["plugins"] = [{"name": "ewc", "lam": 100.0, "samples": 16}]
    res = bioplaus.run(cfg, out=tmp_path / "ewc.h5", progress=False)
    unit = res.experiment.rule.units[2]
    ewc = unit.plugins.find("ewc")
    block_params = {id(p) for p in unit.block.parameters()}
    assert ewc.fisher is not None and all(id(p) in block_params for p in ewc.params)
    assert unit.net(torch.rand(4, 1, 8, 8)).shape == (4, 10)
    with open_run(res.path) as r:
        assert r.metric("ewc/block3/fisher_mean").shape == (2,)


def test_noprop_and_its_block_units_are_final_rules() -> None:
    from bioplaus.rules.noprop import BlockUnit

    assert getattr(NoProp, "__final__", False) and getattr(BlockUnit, "__final__", False)
    assert NoProp.steps_per_epoch(NoProp.parse_options({"mode": "sequential", "T": 4}), 7) == 28
    assert NoProp.steps_per_epoch(NoProp.parse_options({"T": 4}), 7) == 7
