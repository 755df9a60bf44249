"""Counter-current learning (CCL; Kao & Hariharan, NeurIPS 2024), rate and spiking.

Two networks run in opposite directions and every layer's input is detached in both, so no
gradient ever crosses a layer::

    forward net   a_l = f(U_l · sg(a_{l-1})),        a_0 = x,  logits = U_L · sg(a_{L-1})
    feedback net  b_{l-1} = f(V_l · sg(b_l)),        b_L = target,  b_0 = V_1 · sg(b_1)

Each pair (a_l, b_l), l = 0..L-1, has a local loss that updates U_l (through a_l) and V_{l+1}
(through b_l); the output layer U_L learns by cross-entropy on the forward logits; inference
runs the forward net only. Loss forms (``loss_form``):

- ``mlp`` (public code, MLP): the feedback net is fed the C x C identity, so b_l holds one
  prototype row per class, B_l ∈ R^{C x d_l};
  ℓ_l = s · (256 / d_l) · mean_{i,c} ((A_l B_lᵀ)_{ic} - Y_{ic})²  with Y the one-hot labels.
- ``cnn`` (public code, CNN): rows flattened and L2-normalised (Â, B̂);
  ℓ_l = s · mean((Â B̂ᵀ - Y)²) + λ · mean((Â Âᵀ - I_B)²) + λ · mean((B̂ B̂ᵀ - I_C)²).
- ``eq2`` (paper, eq. 2 as we read it): the feedback net is fed the batch's one-hot labels
  and ℓ_l = s · mean_i ||a_l,i - b_l,i||² / d_l, the plain distance of paired activities.
- ``auto`` (default): ``mlp`` for an MLP, ``cnn`` for a net with conv layers — the form the
  public code uses for that architecture, which is where the published numbers come from.

Training details of the public code, all options here: gradient centralisation
(g ← g - mean over the input dims of each weight gradient), separate gradient-norm clipping
for the two nets, flooding (samples whose true-class probability is within ``flooding`` of
1 are zeroed out of the local losses; the code hard-codes 0.1), a linear loss warm-up
over the first ``warmup`` steps, the cosine schedule (``rule.schedule``), SGD.

On the spiking backend both nets are LIF layers; the local losses read time-averaged
activity (spike rates), so each layer's gradient runs through time inside the layer via the
surrogate, never across layers. The bottom feedback layer (paired with the input) is a
leaky integrator read out by its mean membrane, as the forward readout is. Spike rates are
non-negative, so ``center`` (subtract each unit's batch / class mean before the loss) makes
the similarities signed; without it the ``mlp`` form silences the layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bioplaus.config import bounded, check_choice
from bioplaus.metrics import Metric
from bioplaus.nets import Layer, Net, init_weights
from bioplaus.neurons.base import neuron_model
from bioplaus.registry import register_rule
from bioplaus.rules.base import LearningRule, RuleContext, accuracy
from bioplaus.training.optim import make_optimizer, make_scheduler

LOSS_FORMS = ("auto", "mlp", "cnn", "eq2")
ALIGN_EVERY = 20  # steps between samples of the alignment metric


@dataclass
class CCLOptions:
    """Options of the CCL rule (keys of ``[rule]``)."""

    loss_form: str = "auto"  # auto | mlp | cnn | eq2
    loss_scale: float = bounded(0.5, gt=0)  # s: the public code's loss_scale_C
    ssl_scale: float = bounded(0.5, ge=0)  # λ: weight of the two anti-collapse terms (cnn form)
    lr_feedback: float | None = bounded(None, gt=0)  # None = rule.lr
    momentum_feedback: float | None = bounded(None, ge=0, lt=1)  # None = rule.momentum
    clip_feedback: float | None = bounded(None, ge=0)  # None = rule.clip (max grad norm of the feedback net)
    grad_centralization: bool = False
    flooding: float = bounded(0.0, ge=0, lt=1)  # 0 = off; 0.1 reproduces the public code's filter_target
    warmup: int = bounded(0, ge=0)  # steps of linear loss warm-up
    feedback_activation: str = ""  # "" = network.activation (rate backend)
    center: bool = False  # subtract the batch / class mean of each unit before the loss


# ----------------------------------------------------------------------------- loss forms


def loss_mlp(
    a: Tensor, b: Tensor, y_onehot: Tensor, scale: float = 0.5, rows: Tensor | None = None
) -> Tensor:
    """MLP form: s · (256/d) · mean((A Bᵀ - Y)²), A [N, d] activity, B [C, d] prototypes.

    ``rows`` (0/1 per sample, flooding) zeroes rows of A: the same loss and gradients as
    masking A itself, applied to the small N x C similarity instead of the N x d activity.
    """
    a = a.flatten(1)
    b = b.flatten(1)
    return _SimilarityMSE.apply(a, b, y_onehot, scale * 256.0 / a.shape[1], rows)


class _SimilarityMSE(torch.autograd.Function):
    """k · mean((A Bᵀ - Y)²) with its gradients written out (one graph node instead of six).

    With R = A Bᵀ - Y and n = numel(R):  ∂/∂A = (2k/n) R B,   ∂/∂B = (2k/n) Rᵀ A.
    The residual is held transposed, Rᵀ = B Aᵀ - Yᵀ [C, N] (``_residual_t``).
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, y: Tensor, k: float, rows: Tensor | None = None) -> Tensor:  # noqa: ANN001
        rt = _residual_t(a, b, y, rows)
        ctx.save_for_backward(a, b, rt, rows)
        ctx.k = k
        return (rt * rt).mean() * k

    @staticmethod
    def backward(ctx, g: Tensor):  # noqa: ANN001, ANN205
        a, b, rt, rows = ctx.saved_tensors
        da, db = _residual_grads(a, b, rt, rows, g * (2.0 * ctx.k / rt.numel()), *ctx.needs_input_grad[:2])
        return da, db, None, None, None


