"""Exact orthogonal projection (GPM-style) and the helpers HLOP shares with it.

For each protected layer with presynaptic activity x (dim n) the plugin keeps an orthonormal
basis U (n x k) of the activity of the tasks learned so far, from the SVD of stored activity
(Saha et al. 2021, "Gradient projection memory"). While a new task is learned the weight
gradient of the layer is projected off that subspace,

    G <- G - (G U) Uᵀ        (G = ∂L/∂W viewed as [out, n]; conv: n = C·k·k patches)

which equals using the projected input (x - U Uᵀ x) in the update δ xᵀ. After a task, the
residual activity R = X - X U Uᵀ of that task (rows = samples, time steps, patches) gives
new basis vectors: its top eigenvectors, either a fixed number per task (``mode = "dims"``,
the same schedule as HLOP's lateral neurons, so the two subspaces are directly comparable)
or as many as GPM's energy criterion needs (``mode = "threshold"``):

    ||X U||² + Σ_{i<=m} λ_i  >=  threshold · ||X||²        (λ_i: eigenvalues of Rᵀ R)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bioplaus.config import bounded, check_choice
from bioplaus.device import generator as make_generator
from bioplaus.errors import ConfigError
from bioplaus.metrics import Metric
from bioplaus.plugins.base import Plugin, Rule, RuleContext, TaskInfo
from bioplaus.registry import register_plugin

if TYPE_CHECKING:
    from bioplaus.nets import Layer

# Optimisers whose step is not a fixed linear map of the gradient: element-wise scaling
# moves a projected gradient back into the protected subspace.
_ADAPTIVE = (
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.Adamax,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.Adagrad,
    torch.optim.Adadelta,
    torch.optim.RMSprop,
    torch.optim.Rprop,
)


# ----------------------------------------------------------------------------- helpers


def new_dims(
    task: int, first: list[int], per_task: list[int], decay_every: int, decay: int, min_new: int, pos: int
) -> int:
    """Subspace dimensions added for ``task`` at protected layer number ``pos``.

    k_0 = first[pos];  k_t = max(per_task[pos] - decay · floor(t / decay_every), min_new)
    (HLOP's PMNIST code: [80, 200, 100], then 70 per task, 20 fewer every 3 tasks).
    """
    pick = lambda v: v[min(pos, len(v) - 1)]  # noqa: E731 - a list shorter than the layers repeats its last value
    if task == 0:
        return int(pick(first))
    k = int(pick(per_task))
    if decay_every > 0:
        k -= decay * (task // decay_every)
    return max(k, int(min_new))


def protected_layers(net_layers: list[Any], layers: list[int], protect_output: bool, where: str) -> list[int]:
    """Indices into the rule's declared layers to protect (``layers`` empty: all, output as asked)."""
    n = len(net_layers)
    if n == 0:
        raise ConfigError(f"{where}: the rule declares no layers a plugin can act on")
    if layers:
        for i in layers:
            if not -n <= i < n:
                raise ConfigError(f"{where}.layers: layer {i} does not exist (the net has {n} layers)")
        return sorted({i % n for i in layers})
    return [i for i in range(n) if protect_output or not getattr(net_layers[i], "is_output", i == n - 1)]


def in_dim(layer: Layer) -> int:
    """Size n of one presynaptic vector: in_features, or C·k·k patches for a conv."""
    w = layer.weight
    return int(w[0].numel())


def presynaptic_rows(layer: Layer, activity: str = "spikes") -> Tensor:
    """The last forward's presynaptic activity of ``layer`` as rows ``[R, n]`` (detached).

    Spiking: one row per time step and sample (``activity = "spikes"``, the vectors that
    enter BPTT's weight gradient Σ_t δ_t s_tᵀ) or the time average (``"rate"``); a constant
    direct-encoded input gives B rows, its T copies adding nothing. Conv: unfolded patches.
    """
    x = layer.state.input
    if x is None:
        raise RuntimeError(f"{layer.name}: no forward pass recorded yet")
    x = x.detach()
    if layer.temporal:
        if activity == "rate":
            x = x.mean(0)
        elif x.stride(0) == 0:
            x = x[0]
        else:
            x = x.reshape(-1, *x.shape[2:])
    if layer.is_conv:
        s = layer.synapse
        cols = F.unfold(x, s.kernel_size, dilation=s.dilation, padding=s.padding, stride=s.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(len(x), -1)


@torch.no_grad()
def collect_activity(
    rule: Rule,
    loader: Any,
    layers: list[int],
    samples: int,
    activity: str = "spikes",
    max_rows: int = 0,
    generator: torch.Generator | None = None,
) -> dict[int, Tensor]:
    """Presynaptic rows of the rule's declared ``layers`` on the first ``samples`` samples."""
    net_layers = rule.protected_layers()
    rows: dict[int, list[Tensor]] = {i: [] for i in layers}
    seen = 0
    src = loader.subset(samples) if hasattr(loader, "subset") else loader
    for x, _ in src:
        rule.probe_forward(x)
        for i in layers:
            rows[i].append(presynaptic_rows(net_layers[i], activity))
        seen += len(x)
        if seen >= samples:
            break
    out = {}
    for i in layers:
        X = torch.cat(rows[i]) if rows[i] else torch.zeros(0, in_dim(net_layers[i]))
        if max_rows and len(X) > max_rows:
            X = X[torch.randperm(len(X), generator=generator)[:max_rows]]
        out[i] = X
    return out


def check_optimizers(rule: Rule, on_adaptive: str, where: str) -> bool:
    """True if the optimiser step must be projected (adaptive kinds, weight decay).

    ``on_adaptive = "refuse"`` raises instead: a projected gradient fed to Adam-like
    optimisers (per-element step sizes) or to weight decay (a step along W itself) leaves
    the protected subspace, and the old tasks would silently not be protected.
    """
    bad = []
    for opt in rule.optimizers():
        if isinstance(opt, _ADAPTIVE):
            bad.append(type(opt).__name__)
        elif any(g.get("weight_decay", 0.0) for g in opt.param_groups):
            bad.append(f"{type(opt).__name__} with weight_decay")
    if not bad:
        return False
    if on_adaptive == "refuse":
        raise ConfigError(
            f"{where}: the optimiser ({', '.join(bad)}) does not keep a projected gradient in "
            "the projected subspace, so old tasks would not be protected; use rule.optimizer = "
            f"'sgd' without weight decay, or set {where}.adaptive = 'project_step' to project "
            "each final optimiser step instead"
        )
    return True


def project_rows_(G: Tensor, basis: Tensor) -> Tensor:
    """G <- G - (G Bᵀ) B in place, B [k, n] (orthonormal rows, or HLOP's lateral weights H).

    Σ_r δ_r (x_r - BᵀB x_r)ᵀ = G (I - BᵀB): projecting the gradient is projecting the input.
    """
    if basis.shape[0] == 0:
        return G
    G.sub_((G @ basis.T) @ basis)
    return G


def principal_angles(A: Tensor, B: Tensor) -> Tensor:
    """Principal angles (degrees, ascending) between the row spaces of A [k1, n] and B [k2, n].

    cos θ_i = σ_i(Q_A Q_Bᵀ) with Q the orthonormalised rows.
    """
    if A.shape[0] == 0 or B.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    qa = torch.linalg.qr(A.double().T).Q
    qb = torch.linalg.qr(B.double().T).Q
    s = torch.linalg.svdvals(qa.T @ qb).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(s)).sort().values


def top_eigvecs(X: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top ``k`` eigenvectors (rows, [k, n]) and all eigenvalues of XᵀX (descending)."""
    C = X.double().T @ X.double()
    evals, evecs = torch.linalg.eigh(C)
    evals, evecs = evals.flip(0), evecs.flip(1)
    return evecs[:, :k].T.float().contiguous(), evals.clamp_min(0.0)


class StepProjector:
    """Projects the final optimiser step ΔW off each layer's subspace (after_update)."""

    def __init__(self) -> None:
        self.before: dict[int, Tensor] = {}

    def save(self, net_layers: list[Any], layers: list[int]) -> None:
        self.before = {i: net_layers[i].weight.detach().clone() for i in layers}

    def apply(self, net_layers: list[Any], bases: dict[int, Tensor]) -> None:
        with torch.no_grad():
            for i, w0 in self.before.items():
                B = bases.get(i)
                if B is None or B.shape[0] == 0:
                    continue
                w = net_layers[i].weight
                step = (w - w0).view(w.shape[0], -1)
                project_rows_(step, B)
                w.copy_(w0 + step.view_as(w))
        self.before = {}


# ----------------------------------------------------------------------------- plugins


PROJ_DIM = Metric("layer*/proj_dim", unit="dimensions", description="size of the protected subspace")


class SubspaceProjection(Plugin):
    """What HLOP and exact projection share: one projection path on the rule's layers.

    From the second task on, ``after_backward`` drops bias gradients (``freeze_bias``) and
    projects each protected layer's weight gradient off ``projection_basis(i)``:
    G <- G - (G B) Bᵀ for orthonormal rows B, or G (I - Bᵀ B) for any rows (HLOP's
    H_oldᵀ H_old). With an adaptive optimiser (``adaptive = "project_step"``) the gradient is
    left alone and ``after_update`` projects the optimiser's step ΔW instead.
    Subclasses define ``projection_basis`` and may override ``project_grad``.
    """

    seed_offset = 0

    def setup(self, rule: Rule, ctx: RuleContext) -> None:
        o = self.opts
        self.rule = rule
        self.ctx = ctx
        self.net_layers = rule.protected_layers()
        self.layers = protected_layers(self.net_layers, o.layers, o.protect_output, f"plugins.{self.name}")
        self.generator = make_generator(ctx.seed + self.seed_offset)
        self.project_step = check_optimizers(rule, o.adaptive, f"plugins.{self.name}")

    def before_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        self.task = task.index
        self.project_step = check_optimizers(self.rule, self.opts.adaptive, f"plugins.{self.name}")

    def projection_basis(self, i: int) -> Tensor:
        """The rows spanning what layer ``i``'s updates must avoid."""
        raise NotImplementedError

    def project_grad(self, i: int, layer: Any) -> None:
        g = layer.weight.grad
        if g is not None:
            project_rows_(g.view(g.shape[0], -1), self.projection_basis(i))

    def after_backward(self, rule: Rule) -> None:
        if self.task == 0:
            return
        if self.project_step:
            self.step_proj.save(self.net_layers, self.layers)
        for i in self.layers:
            layer = self.net_layers[i]
            if self.opts.freeze_bias and layer.synapse.bias is not None:
                layer.synapse.bias.grad = None
            if not self.project_step:
                self.project_grad(i, layer)

    def after_update(self, rule: Rule) -> None:
        if self.project_step and self.task > 0:
            self.step_proj.apply(self.net_layers, {i: self.projection_basis(i) for i in self.layers})


@register_plugin("projection")
class ExactProjection(SubspaceProjection):
    """Gradient projection on the exact principal subspace of stored activity (GPM-style)."""

    metrics = (PROJ_DIM,)

    @dataclass
    class Options:
        layers: list[int] = field(default_factory=list)  # [] = every layer
        protect_output: bool = True
        mode: str = "dims"  # dims (HLOP's schedule) | threshold (GPM energy criterion)
        neurons_first: list[int] = bounded(default_factory=lambda: [80, 200, 100], ge=0)
        neurons_per_task: list[int] = bounded(default_factory=lambda: [70, 70, 70], ge=0)
        decay_every: int = bounded(3, ge=0)
        decay: int = bounded(20, ge=0)
        min_neurons: int = bounded(0, ge=0)
        threshold: float = bounded(0.97, gt=0, le=1)
        samples: int = bounded(300, ge=1)  # training samples of a task whose activity is stored
        max_rows: int = bounded(20000, ge=1)  # rows kept (conv patches, time steps), sampled at random
        activity: str = "spikes"  # spikes (per time step) | rate (time average)
        adaptive: str = "refuse"  # refuse | project_step
        freeze_bias: bool = True  # biases learn on task 0 only (as HLOP's code)

    @classmethod
    def check_options(cls, o: Any, where: str) -> None:
        check_choice(o.mode, ("dims", "threshold"), f"{where}.mode")
        check_choice(o.activity, ("spikes", "rate"), f"{where}.activity")
        check_choice(o.adaptive, ("refuse", "project_step"), f"{where}.adaptive")
        if o.mode == "dims" and (not o.neurons_first or not o.neurons_per_task):
            raise ConfigError(f"{where}.neurons_first / neurons_per_task: give at least one value")

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.bases: dict[int, Tensor] = {}
        self.task = 0
        self.step_proj = StepProjector()
        self.project_step = False

    seed_offset = 4099

    def setup(self, rule: Rule, ctx: RuleContext) -> None:
        super().setup(rule, ctx)
        self.bases = {i: torch.zeros(0, in_dim(self.net_layers[i])) for i in self.layers}

    def projection_basis(self, i: int) -> Tensor:
        return self.bases[i]

    def energy_threshold(self, pos: int, task: int) -> float:
        """The energy fraction the basis of protected layer number ``pos`` must hold after ``task``."""
        return float(self.opts.threshold)

    def after_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        o = self.opts
        acts = collect_activity(self.rule, loader, self.layers, o.samples, o.activity, o.max_rows, self.generator)
        logs: dict[str, float] = {}
        for pos, i in enumerate(self.layers):
            X = acts[i]
            U = self.bases[i]
            R = X - (X @ U.T) @ U if U.shape[0] else X
            n = X.shape[1]
            room = n - U.shape[0]
            if getattr(o, "mode", "threshold") == "dims":
                k = new_dims(task.index, o.neurons_first, o.neurons_per_task, o.decay_every, o.decay, o.min_neurons, pos)
                V, _ = top_eigvecs(R, min(k, room))
            else:
                V, evals = top_eigvecs(R, room)
                total = float((X.double() ** 2).sum())
                have = float(((X @ U.T).double() ** 2).sum()) if U.shape[0] else 0.0
                threshold = self.energy_threshold(pos, task.index)
                if total <= 0 or have / total >= threshold:
                    k = 0
                else:
                    cum = have + torch.cumsum(evals[:room], 0)
                    k = int(torch.searchsorted(cum, torch.tensor(threshold * total, dtype=cum.dtype)).item()) + 1
                    k = min(k, room)
                V = V[:k]
            # Re-orthonormalise against the old basis: eigenvectors of a residual are
            # orthogonal to it only up to round-off.
            if U.shape[0] and V.shape[0]:
                V = V - (V @ U.T) @ U
                V = torch.linalg.qr(V.T).Q.T.contiguous()
            self.bases[i] = torch.cat([U, V]) if V.shape[0] else U
            logs[f"layer{i}/proj_dim"] = float(self.bases[i].shape[0])
        self.ctx.log(**logs)
        for i in self.layers:
            self.ctx.log_array(f"/projection/layer{i}/basis", self.bases[i].cpu().numpy(), task=task.index)

