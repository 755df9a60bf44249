"""NoProp's maths and modules: the noise schedule, the denoising blocks, the label embedding.

Conventions (Li, Teh & Pascanu 2025, arXiv 2503.24322): z_0 ~ N(0, I) is noise and z_T
is close to the label embedding u_y. The forward (noising) process runs from T down to 0,
q(z_{t-1} | z_t) = N(√α_{t-1} z_t, (1 − α_{t-1}) I), so that

    q(z_t | y) = N(√ᾱ_t u_y, (1 − ᾱ_t) I),    ᾱ_t = Π_{s=t..T} α_s,    SNR(t) = ᾱ_t / (1 − ᾱ_t),

and ᾱ_t *rises* with t (block T sees the cleanest input). The paper says "cosine schedule"
without a formula; ours, with τ_t = 1 − t/T the noise time and a small offset s (0.008,
as in Nichol & Dhariwal's cosine schedule):

    ᾱ_t = cos²( (π/2) · (τ_t + s) / (1 + 2s) ),    t = 0..T.

It is strictly increasing in t, symmetric (ᾱ_0 = 1 − ᾱ_T = sin²(π s / (2 + 4s)) ≈ 1.6e-4),
so z_0 is almost pure noise and SNR(T) is large but finite; α_{t-1} = ᾱ_{t-1} / ᾱ_t ∈ (0, 1).
Block t's weight in the loss is (T/2)·η·(SNR(t) − SNR(t−1)) > 0 for every t.

Inference is the posterior q(z_t | z_{t-1}, y) with u_y replaced by the block's guess:

    z_t = a_t û_t(z_{t-1}, x) + b_t z_{t-1} + √c_t ε,
    a_t = √ᾱ_t (1 − α_{t-1}) / (1 − ᾱ_{t-1}),
    b_t = √α_{t-1} (1 − ᾱ_t) / (1 − ᾱ_{t-1}),
    c_t = (1 − ᾱ_t)(1 − α_{t-1}) / (1 − ᾱ_{t-1}).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, final

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bioplaus.config import RuleConfig
from bioplaus.device import generator as make_generator
from bioplaus.nets import LayerState
from bioplaus.rules.base import LearningRule
from bioplaus.training.hooks import Plugin, PluginList
from bioplaus.training.optim import make_optimizer
from bioplaus.training.task import RuleContext

# ----------------------------------------------------------------------------- schedule


def cosine_alpha_bar(T: int, s: float = 0.008) -> Tensor:
    """ᾱ_0..ᾱ_T (float64, length T + 1) of the cosine schedule in the module docstring."""
    t = torch.arange(T + 1, dtype=torch.float64)
    tau = 1.0 - t / T
    return torch.cos(0.5 * math.pi * (tau + s) / (1.0 + 2.0 * s)) ** 2


def snr(alpha_bar: Tensor) -> Tensor:
    """SNR = ᾱ / (1 − ᾱ)."""
    return alpha_bar / (1.0 - alpha_bar)


def snr_weights(alpha_bar: Tensor, eta: float) -> Tensor:
    """The L2 weight of blocks t = 1..T: (T/2)·η·(SNR(t) − SNR(t−1)) (length T)."""
    T = alpha_bar.numel() - 1
    r = snr(alpha_bar)
    return 0.5 * T * eta * (r[1:] - r[:-1])


def inference_coefficients(alpha_bar: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(a, b, c) of the update z_t = a_t û_t + b_t z_{t-1} + √c_t ε, index 0 = block 1."""
    ab_t, ab_prev = alpha_bar[1:], alpha_bar[:-1]
    alpha_prev = ab_prev / ab_t  # α_{t-1} = ᾱ_{t-1} / ᾱ_t
    a = ab_t.sqrt() * (1 - alpha_prev) / (1 - ab_prev)
    b = alpha_prev.sqrt() * (1 - ab_t) / (1 - ab_prev)
    c = (1 - ab_t) * (1 - alpha_prev) / (1 - ab_prev)
    return a, b, c


def kl_to_standard(u: Tensor, alpha_bar0: float) -> Tensor:
    """KL(q(z_0|y) ‖ N(0, I)) per sample, q(z_0|y) = N(√ᾱ_0 u, (1 − ᾱ_0) I):
    ½ (ᾱ_0 ‖u‖² + d (1 − ᾱ_0) − d − d log(1 − ᾱ_0))."""
    d = u.shape[-1]
    a = float(alpha_bar0)
    return 0.5 * (a * (u * u).sum(-1) - d * a - d * math.log1p(-a))