def _residual_t(a: Tensor, b: Tensor, y: Tensor, rows: Tensor | None) -> Tensor:
    """Rᵀ = B Aᵀ - Yᵀ [C, N] (rows of A masked by ``rows``).

    The same numbers as A Bᵀ - Y to float rounding, at about half the time: a GEMM whose
    output has C = 10 columns vectorises poorly, one with N columns well (measured on CPU:
    256 x 256 activity, 49 vs 23 µs).
    """
    if rows is None:
        return torch.addmm(y.T, b, a.T, alpha=1.0, beta=-1.0)
    return (b @ a.T).mul_(rows).sub_(y.T)


def _residual_grads(
    a: Tensor, b: Tensor, rt: Tensor, rows: Tensor | None, coef: Tensor, need_a: bool, need_b: bool
) -> tuple[Tensor | None, Tensor | None]:
    """∂/∂A = coef · R B and ∂/∂B = coef · Rᵀ A from the transposed residual."""
    d_ct = rt * coef
    if rows is not None:
        d_ct.mul_(rows)
    da = d_ct.T @ b if need_a else None
    db = d_ct @ a if need_b else None
    return da, db


def loss_mlp_pairs(
    acts: list[Tensor], fbs: list[Tensor], y_onehot: Tensor, scale: float = 0.5, rows: Tensor | None = None
) -> Tensor:
    """``[loss_mlp(a, b, Y, s, rows) for a, b in pairs]`` as one tensor, from one graph node.

    The same numbers as the per-pair calls (each pair's residual and gradients are computed
    exactly as in ``_SimilarityMSE``); one autograd node instead of one per pair plus a stack
    saves the per-node overhead that dominates these small N x C matmuls.
    """
    a = [t.flatten(1) for t in acts]
    b = [t.flatten(1) for t in fbs]
    ks = [scale * 256.0 / t.shape[1] for t in a]
    return _SimilarityMSEPairs.apply(y_onehot, rows, ks, *a, *b)


