"""Convolutional autoencoder trained by counter-current learning (rule ``ccl_ae``), or by backprop.

The public code's "legacy" autoencoder, scaled down. Forward net (encoder then decoder)::

    a_k = f(BN(E_k * sg(a_{k-1})))            stride-2 conv, k = 1..K, a_0 = x
    r_k = f(BN(D_k * up(sg(r_{k+1}))))        nearest upsampling then conv, r_{K+1} = a_K
    x̂   = D_1 * up(sg(r_2))                   linear output: the reconstruction

Feedback net: the mirror path, from the target image (here the input itself)::

    c_2 = f(BN(D'_1 * t)),  c_{k+1} = f(BN(D'_k * sg(c_k)))      stride-2 convs, t = x
    d_{K-1} = f(BN(E'_K * up(sg(c_{K+1})))), ...,  d_0 = E'_1 * up(sg(d_1))   (linear)

so every forward tensor has a feedback partner of the same shape: (x, d_0), (a_k, d_k),
(a_K, c_{K+1}), (r_k, c_k), (x̂, t). Local loss per pair, H the pair's height::

    ℓ = s·H·mean((A - B)²) + s_D·H·mean((Â - B̂)²)     Â: each channel map centred, unit L2
    end pairs (x, d_0) and (x̂, t): s·H·mean((A - B)²) only

``method = "bp"`` trains the same forward net end to end on mean((x̂ - x)²) instead, so the
two are compared on one architecture. Evaluation: reconstruction MSE of the forward net.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bioplaus.config import bounded, check_choice
from bioplaus.errors import ConfigError
from bioplaus.metrics import Metric
from bioplaus.neurons.rate import activation as make_activation
from bioplaus.registry import register_rule
from bioplaus.rules.base import LearningRule, RuleContext
from bioplaus.training.optim import make_optimizer, make_scheduler


@dataclass
class CCLAEOptions:
    """Options of the autoencoder rule (keys of ``[rule]``)."""

    method: str = "ccl"  # ccl | bp
    loss_scale: float = bounded(1.0, gt=0)  # s
    align_scale: float = bounded(1.0, ge=0)  # s_D: the normalised-map term
    batchnorm: bool = True
    grad_centralization: bool = True
    warmup: int = bounded(100, ge=0)
    lr_feedback: float | None = bounded(None, gt=0)
    momentum_feedback: float | None = bounded(None, ge=0, lt=1)
    clip_feedback: float | None = bounded(None, ge=0)
    small_init: float = bounded(0.001)  # decoder forward and encoder feedback weights scaled by this


def _block(c_in: int, c_out: int, stride: int, bn: bool) -> nn.ModuleDict:
    d = nn.ModuleDict({"conv": nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=True)})
    if bn:
        d["bn"] = nn.BatchNorm2d(c_out)
    return d


def _run(block: nn.ModuleDict, x: Tensor, act: nn.Module | None, size: tuple[int, int] | None = None) -> Tensor:
    x = x.detach()
    if size is not None and tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="nearest")
    h = block["conv"](x)
    if act is None:
        return h
    if "bn" in block:
        h = block["bn"](h)
    return act(h)


class ConvAE(nn.Module):
    """Encoder of stride-2 convs + mirrored decoder; ``forward`` returns every activity."""

    def __init__(self, channels: list[int], in_shape: tuple[int, int, int], act: str, bn: bool) -> None:
        super().__init__()
        c0, h, w = in_shape
        chans = [c0, *channels]
        self.sizes = [(h, w)]
        for _ in channels:
            h, w = (h + 1) // 2, (w + 1) // 2
            self.sizes.append((h, w))
        self.chans = chans
        self.act = make_activation(act)
        k = len(channels)
        self.enc = nn.ModuleList([_block(chans[i], chans[i + 1], 2, bn) for i in range(k)])
        # dec[i] maps chans[i+1] -> chans[i] at size sizes[i]; dec[0] is the linear output.
        self.dec = nn.ModuleList([_block(chans[i + 1], chans[i], 1, bn and i > 0) for i in range(k)])

    def forward(self, x: Tensor) -> list[Tensor]:
        """[x, a_1, .., a_K, r_K, .., r_2, x̂], every layer on the detached one below."""
        outs = [x]
        h = x
        for blk in self.enc:
            h = _run(blk, h, self.act)
            outs.append(h)
        for i in range(len(self.dec) - 1, -1, -1):
            h = _run(self.dec[i], h, self.act if i > 0 else None, self.sizes[i])
            outs.append(h)
        return outs

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.forward(x)[-1]


class ConvAEFeedback(nn.Module):
    """The mirror path from the target image (see the module docstring)."""

    def __init__(self, fwd: ConvAE, bn: bool) -> None:
        super().__init__()
        chans, self.sizes = fwd.chans, fwd.sizes
        self.act = fwd.act
        k = len(chans) - 1
        # dec_fb[i] mirrors dec[i]: chans[i] -> chans[i+1], stride 2.
        self.dec_fb = nn.ModuleList([_block(chans[i], chans[i + 1], 2, bn) for i in range(k)])
        # enc_fb[i] mirrors enc[i]: chans[i+1] -> chans[i] at sizes[i]; enc_fb[0] linear.
        self.enc_fb = nn.ModuleList([_block(chans[i + 1], chans[i], 1, bn and i > 0) for i in range(k)])

    def forward(self, t: Tensor) -> list[Tensor]:
        """Feedback partners in the order of ``ConvAE.forward``: [d_0, .., d_{K-1}, c_{K+1}, .., c_2, t]."""
        cs = []
        h = t
        for blk in self.dec_fb:
            h = _run(blk, h, self.act)
            cs.append(h)  # c_2 .. c_{K+1}
        ds = []
        for i in range(len(self.enc_fb) - 1, -1, -1):
            h = _run(self.enc_fb[i], h, self.act if i > 0 else None, self.sizes[i])
            ds.append(h)  # d_{K-1} .. d_0
        return ds[::-1] + cs[::-1] + [t]


def _norm_maps(x: Tensor) -> Tensor:
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return x / (x.norm(dim=(2, 3), keepdim=True) + 1e-8)


def ae_pair_loss(a: Tensor, b: Tensor, scale: float, align: float, end: bool) -> Tensor:
    """s·H·mean((A-B)²) (+ s_D·H·mean((Â-B̂)²) unless an end pair)."""
    h = a.shape[2]
    loss = F.mse_loss(a, b) * h * scale
    if not end:
        loss = loss + F.mse_loss(_norm_maps(a), _norm_maps(b)) * h * align
    return loss


def _orthogonal_conv_(w: Tensor) -> None:
    with torch.no_grad():
        if w.shape[0] >= w.shape[1]:
            nn.init.orthogonal_(w)
        else:
            t = w.transpose(0, 1).contiguous()
            nn.init.orthogonal_(t)
            w.copy_(t.transpose(0, 1))


@register_rule("ccl_ae")
@final
class CCLAutoencoder(LearningRule):
    """Counter-current (or backprop) training of a conv autoencoder; evaluated by test MSE.

    Builds its own encoder/decoder from ``[network] channels`` and ``activation``; no
    classifier is built.
    """

    needs = frozenset({"static", "differentiable"})
    Options = CCLAEOptions

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        """A tiny conv autoencoder (bioplaus.conformance): two conv blocks on digits."""
        return {"network": {"arch": "cnn", "channels": [4, 8], "activation": "relu"},
                "rule": {"lr": 0.05, "momentum": 0.9, "clip": 0.5}}

    @classmethod
    def check_options(cls, o: Any, where: str) -> None:
        check_choice(o.method, ("ccl", "bp"), f"{where}.method")

    metrics = (
        Metric("loss", "min", panel="loss", progress=True, summary=True),
        Metric("mse", "min", panel="mse", summary=True, headline=True, description="reconstruction MSE"),
        Metric("local_loss", "min", panel="loss"),
    )
    epoch_metric_families = (Metric("layer*/local_loss", "min"),)

    def build_model(self, ctx: RuleContext) -> nn.Module:
        """The forward conv autoencoder, from ``[network] channels`` and ``activation``."""
        ncfg = ctx.network
        if ncfg is None or not ncfg.channels:
            raise ConfigError("network.channels: the autoencoder needs conv widths, e.g. [32, 64, 128]")
        shape = tuple(ctx.input_shape)
        if len(shape) != 3:
            raise ConfigError(f"data.dataset: the autoencoder needs images (C, H, W), got {shape}")
        torch.manual_seed(ctx.seed)
        return ConvAE(list(ncfg.channels), shape, ncfg.activation, self.opts.batchnorm)

    def protected_layers(self) -> list[Any]:
        return []  # conv blocks without layer state: nothing for HLOP & co. to act on

    def probe_forward(self, x: Tensor) -> None:
        return None

    def setup(self, net: Any, ctx: RuleContext) -> None:
        self.net = self.ae = net
        self.ctx = ctx
        o, c = self.opts, self.cfg
        self.centralize = o.grad_centralization
        self.ae_fb = ConvAEFeedback(self.ae, o.batchnorm)
        for m in list(self.ae.modules()) + list(self.ae_fb.modules()):
            if isinstance(m, nn.Conv2d):
                _orthogonal_conv_(m.weight)
                nn.init.zeros_(m.bias)
        if o.method == "ccl":
            with torch.no_grad():
                # The public code starts the decoder (forward) and the encoder mirror (feedback)
                # almost silent, and the two outermost of them at zero.
                for blk in self.ae.dec:
                    blk["conv"].weight.mul_(o.small_init)
                for blk in self.ae_fb.enc_fb:
                    blk["conv"].weight.mul_(o.small_init)
                self.ae.dec[0]["conv"].weight.zero_()
                self.ae_fb.enc_fb[0]["conv"].weight.zero_()
        else:
            with torch.no_grad():
                # Backprop: only the output conv starts at zero (x̂ = 0, as for CCL); scaling
                # the inner decoder down as well would starve the encoder of gradient.
                self.ae.dec[0]["conv"].weight.zero_()
        self.optimizer = make_optimizer(c, list(self.ae.parameters()))
        self.scheduler = make_scheduler(c, self.optimizer, ctx.total_steps)
        self.fb_optimizer = make_optimizer(
            c,
            list(self.ae_fb.parameters()),
            lr=o.lr_feedback if o.lr_feedback is not None else c.lr,
            momentum=o.momentum_feedback if o.momentum_feedback is not None else c.momentum,
        )
        # backprop never steps the feedback optimiser, so it gets no schedule either
        self.fb_scheduler = (
            make_scheduler(c, self.fb_optimizer, ctx.total_steps) if o.method == "ccl" else None
        )
        self._sum = [0.0] * (2 * len(ctx.network.channels))
        self._n = 0

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer] + ([self.fb_optimizer] if self.opts.method == "ccl" else [])

    def modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"autoencoder": self.ae}
        if self.opts.method == "ccl":
            mods["feedback"] = self.ae_fb
        return mods

    def after_step(self) -> None:
        super().after_step()
        if self.fb_scheduler is not None:
            self.fb_scheduler.step()

    def train_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        o = self.opts
        self.ae.train()
        self.ae_fb.train()
        warm = min(1.0, (self.step + 1) / o.warmup) if o.warmup else 1.0
        if o.method == "bp":
            rec = self._bp_forward(x)
            loss = F.mse_loss(rec, x)
            self.apply_update(loss * warm)
            return {"loss": float(loss.detach()), "mse": float(loss.detach())}
        acts = self.ae(x)
        sigs = self.ae_fb(x)
        n = len(acts)
        # One summed loss, one backward (the public code): inputs are detached in both nets,
        # so each weight gets the gradient of its own pair only.
        terms = [
            ae_pair_loss(a, b, o.loss_scale, o.align_scale, end=k in (0, n - 1))
            for k, (a, b) in enumerate(zip(acts, sigs))
        ]
        clip_fb = o.clip_feedback if o.clip_feedback is not None else self.cfg.clip
        self.apply_update(sum(terms) * warm, optimizer=self.optimizer, clip=self.cfg.clip,
                          extra=[(self.fb_optimizer, clip_fb, None)])
        with torch.no_grad():
            for k, t in enumerate(terms[1:]):
                self._sum[k] += float(t)
            self._n += 1
            mse = float(F.mse_loss(acts[-1], x))
        return {"loss": mse, "mse": mse, "local_loss": float(sum(terms).detach())}

    def _bp_forward(self, x: Tensor) -> Tensor:
        h = x
        ae = self.ae
        for blk in ae.enc:
            h = blk["conv"](h)
            h = ae.act(blk["bn"](h) if "bn" in blk else h)
        for i in range(len(ae.dec) - 1, -1, -1):
            blk = ae.dec[i]
            h = F.interpolate(h, size=ae.sizes[i], mode="nearest")
            h = blk["conv"](h)
            if i > 0:
                h = ae.act(blk["bn"](h) if "bn" in blk else h)
        return h

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """The reconstruction of ``x`` (this rule has no logits)."""
        was = self.ae.training
        self.ae.eval()
        out = self.ae.reconstruct(x)
        self.ae.train(was)
        return out

    @torch.no_grad()
    def evaluate(self, loader: Any) -> dict[str, float]:
        """Reconstruction MSE of the forward net, mean over pixels and samples."""
        tot, n = 0.0, 0
        for x, _ in loader:
            rec = self.predict(x)
            tot += float(F.mse_loss(rec, x, reduction="sum"))
            n += x.numel()
        mse = tot / max(n, 1)
        return {"loss": mse, "mse": mse}

    def epoch_metrics(self) -> dict[str, float]:
        """Running mean of each forward pair's local loss: ``layer<k>/local_loss``, k = pair - 1."""
        n = self._n
        out = {f"layer{k}/local_loss": (s / n if n else math.nan) for k, s in enumerate(self._sum)}
        self._sum = [0.0] * len(self._sum)
        self._n = 0
        return out