# ----------------------------------------------------------------------------- modules


class SeededDropout(nn.Module):
    """Dropout whose mask comes from a generator the owner sets (``gen``), not the global RNG.

    A block's masks then depend only on its own seed, so that a block trained in another
    process (or in another order) draws exactly the same masks.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)
        self.gen: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p <= 0:
            return x
        keep = torch.rand(x.shape, generator=self.gen) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class LIFRate(nn.Module):
    """A population of a temporal neuron model (LIF by default) driven by a constant current
    for T steps, read out by its spike rate."""

    def __init__(self, model: Any, params: Any, steps: int) -> None:
        super().__init__()
        self.lif = model.population(params)
        self.steps = int(steps)

    def forward(self, cur: Tensor) -> Tensor:
        spikes, _ = self.lif(cur.unsqueeze(0).expand(self.steps, *cur.shape).contiguous())
        return spikes.mean(0)


class _PluginLayer(nn.Module):
    """What plugins read from a layer besides ``state``: its ``name`` and ``weight``."""

    synapse: nn.Module
    _name: str

    @property
    def name(self) -> str:
        return self._name

    @property
    def weight(self) -> Tensor:
        return self.synapse.weight


class Dense(_PluginLayer):
    """Linear, then BatchNorm and ReLU or LIF rate if asked: one dense layer a plugin can act on.

    Exposes what plugins read from a layer (``weight``, ``name``, ``is_conv``,
    ``is_output``, ``temporal`` and ``state`` with the presynaptic ``input`` and the
    synaptic ``current`` of the last forward pass).
    """

    is_conv = False
    temporal = False

    def __init__(
        self, n_in: int, n_out: int, name: str, bn: bool = True, act: nn.Module | None = None, is_output: bool = False
    ) -> None:
        super().__init__()
        self.is_output = is_output
        self.synapse = nn.Linear(n_in, n_out)
        self.bn = nn.BatchNorm1d(n_out) if bn else None
        self.act = act
        self._name = name
        self.state = LayerState()

    def forward(self, x: Tensor) -> Tensor:
        cur = self.synapse(x)
        h = self.bn(cur) if self.bn is not None else cur
        out = self.act(h) if self.act is not None else h
        self.state = LayerState(input=x, current=cur, out=out, y=out)
        return out


class Conv(_PluginLayer):
    """A 3x3 conv (padding 1) a plugin can act on: ``synapse``, ``state.input``, ``is_conv``."""

    is_conv = True
    is_output = False
    temporal = False

    def __init__(self, c_in: int, c_out: int, name: str) -> None:
        super().__init__()
        self.synapse = nn.Conv2d(c_in, c_out, 3, padding=1)
        self._name = name
        self.state = LayerState()

    def forward(self, x: Tensor) -> Tensor:
        cur = self.synapse(x)
        self.state = LayerState(input=x, current=cur, out=cur, y=cur)
        return cur


def _window_corners(h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four strided views (top-left, top-right, bottom-left, bottom-right) of h's 2x2
    windows; odd trailing rows or columns dropped."""
    H, W = h.shape[-2] // 2 * 2, h.shape[-1] // 2 * 2
    a, b, c, d = (h[..., i:H:2, j:W:2] for i in (0, 1) for j in (0, 1))
    return a, b, c, d


class _ReluMaxPool2(torch.autograd.Function):
    """max_pool2d(relu(h), 2) with the same values and gradients, about twice as fast.

    torch's NCHW max pooling on the CPU scans every window serially (~4 ms for a
    128x8x28x28 map, a fifth of a NoProp training step); the maximum of the four strided
    views is a few vector operations. The window's argmax is the one ``max_pool2d`` picks
    (the first maximum in row-major order), so torch's own pooling backward routes the
    gradient, masked where the maximum is <= 0 (``relu``'s gradient). Odd trailing rows or
    columns are dropped, as by ``max_pool2d``.
    """

    @staticmethod
    def forward(ctx: Any, h: Tensor) -> Tensor:
        Hh, Wh, Wf = h.shape[-2] // 2, h.shape[-1] // 2, h.shape[-1]
        a, b, c, d = _window_corners(h)
        top, bottom = torch.maximum(a, b), torch.maximum(c, d)
        m = torch.maximum(top, bottom)
        # offset of the first maximum inside its window: 0, 1, Wf or Wf + 1
        off = torch.where(bottom > top, (d > c).to(torch.int32) + Wf, (b > a).to(torch.int32))
        base = (torch.arange(Hh) * (2 * Wf))[:, None] + torch.arange(0, 2 * Wh, 2)[None, :]
        idx = base + off  # the flat input index per output, as max_pool2d_with_indices gives
        ctx.save_for_backward(h, idx, m)
        return m.clamp_min(0.0)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:
        h, idx, m = ctx.saved_tensors
        g = g.masked_fill(m <= 0, 0.0)
        return torch.ops.aten.max_pool2d_with_indices_backward(g, h, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)