class _SimilarityMSEPairs(torch.autograd.Function):
    """Losses k_p · mean((A_p B_pᵀ - Y)²) of P pairs (see ``_SimilarityMSE``) as a [P] tensor."""

    @staticmethod
    def forward(ctx, y: Tensor, rows: Tensor | None, ks: list[float], *ab: Tensor) -> Tensor:  # noqa: ANN001
        n = len(ks)
        a, b = ab[:n], ab[n:]
        rs, out = [], []
        for ap, bp, k in zip(a, b, ks):
            rt = _residual_t(ap, bp, y, rows)
            rs.append(rt)
            out.append((rt * rt).mean() * k)
        ctx.save_for_backward(rows, *a, *b, *rs)
        ctx.ks = ks
        return torch.stack(out)

    @staticmethod
    def backward(ctx, g: Tensor):  # noqa: ANN001, ANN205
        n = len(ctx.ks)
        saved = ctx.saved_tensors
        rows, a, b, rs = saved[0], saved[1:n + 1], saved[n + 1:2 * n + 1], saved[2 * n + 1:]
        need = ctx.needs_input_grad[3:]
        da: list[Tensor | None] = [None] * n
        db: list[Tensor | None] = [None] * n
        for p in range(n):
            if not (need[p] or need[n + p]):
                continue
            rt = rs[p]
            da[p], db[p] = _residual_grads(a[p], b[p], rt, rows, g[p] * (2.0 * ctx.ks[p] / rt.numel()),
                                           need[p], need[n + p])
        return (None, None, None, *da, *db)


def _unit_rows(x: Tensor) -> Tensor:
    x = x.flatten(1)
    return x / (x.norm(dim=1, keepdim=True) + 1e-8)


def loss_cnn(
    a: Tensor, b: Tensor, y_onehot: Tensor, scale: float = 0.5, ssl: float = 0.5
) -> Tensor:
    """CNN form: s·mean((ÂB̂ᵀ - Y)²) + λ·mean((ÂÂᵀ - I)²) + λ·mean((B̂B̂ᵀ - I)²), rows unit-norm."""
    ah, bh = _unit_rows(a), _unit_rows(b)
    eye_a = torch.eye(ah.shape[0], dtype=ah.dtype)
    eye_b = torch.eye(bh.shape[0], dtype=bh.dtype)
    return (
        F.mse_loss(ah @ bh.T, y_onehot) * scale
        + F.mse_loss(ah @ ah.T, eye_a) * ssl
        + F.mse_loss(bh @ bh.T, eye_b) * ssl
    )


def loss_eq2(a: Tensor, b: Tensor, scale: float = 0.5) -> Tensor:
    """Paired form: s · mean_i ||a_i - b_i||² / d (the feedback net fed the batch labels)."""
    return F.mse_loss(a.flatten(1), b.flatten(1)) * scale


def alignment(a: Tensor, b: Tensor, y: Tensor, per_class: bool) -> Tensor:
    """Mean cosine between each sample's activity and its class's feedback activity."""
    a = a.flatten(1)
    b = b.flatten(1)
    tgt = b[y] if per_class else b
    return F.cosine_similarity(a, tgt, dim=1, eps=1e-8).mean()


def flood_mask(logits: Tensor, y: Tensor, margin: float) -> Tensor:
    """1 for samples still to learn, 0 where the true-class probability exceeds 1 - margin."""
    p = torch.softmax(logits.detach(), dim=1).gather(1, y[:, None]).squeeze(1)
    return (p <= 1.0 - margin).to(logits.dtype)


# ----------------------------------------------------------------------------- feedback net


class FeedbackNet(nn.Module):
    """The mirrored net: ``fb[l]`` maps layer l's output space back to its input space.

    Built from the forward net's layer shapes; each feedback layer is a ``Layer`` (synapse
    -> neuron) on the same neuron model, so spiking feedback uses the same LIF settings; the
    bottom one only integrates, like an output layer that does not fire.
    ``forward(target)`` returns [b_0, ..., b_{L-1}] (b_l in the input space of layer l) as
    time-averaged activity.
    """

    def __init__(self, net: Net, activation: str, seed: int = 0) -> None:
        super().__init__()
        self.temporal = net.temporal
        self.T = net.T
        in_shapes, out_shapes = _layer_shapes(net)
        self.in_shapes, self.out_shapes = in_shapes, out_shapes
        model = neuron_model(net.backend)
        # hidden feedback layers: the feedback activation (rate); the bottom one: identity
        # (rate) or a leaky integrator (LIF), i.e. a non-firing output layer's parameters
        fb_cfg = replace(net.cfg, activation=activation)
        hidden = model.params_from(fb_cfg, False)
        bottom_params = model.params_from(replace(fb_cfg, spiking=replace(fb_cfg.spiking, output_spikes=False)), True)
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed + 104729)  # own stream: the forward net's init is unchanged
        layers = []
        for k, la in enumerate(net.layers):
            c_in = in_shapes[k]
            bottom = k == 0
            if la.is_conv:
                # Mirror of conv + pool: upsample to the conv's input size, then the conv.
                syn: nn.Module = UpsampleConv2d(
                    tuple(c_in[1:]), la.synapse.out_channels, la.synapse.in_channels,
                    la.synapse.kernel_size, padding=la.synapse.padding,
                    bias=la.synapse.bias is not None,
                )
            else:
                syn = nn.Linear(la.n_out, int(math.prod(c_in)), bias=la.synapse.bias is not None)
            init_weights(syn, net.cfg.init, net.cfg.init_gain)
            layers.append(Layer(syn, model.population(bottom_params if bottom else hidden), index=k))
        torch.random.set_rng_state(gen_state)
        self.layers = nn.ModuleList(layers)

    def forward(self, target: Tensor) -> list[Tensor]:
        """Feedback activities [b_0, ..., b_{L-1}] (rates) from a target ``[N, C]``."""
        h = target
        if self.temporal:  # constant drive over time: stride-0 view, the synapse runs once
            h = target.unsqueeze(0).expand(self.T, *target.shape)
        outs: list[Tensor] = [None] * len(self.layers)  # type: ignore[list-item]
        if not self.temporal:
            # Rate: synapse -> activation directly; the Layer bookkeeping (state for probes)
            # is not needed here and costs a measurable share of a small step.
            for k in range(len(self.layers) - 1, -1, -1):
                fl = self.layers[k]
                h = h.detach().reshape(h.shape[0], *self.out_shapes[k])
                h, _ = fl.neuron(fl.synapse(h))
                outs[k] = h
            return outs
        for k in range(len(self.layers) - 1, -1, -1):
            fl = self.layers[k]
            h = h.detach()
            lead = 2 if self.temporal else 1
            h = h.reshape(*h.shape[:lead], *self.out_shapes[k])
            h = fl(h)
            if self.temporal:
                outs[k] = fl.state.mem.mean(0) if k == 0 else h.mean(0)
            else:
                outs[k] = h
        return outs


class UpsampleConv2d(nn.Conv2d):
    """Nearest-neighbour upsampling to ``size`` (H, W), then the convolution, cropped to ``size``.

    The forward convs pad by ⌊k/2⌋, so an even kernel yields H + 1 rows; the crop keeps the
    feedback in the forward layer's input space.
    """

    def __init__(self, size: tuple[int, ...], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.size = tuple(int(v) for v in size)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="nearest")
        y = super().forward(x)
        h, w = self.size
        return y if tuple(y.shape[-2:]) == self.size else y[..., :h, :w]


@torch.no_grad()
def _layer_shapes(net: Net) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Per layer: the shape of one sample's input (unflattened) and output (after pooling)."""
    was = net.training
    net.eval()
    x = torch.zeros(1, *net.input_shape)
    h = net.encode(x)
    lead = 2 if net.temporal else 1
    ins, outs = [], []
    for la in net.layers:
        ins.append(tuple(h.shape[lead:]))
        h = la(h)
        outs.append(tuple(h.shape[lead:]))
    net.train(was)
    return ins, outs