def relu_max_pool2(h: Tensor) -> Tensor:
    """``F.max_pool2d(F.relu(h), 2)``, the same numbers (forward and gradient), faster."""
    if h.device.type != "cpu" or h.dim() != 4:
        return F.max_pool2d(F.relu(h), 2)
    if not (torch.is_grad_enabled() and h.requires_grad):  # inference: no argmax needed
        a, b, c, d = _window_corners(h)
        return torch.maximum(torch.maximum(a, b), torch.maximum(c, d)).clamp_min(0.0)
    return _ReluMaxPool2.apply(h)


class ImagePath(nn.Module):
    """conv-ReLU-maxpool-dropout → conv-ReLU-dropout → conv-ReLU-maxpool-dropout → flatten.

    3x3 kernels, padding 1; the paper gives the layout but not the widths.
    """

    def __init__(self, in_shape: tuple[int, ...], channels: list[int], dropout: float, name: str = "image") -> None:
        super().__init__()
        c_in, h, w = (in_shape if len(in_shape) == 3 else (1, *in_shape)) if len(in_shape) >= 2 else (1, 1, in_shape[0])
        self.in_shape = (c_in, h, w)
        c1, c2, c3 = channels
        self.conv1 = Conv(c_in, c1, f"{name}.conv1")
        self.conv2 = Conv(c1, c2, f"{name}.conv2")
        self.conv3 = Conv(c2, c3, f"{name}.conv3")
        self.drops = nn.ModuleList(SeededDropout(dropout) for _ in range(3))
        self.n_out = c3 * (h // 2 // 2) * (w // 2 // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], *self.in_shape)
        h = self.drops[0](relu_max_pool2(self.conv1(x)))
        h = self.drops[1](F.relu(self.conv2(h)))
        h = self.drops[2](relu_max_pool2(self.conv3(h)))
        return h.flatten(1)


class Block(nn.Module):
    """One NoProp block û_t(z_{t-1}, x) (the paper's Figure 6 layout).

    image path → FC(width)-BN;  z path: FC(width)-BN-ReLU, then a residual pair
    h + FC(width)(ReLU(FC(width) h));  fused: concat → FC(width)-BN-ReLU →
    FC(width/2)-BN-ReLU → FC(n_out). With ``time_dim`` > 0 (CT, FM) the features of t are
    added to the z path. ``spiking`` (neuron model, parameters, steps; `spiking_of`) turns the
    dense ReLU layers into spiking layers read out by their rate.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        z_dim: int,
        n_out: int,
        channels: list[int],
        width: int,
        dropout: float,
        name: str = "block",
        time_dim: int = 0,
        spiking: tuple[Any, Any, int] | None = None,
    ) -> None:
        super().__init__()
        self.block_name = name

        def act() -> nn.Module:
            return LIFRate(*spiking) if spiking is not None else nn.ReLU()

        self.image = ImagePath(in_shape, channels, dropout, f"{name}.image")
        self.img_fc = Dense(self.image.n_out, width, f"{name}.img_fc", act=None)
        self.z_fc = Dense(z_dim, width, f"{name}.z_fc", act=act())
        self.res_a = Dense(width, width, f"{name}.res_a", bn=False, act=act())
        self.res_b = Dense(width, width, f"{name}.res_b", bn=False, act=None)
        self.time_fc = nn.Linear(time_dim, width) if time_dim else None
        self.fuse1 = Dense(2 * width, width, f"{name}.fuse1", act=act())
        self.fuse2 = Dense(width, width // 2, f"{name}.fuse2", act=act())
        self.out = Dense(width // 2, n_out, f"{name}.out", bn=False, act=None, is_output=True)

    def plastic_layers(self) -> list[nn.Module]:
        """The layers plugins may act on, in forward order (the last one is the output)."""
        im = self.image
        return [im.conv1, im.conv2, im.conv3, self.img_fc, self.z_fc, self.res_a, self.res_b, self.fuse1, self.fuse2, self.out]

    def set_generator(self, gen: torch.Generator | None) -> None:
        for d in self.image.drops:
            d.gen = gen

    def forward(self, z: Tensor, x: Tensor, t_feat: Tensor | None = None) -> Tensor:
        fx = self.img_fc(self.image(x))
        hz = self.z_fc(z)
        if self.time_fc is not None and t_feat is not None:
            hz = hz + self.time_fc(t_feat)
        hz = hz + self.res_b(self.res_a(hz))
        h = self.fuse2(self.fuse1(torch.cat([fx, hz], dim=1)))
        return self.out(h)


def time_features(t: Tensor, dim: int = 16) -> Tensor:
    """Sinusoidal features of t ∈ [0, 1] (shape [B] → [B, dim])."""
    k = torch.arange(dim // 2, dtype=t.dtype)
    freq = torch.exp(k * (math.log(1000.0) / max(dim // 2 - 1, 1)))
    ang = t[:, None] * freq[None, :]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)


class LabelEmbedding(nn.Module):
    """W_embed (classes × d): one-hot (fixed identity), learned (orthogonal init) or prototype.

    ``prototype``: d = image size, each row initialised from the training image of its
    class with the smallest median distance to the others (`init_prototypes`).
    """

    def __init__(self, kind: str, n_classes: int, dim: int, seed: int = 0) -> None:
        super().__init__()
        self.kind = kind
        if kind == "onehot":
            self.register_buffer("W", torch.eye(n_classes))
        else:
            w = torch.empty(n_classes, dim)
            if kind == "learned":
                gen = make_generator(seed + 4242)
                # orthogonal rows when classes <= dim (QR of a Gaussian), else orthogonal columns
                a = torch.randn(max(n_classes, dim), min(n_classes, dim), generator=gen)
                q, r = torch.linalg.qr(a)
                q = q * torch.sign(torch.diagonal(r))[None, :]
                w.copy_(q if n_classes >= dim else q.T)
            else:
                w.zero_()
            self.W = nn.Parameter(w)

    @property
    def learnable(self) -> bool:
        return isinstance(self.W, nn.Parameter)

    @property
    def dim(self) -> int:
        return int(self.W.shape[1])

    def forward(self, y: Tensor) -> Tensor:
        return self.W[y]

    @torch.no_grad()
    def init_prototypes(self, x: Tensor, y: Tensor, cap: int = 2000, seed: int = 0) -> None:
        """Each row ← the image of its class with the smallest median distance to its class.

        At most ``cap`` images per class (a seeded subset) take part, so that the pairwise
        distances stay small on CPU.
        """
        gen = make_generator(seed + 99)
        x = x.reshape(len(x), -1).float()
        for c in range(self.W.shape[0]):
            idx = torch.nonzero(y == c).flatten()
            if len(idx) == 0:
                continue
            if len(idx) > cap:
                idx = idx[torch.randperm(len(idx), generator=gen)[:cap]]
            xc = x[idx]
            med = torch.cdist(xc, xc).median(dim=1).values
            self.W[c] = xc[int(med.argmin())]


class MonotoneGamma(nn.Module):
    """γ(t), decreasing on [0, 1] from γ_max to γ_min: SNR(t) = exp(−γ(t)) rises with t.

    γ(t) = γ_max − (γ_max − γ_min) · (φ(t) − φ(0)) / (φ(1) − φ(0)), with φ a small network
    with positive weights (softplus of free parameters) and sigmoid units, hence monotone.
    """

    def __init__(self, gamma_min: float = -9.0, gamma_max: float = 9.0, hidden: int = 32) -> None:
        super().__init__()
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)
        self.w1 = nn.Parameter(torch.randn(hidden) * 0.5)
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.w2 = nn.Parameter(torch.randn(hidden) * 0.5)
        self.lin = nn.Parameter(torch.tensor(1.0))

    def phi(self, t: Tensor) -> Tensor:
        h = torch.sigmoid(F.softplus(self.w1)[None, :] * (t[:, None] - 0.5) * 8 + self.b1[None, :])
        return F.softplus(self.lin) * t + (h * F.softplus(self.w2)[None, :]).sum(1)

    def forward(self, t: Tensor) -> Tensor:
        ends = self.phi(torch.tensor([0.0, 1.0], dtype=t.dtype))
        frac = (self.phi(t) - ends[0]) / (ends[1] - ends[0])
        return self.gamma_max - (self.gamma_max - self.gamma_min) * frac


def spiking_of(net: Any) -> Any:
    """(neuron model, its hidden-layer parameters, T) of a temporal ``[network]`` (the blocks'
    spike rates), else None: any temporal model drives the blocks' dense layers (LIF: the
    fused scan)."""
    if net is None:
        return None
    from bioplaus.neurons import neuron_model

    model = neuron_model(net.backend)
    if not model.temporal:
        return None
    return model, model.params_from(net, False), net.spiking.T


# ----------------------------------------------------------------------------- block units


def block_seed(seed: int, t: int) -> int:
    """The seed of block t's initialisation and generator (independent of the mode)."""
    return int(seed) * 1009 + 7 * int(t) + 17