# ----------------------------------------------------------------------------- the rule


@register_rule("ccl")
@final
class CCL(LearningRule):
    """Counter-current learning: layer-local losses between a forward and a feedback net."""

    needs = frozenset({"differentiable"})
    Options = CCLOptions
    epoch_metric_families = (
        Metric("layer*/local_loss", "min", description="running mean of the pair loss that trains layer k"),
        Metric("layer*/alignment", "max", description="cosine between forward activity and class prototype"),
        Metric("input/*", description="the (x, b_0) pair, which trains the bottom feedback layer"),
    )

    @classmethod
    def check_options(cls, o: Any, where: str) -> None:
        check_choice(o.loss_form, LOSS_FORMS, f"{where}.loss_form")

    def setup(self, net: Net, ctx: RuleContext) -> None:
        self.net = net
        self.ctx = ctx
        o = self.opts
        self.centralize = o.grad_centralization
        act = o.feedback_activation or net.cfg.activation
        self.form = o.loss_form
        if self.form == "auto":
            self.form = "cnn" if any(la.is_conv for la in net.layers) else "mlp"
        self.feedback = FeedbackNet(net, act, seed=ctx.seed)
        self.n_classes = ctx.n_classes
        self._eye = torch.eye(ctx.n_classes)
        self.optimizer = self._make_two_group_optimizer()
        self.scheduler = make_scheduler(self.cfg, self.optimizer, ctx.total_steps)
        self._fwd_params = list(net.parameters())
        self._fb_params = list(self.feedback.parameters())
        self._reset_running()

    def _make_two_group_optimizer(self) -> torch.optim.Optimizer:
        """One optimiser, two param groups: the forward net and the feedback net (own lr/momentum).

        One optimiser (not two) so each step is a single fused update; the nets still get
        their own learning rates, momenta and gradient clipping.
        """
        o, c = self.opts, self.cfg
        fb: dict[str, Any] = {"params": list(self.feedback.parameters())}
        if o.lr_feedback is not None:
            fb["lr"] = o.lr_feedback
        if o.momentum_feedback is not None and c.optimizer == "sgd":
            fb["momentum"] = o.momentum_feedback
        return make_optimizer(c, [{"params": list(self.net.parameters())}, fb])

    def reset_optimizer(self) -> None:
        self.optimizer = self._make_two_group_optimizer()
        self.scheduler = make_scheduler(self.cfg, self.optimizer, self.ctx.total_steps)

    @property
    def fb_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of the feedback net (the same object; its second param group)."""
        return self.optimizer

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"feedback": self.feedback}

    # -- the step ------------------------------------------------------------------------
    def _pairs(self, x: Tensor, y: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor], Tensor]:
        """Forward logits, forward activities [a_0..a_{L-1}], feedback [b_0..b_{L-1}], target."""
        net = self.net
        outs = net.forward_detached(x)
        logits = self.mask_logits(net.readout())
        acts = [x.flatten(1) if not any(la.is_conv for la in net.layers) else x]
        acts += [net.rate(h) for h in outs[:-1]]
        target = self._eye[y] if self.form == "eq2" else self._eye
        fbs = self.feedback(target)
        return logits, acts, fbs, target

    def local_loss(
        self, a: Tensor, b: Tensor, y: Tensor, y_onehot: Tensor, rows: Tensor | None = None
    ) -> Tensor:
        """ℓ(a, b) of the configured form (see the module docstring)."""
        o = self.opts
        if o.center:
            # Spike rates are non-negative: without a baseline the only way to drive the
            # off-class similarities to 0 is silence. Centring makes them signed.
            a = a.flatten(1)
            b = b.flatten(1)
            a = a - a.mean(0, keepdim=True)
            b = b - b.mean(0, keepdim=True)
        if self.form == "mlp":
            return loss_mlp(a, b, y_onehot, o.loss_scale, rows)
        if self.form == "cnn":
            return loss_cnn(a, b, y_onehot, o.loss_scale, o.ssl_scale)
        return loss_eq2(a, b, o.loss_scale)

    def train_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        self.net.train()
        self.feedback.train()
        o = self.opts
        logits, acts, fbs, _ = self._pairs(x, y)
        y_onehot = self._eye[y]
        rows = None
        if o.flooding > 0:
            m = flood_mask(logits, y, o.flooding)
            if self.form == "mlp" and not o.center:
                rows = m  # masked inside the loss, on N x C instead of N x d
            else:
                acts = [a * m.view(-1, *([1] * (a.dim() - 1))) for a in acts]
        ce = F.cross_entropy(logits, y)
        # One loss, one backward, as in the public code: a_l carries U_l's graph and b_l
        # V_{l+1}'s, and every layer input is detached, so each weight gets only the
        # gradient of its own pair's loss (the pair (x, b_0) reaches only V_1).
        if self.form == "mlp" and not o.center:
            local = loss_mlp_pairs(acts, fbs, y_onehot, o.loss_scale, rows)
        else:
            local = torch.stack([self.local_loss(a, b, y, y_onehot, rows) for a, b in zip(acts, fbs)])
        warm = min(1.0, (self.step + 1) / o.warmup) if o.warmup else 1.0
        loss = ce + local.sum()
        if warm != 1.0:
            loss = loss * warm
        clip_fb = o.clip_feedback if o.clip_feedback is not None else self.cfg.clip
        self.apply_update(loss, optimizer=self.optimizer, clip=self.cfg.clip,
                          params=self._fwd_params, extra=[(self.optimizer, clip_fb, self._fb_params)])
        with torch.no_grad():
            for k, t in enumerate(local.tolist()):
                self._run_loss[k] += t
            self._run_ce += float(ce)
            self._run_n += 1
            # The alignment costs a normalisation of every activity: sample every 20th step.
            if self.step % ALIGN_EVERY == 0:
                per_class = self.form != "eq2"
                for k in range(len(acts)):
                    self._run_align[k] += float(alignment(acts[k], fbs[k], y, per_class))
                self._run_align_n += 1
        return {"loss": float(ce.detach()), "acc": accuracy(logits.detach(), y),
                "local_loss": float(local.detach().sum())}

    # -- metrics -------------------------------------------------------------------------
    def _reset_running(self) -> None:
        n = len(self.net.layers)
        self._run_loss = [0.0] * n
        self._run_align = [0.0] * n
        self._run_ce = 0.0
        self._run_n = 0
        self._run_align_n = 0

    def epoch_metrics(self) -> dict[str, float]:
        """Running means over the epoch's steps, named by the forward layer each loss trains.

        ``layer<k>/local_loss`` and ``layer<k>/alignment`` belong to the pair (a_{k+1}, b_{k+1})
        that trains hidden layer k; the output layer's ``local_loss`` is its cross-entropy.
        ``input/*`` is the pair (x, b_0), which trains only the bottom feedback layer.
        """
        n = self._run_n
        na = self._run_align_n
        nan = math.nan
        out: dict[str, float] = {}
        n_layers = len(self.net.layers)
        out["input/local_loss"] = self._run_loss[0] / n if n else nan
        out["input/alignment"] = self._run_align[0] / na if na else nan
        for k in range(n_layers - 1):
            out[f"layer{k}/local_loss"] = self._run_loss[k + 1] / n if n else nan
            out[f"layer{k}/alignment"] = self._run_align[k + 1] / na if na else nan
        out[f"layer{n_layers - 1}/local_loss"] = self._run_ce / n if n else nan
        self._reset_running()
        return out

    def feedback_prototypes(self) -> list[Tensor]:
        """The current class prototypes [b_0, ..., b_{L-1}] (rows = classes), no gradient."""
        with torch.no_grad():
            return [b.detach() for b in self.feedback(torch.eye(self.n_classes))]


# The autoencoder variant registers itself as "ccl_ae" on import.
from bioplaus.rules import ccl_ae as _ccl_ae  # noqa: E402, F401