def head_loss(model: Any, y: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """(CE(p_out(z_T)) with z_T ~ q(z_T|y), mean KL(q(z_0|y) ‖ N(0, I)))."""
    u = model.embed(y)
    ab_T, ab_0 = float(model.alpha_bar[-1]), float(model.alpha_bar[0])
    z_T = math.sqrt(ab_T) * u + math.sqrt(1 - ab_T) * torch.randn(u.shape, generator=gen)
    return F.cross_entropy(model.head(z_T), y), kl_to_standard(u, ab_0).mean()


def epoch_batches(loader: Any) -> list[tuple[Tensor, Tensor]] | Any:
    """The batches of one epoch in the loader's order, drawn once and replayable."""
    from neuro_data.loader import ArrayLoader

    if isinstance(loader, ArrayLoader):
        # The loader's stream is on the CPU (the same order on every device).
        perm = torch.randperm(loader.n, generator=loader.generator, device="cpu") if loader.shuffle else None
        if perm is not None and perm.device != loader.x.device:
            perm = perm.to(loader.x.device)

        class _Replay:
            def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
                return loader._batches(perm)

            def __len__(self) -> int:
                return len(loader)

        return _Replay()
    return list(loader)


_LAYER = re.compile(r"layer(\d+)")


class BlockRun:
    """What a block's plugins log, renamed into the whole model's terms and passed on.

    ``layer<i>`` (an index into the block's layers) becomes ``layer<offset + i>`` (its index
    in the rule's `protected_layers`, as the interleaved mode's plugins name it); a metric
    without a layer, ``a/b``, becomes ``a/block<t>/b``. ``sink`` is the run (in-process) or
    a list that a worker sends to the main process, which replays it (`replay`).
    """

    def __init__(self, t: int, offset: int, sink: Any) -> None:
        self.t, self.offset, self.sink = t, offset, sink

    def rename(self, name: str) -> str:
        if _LAYER.search(name):
            return _LAYER.sub(lambda m: f"layer{int(m.group(1)) + self.offset}", name, count=1)
        head, sep, tail = name.partition("/")
        return f"{head}/block{self.t}/{tail}" if sep else f"block{self.t}/{name}"

    def log(self, step: int | None = None, **values: float) -> None:
        out = {self.rename(k): v for k, v in values.items()}
        if isinstance(self.sink, list):
            self.sink.append(("log", step, out))
        elif self.sink is not None:
            self.sink.log(step, **out)

    def log_array(self, path: str, array: Any, **attrs: Any) -> None:
        if isinstance(self.sink, list):
            self.sink.append(("log_array", self.rename(path), (array, attrs)))
        elif self.sink is not None:
            self.sink.log_array(self.rename(path), array, **attrs)


def replay(run: Any, entries: list[tuple[str, Any, Any]]) -> None:
    """Write the logs a worker's `BlockRun` collected through ``run`` (None: drop them)."""
    if run is None:
        return
    for kind, key, val in entries:
        if kind == "log":
            run.log(key, **val)
        else:
            run.log_array(key, val[0], **val[1])


class BlockClassifier(nn.Module):
    """Block t as a classifier of x alone, for plugins that call ``rule.net(x)`` (EWC's Fisher,
    probes): its class logits on z_{t−1} = √ᾱ_{t−1}·ū, the label-free mean of q(z_{t−1}|y)
    with ū the mean class embedding (an input without its label)."""

    def __init__(self, block: nn.Module, model: Any, t: int) -> None:
        super().__init__()
        self.block = block
        self.embed_of = lambda: model.embed.W  # not a submodule: its parameters are the model's
        self.ab_prev = float(model.alpha_bar[t - 1])

    def forward(self, x: Tensor) -> Tensor:
        u = self.embed_of().mean(0, keepdim=True).expand(x.shape[0], -1)
        return self.block(math.sqrt(self.ab_prev) * u, x)


@final
class BlockUnit(LearningRule):
    """Block t of a DT model as a rule of its own: its generator, optimiser, loss and plugins.

    The same class trains a block in the main process and in a worker process, so that the
    modes draw the same numbers in the same order. Plugins bound to it (`bind_plugins`) see
    the block's layers only and run their hooks wherever the block trains.
    """

    name = "noprop_block"

    def __init__(self, cfg: RuleConfig, model: Any, t: int, seed: int) -> None:
        super().__init__(replace(cfg, options={}))  # the update's settings: optimiser, lr, clip
        self.model = model
        self.t = t
        self.block = model.blocks[t - 1]
        self.net = BlockClassifier(self.block, model, t)
        self.gen = make_generator(block_seed(seed, t) + 1)
        self.block.set_generator(self.gen)
        self.optimizer = make_optimizer(self.cfg, list(self.block.parameters()))
        self.weight = float(model.weights[t - 1])
        self.ab_prev = float(model.alpha_bar[t - 1])

    def loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(weighted L2, L2, logits) of block t on z_{t−1} ~ q(z_{t−1}|y)."""
        self.block.train()
        u = self.model.embed(y)
        eps = torch.randn(u.shape, generator=self.gen)
        z = math.sqrt(self.ab_prev) * u + math.sqrt(1 - self.ab_prev) * eps
        logits = self.block(z, x)
        l2 = ((self.model.u_hat(logits) - u) ** 2).sum(1).mean()
        return self.weight * l2, l2, logits

    def train_step(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """One update of the block alone on a batch, with its own plugins (`block_update`)."""
        l2, acc = block_update(self, x, y, self)
        return {"loss": l2, "acc": acc}

    # -- what plugins see ---------------------------------------------------------------
    def protected_layers(self) -> list[Any]:
        return self.block.plastic_layers()

    def reset_optimizer(self) -> None:
        self.optimizer = make_optimizer(self.cfg, list(self.block.parameters()))

    @property
    def active_classes(self) -> Tensor | None:
        """The task's classes: the model's (set by the rule here, by the pool in a worker)."""
        return getattr(getattr(self, "model", None), "active_classes", None)

    @active_classes.setter
    def active_classes(self, value: Tensor | None) -> None:
        if getattr(self, "model", None) is not None:
            self.model.active_classes = value

    def bind_plugins(self, plugins: Sequence[Plugin], ctx: RuleContext, offset: int, sink: Any) -> None:
        """Copies of ``plugins`` (not yet set up), set up on this block; their logs go through
        a `BlockRun` (``offset``: the block's first layer in the rule's `protected_layers`)."""
        self.ctx = replace(ctx, run=BlockRun(self.t, offset, sink))
        self.plugins = PluginList([copy.deepcopy(p) for p in plugins])
        for p in self.plugins:
            p.setup(self, self.ctx)


def block_update(unit: BlockUnit, x: Tensor, y: Tensor, learner: LearningRule,
                 head: Any = None) -> tuple[float, float]:
    """One update of block t on a batch; returns (its unweighted L2, its accuracy).

    L = w_t·L2_t, plus CE(p_out(z_T)) + KL when ``head`` (the NoProp rule) trains the shared
    p_out in the same backward (in-process modes). ``learner`` runs the update and its plugin
    hooks: the rule (interleaved: the run's plugins) or ``unit`` itself (block after block, in
    this process or in a worker: the block's own plugins, whose ``after_step`` follows).
    """
    wl2, l2, logits = unit.loss(x, y)
    loss, extra = wl2, None
    if head is not None:
        ce, kl = head_loss(unit.model, y, head.head_gen)
        loss = loss + ce + kl
        extra = [(head.optimizer, head.cfg.clip, None)]
        head.head_sum[0] += float(ce.detach())
        head.head_sum[1] += 1
    learner.apply_update(loss, optimizer=unit.optimizer, extra=extra)
    # Free the block's gradients now, not at its next step: only the block in training
    # holds gradients (DT's memory advantage; the numbers do not change).
    unit.optimizer.zero_grad(set_to_none=True)
    out = float(l2.detach()), float((logits.detach().argmax(1) == y).float().mean())
    if learner is unit:
        unit.step += 1
        unit.plugins.after_step(unit, unit.step, {"loss": out[0], "acc": out[1]})
    return out
