"""Hebbian learning based orthogonal projection (HLOP; Xiao et al., ICLR 2024).

Each protected layer (presynaptic input x of dim n; conv: unfolded patches of C·k·k) gets
lateral neurons with weights H (M x n) and activity y = H x. They learn the principal
subspace of the layer's past input with Oja's subspace rule, per minibatch of R rows,

    ΔH = (y xᵀ - y yᵀ H) / R = y (x - Hᵀ y)ᵀ / R          (Hebbian y xᵀ, anti-Hebbian -y yᵀ H)
    m <- μ m + (1 - μ) clip(ΔH, ±c);   H <- H + η m          (a few iterations per batch)

Neurons are added per task: k new ones learn while the old ones stay frozen (their rows of
ΔH are zero, but their activity still enters the reconstruction Hᵀ y, so the new neurons
learn the residual subspace); after the task they are merged into the frozen set H_old.
While task t > 0 is learned the layer's weight update uses the input projected off the old
subspace, implemented on the gradient (the same thing, since H_oldᵀ H_old is symmetric):

    ΔW ∝ δ (x - H_oldᵀ H_old x)ᵀ = G (I - H_oldᵀ H_old),    G = Σ_r δ_r x_rᵀ

The forward pass and the error sent downwards are unchanged. SGD (with momentum, optimiser
reset per task) keeps the step in the projected subspace; Adam-like optimisers and weight
decay do not, so the plugin refuses them unless ``adaptive = "project_step"`` (then the
final step ΔW of the optimiser is projected instead).

Lateral spiking neurons (``spiking = true``): y is replaced by the rate of a neuron firing
for ``spiking_steps`` steps with a signed count clipped at ``spiking_scale``,
q(y) = s · round(clip(y, -s, s) / s · N) / N, in the Hebbian rule (as the public code).

Defaults follow the public code's PMNIST setting (pkuxmq/HLOP-SNN): lateral neurons
[80, 200, 100] for task 0 and 70 per later task, 20 fewer every 3 tasks; η = 0.001 for
the input layer and 0.01 above; μ = 0.9; c = 10; 5 iterations per batch. Except two: new
neurons start off the old subspace (``init = "residual"``) and the projection is the
orthogonal projector onto span(H_old) (``projector = "orthonormal"``), which hold on long
streams where the code's H_oldᵀ H_old does not (``init = "orthogonal"``,
``projector = "hebbian"`` give the code's behaviour).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bioplaus.config import bounded, check_choice
from bioplaus.errors import ConfigError
from bioplaus.metrics import Metric
from bioplaus.neurons.synapses import BinaryRows
from bioplaus.plugins.base import Rule, RuleContext, TaskInfo
from bioplaus.plugins.projection import (
    StepProjector,
    SubspaceProjection,
    collect_activity,
    in_dim,
    new_dims,
    presynaptic_rows,
    principal_angles,
    top_eigvecs,
)
from bioplaus.registry import register_plugin


def orthonormal_rows(k: int, n: int, generator: torch.Generator) -> Tensor:
    """k orthonormal rows in R^n from a seeded Gaussian (k <= n)."""
    a = torch.randn(n, k, generator=generator)
    q, r = torch.linalg.qr(a)
    # Sign fix so the result is a deterministic function of the draw.
    return (q * torch.sign(torch.diagonal(r)).clamp_min(0).mul(2).sub(1)).T.contiguous()


def quantise(y: Tensor, scale: float, steps: int) -> Tensor:
    """Signed spike-count rate: s · round(clip(y, -s, s) / s · N) / N."""
    return torch.round(y.clamp(-scale, scale) / scale * steps) / steps * scale


class Lateral:
    """The lateral neurons of one layer: frozen H_old [k_old, n], learning H_new [k_new, n]."""

    def __init__(self, n: int, lr: float, orthonormal: bool = False) -> None:
        self.n = n
        self.lr = lr
        self.orthonormal = orthonormal
        self.old = torch.zeros(0, n)
        self.proj = torch.zeros(0, n)  # rows B of the projector BᵀB used on the weight update
        self.new = torch.zeros(0, n)
        self.mom = torch.zeros(0, n)
        # Orthonormal rows C spanning the complement of span(proj) when that is the smaller
        # side (k > n/2): I - BᵀB = CᵀC, so the projection costs O(n·(n-k)) per row, not O(n·k).
        self.comp: Tensor | None = None
        self._resid: Tensor | None = None  # I - H_oldᵀH_old, built when it is the cheaper residual

    @property
    def dim(self) -> int:
        return self.old.shape[0] + self.new.shape[0]

    def add(self, k: int, generator: torch.Generator, residual: bool = False) -> None:
        """k new neurons, orthonormal rows; ``residual``: also orthogonal to the old rows."""
        k = max(0, min(k, self.n - self.dim))
        self.new = orthonormal_rows(k, self.n, generator) if k else torch.zeros(0, self.n)
        if residual and k and self.old.shape[0]:
            q = torch.linalg.qr(self.old.T).Q  # orthonormal basis of span(H_old)
            r = self.new - (self.new @ q) @ q.T
            self.new = torch.linalg.qr(r.T).Q.T.contiguous()
        self.mom = torch.zeros_like(self.new)

    def merge(self) -> None:
        """Freeze the new neurons; the projector becomes H_oldᵀ H_old (or the orthogonal
        projector onto span(H_old) when ``orthonormal``)."""
        self.old = torch.cat([self.old, self.new])
        self.comp = None
        self._resid = None
        k = self.old.shape[0]
        if self.orthonormal and k:
            self.proj = torch.linalg.qr(self.old.T).Q.T.contiguous()
            if 2 * k > self.n:
                # The complete QR's trailing columns: an orthonormal basis of the complement
                # of span(H_old), orthogonal to ``proj`` to float precision.
                full = torch.linalg.qr(self.old.T, mode="complete").Q
                self.comp = full[:, k:].T.contiguous()
        else:
            self.proj = self.old
        self.new = torch.zeros(0, self.n)
        self.mom = torch.zeros(0, self.n)

    def project_rows(self, G: Tensor, rows: BinaryRows | None = None) -> Tensor:
        """G (I - BᵀB) for rows G [m, n] (B = ``proj``): via the complement when it is smaller.

        (G Cᵀ) C with C the orthonormal complement equals G - (G Bᵀ) B up to float rounding
        and costs 2·m·n·(n-k) instead of 2·m·n·k multiply-adds. ``rows``: G as ``BinaryRows``
        (spikes: the first product by table lookup).
        """
        left = (rows or BinaryRows(G, None)).mm
        if self.comp is not None:
            return left(self.comp.T) @ self.comp
        if self.proj.shape[0] == 0:
            return G
        return G - left(self.proj.T) @ self.proj

    @property
    def proj_rank(self) -> int:
        """Rows of the factor the projection multiplies by (k, or n - k via the complement)."""
        return self.comp.shape[0] if self.comp is not None else self.proj.shape[0]

    @property
    def H(self) -> Tensor:
        return torch.cat([self.old, self.new])

    def _residual_map(self) -> Tensor:
        """I - H_oldᵀH_old (n x n), built once per task (after each merge)."""
        if self._resid is None:
            eye = torch.eye(self.n, dtype=self.old.dtype, device=self.old.device)
            self._resid = eye - self.old.T @ self.old
        return self._resid

    def hebbian(
        self, X: Tensor, iterations: int, momentum: float, clip: float, q: Any = None
    ) -> None:
        """``iterations`` steps of Oja's subspace rule on rows X [R, n] (new neurons only).

        The frozen neurons' reconstruction is the same in every iteration, so the residual
        r = x - H_oldᵀ y_old is computed once: ΔH_new = y_new (r - H_newᵀ y_new)ᵀ / R.
        """
        if self.new.shape[0] == 0 or X.shape[0] == 0:
            return
        f = q or (lambda v: v)
        # Spikes (0/1 rows) are packed once for the table-lookup products of every iteration
        # (X Hᵀ and yᵀ X; exact to float rounding, neurons/synapses.py); else float32 GEMMs.
        bx = BinaryRows.of(X)
        r = X
        k_old, n_rows, n, k = self.old.shape[0], X.shape[0], self.n, self.new.shape[0]
        # Linear lateral neurons (no quantiser): the residual map is linear, so yᵀr may be
        # formed as (yᵀX)(I - H_oldᵀH_old) in each iteration instead of projecting all R rows
        # once; cheaper when iterations·k < R (few new neurons, many rows).
        linear = q is None
        resid_map = linear and 2 * k_old > n  # n x n map cheaper than two k_old-wide products
        per_iter = linear and k_old > 0 and iterations * k < n_rows
        if k_old and not per_iter:
            r = bx.mm(self._residual_map()) if resid_map else X - f(bx.mm(self.old.T)) @ self.old
        # yᵀ(r - y H) = yᵀr - (yᵀy) H: the k x k Gram replaces an R x n reconstruction when
        # k (R + n) < R n (few new neurons, many rows); always with the per-iteration residual.
        gram = per_iter or k * (n_rows + n) < n_rows * n
        for _ in range(iterations):
            y = f(bx.mm(self.new.T))
            if per_iter:
                z = bx.rmm(y.T)
                yr = z @ self._residual_map() if resid_map else z - (z @ self.old.T) @ self.old
            if gram:
                delta = torch.addmm(yr if per_iter else y.T @ r, y.T @ y, self.new, alpha=-1.0)
            else:
                delta = y.T @ (r - y @ self.new)
            delta.div_(n_rows).clamp_(-clip, clip)
            if momentum > 0:
                self.mom.mul_(momentum).add_(delta, alpha=1.0 - momentum)
                self.new.add_(self.mom, alpha=self.lr)
            else:
                self.new.add_(delta, alpha=self.lr)


@register_plugin("hlop")
class HLOP(SubspaceProjection):
    """Hebbian learning based orthogonal projection: protects old tasks' input subspaces."""

    metrics = (
        Metric("layer*/hlop_dim", unit="neurons", description="lateral neurons of the layer"),
        Metric("layer*/hlop_angle_*", "min", unit="degree", description="principal angles to exact PCA"),
        Metric("layer*/hlop_*"),
        Metric("hlop/*", description="HLOP's own cost counters"),
    )

    @dataclass
    class Options:
        layers: list[int] = field(default_factory=list)  # [] = every layer
        protect_output: bool = True  # False for multi-head (masked) output layers
        neurons_first: list[int] = bounded(default_factory=lambda: [80, 200, 100], ge=0)
        neurons_per_task: list[int] = bounded(default_factory=lambda: [70, 70, 70], ge=0)
        decay_every: int = bounded(3, ge=0)  # every n tasks the per-task count drops by `decay` (0 = never)
        decay: int = bounded(20, ge=0)
        min_neurons: int = bounded(0, ge=0)
        lr: list[float] = bounded(default_factory=lambda: [0.001, 0.01, 0.01], gt=0)  # per protected layer
        momentum: float = bounded(0.9, ge=0, lt=1)
        iterations: int = bounded(5, ge=0)  # Hebbian iterations per update
        clip: float = bounded(10.0, gt=0)
        every: int = bounded(1, ge=1)  # training steps between Hebbian updates
        max_rows: int = bounded(0, ge=0)  # rows (time steps x samples, patches) per update; 0 = all
        activity: str = "spikes"  # spikes (per time step) | rate (time average)
        after_task_batches: int = bounded(0, ge=0)  # extra Hebbian batches on the final net of each task
        # Not the code's choices (orthogonal, hebbian): on long streams H_oldᵀH_old drifts from a
        # projector and the net forgets or diverges (docs/continual.md, "Defaults on long streams").
        init: str = "residual"  # residual: new rows also off the old rows | orthogonal (as the code)
        projector: str = "orthonormal"  # orthonormal: onto span(H_old) | hebbian: H_oldᵀH_old (as the code)
        spiking: bool = False  # lateral neurons as spike counts (quantised rates)
        spiking_scale: float = bounded(20.0, gt=0)
        spiking_steps: int = bounded(1000, ge=1)
        projection: str = "auto"  # grad | input | auto (the cheaper of the two per layer)
        adaptive: str = "refuse"  # refuse | project_step (Adam-like optimisers, weight decay)
        freeze_bias: bool = True  # biases learn on task 0 only (as HLOP's code)
        angles: bool = True  # principal angles to the exact PCA subspace after each task
        angle_samples: int = bounded(300, ge=1)
        record_lateral: bool = True  # lateral weights into the run file after each task

    @classmethod
    def check_options(cls, o: Any, where: str) -> None:
        check_choice(o.activity, ("spikes", "rate"), f"{where}.activity")
        check_choice(o.adaptive, ("refuse", "project_step"), f"{where}.adaptive")
        check_choice(o.projector, ("hebbian", "orthonormal"), f"{where}.projector")
        check_choice(o.init, ("orthogonal", "residual"), f"{where}.init")
        check_choice(o.projection, ("grad", "input", "auto"), f"{where}.projection")
        if not o.lr:
            raise ConfigError(f"{where}.lr: give at least one (positive) value")
        if not o.neurons_first or not o.neurons_per_task:
            raise ConfigError(f"{where}.neurons_first / neurons_per_task: give at least one value")

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.task = 0
        self.lateral: dict[int, Lateral] = {}
        self.step_proj = StepProjector()
        self.project_step = False
        self.local_step = 0
        self.hebb_seconds = 0.0
        self.proj_seconds = 0.0
        self._delta: dict[int, Tensor] = {}
        self._hooks: list[Any] = []
        self._probe: dict[int, Tensor] = {}
        self.fallbacks = 0  # input projection refused: W.grad was not Σ δ xᵀ
        self._full_warned: set[int] = set()  # layers told once that their lateral neurons fill the input

    # -- life cycle ------------------------------------------------------------------
    seed_offset = 7717

    def setup(self, rule: Rule, ctx: RuleContext) -> None:
        super().setup(rule, ctx)
        o = self.opts
        self.lateral = {
            i: Lateral(in_dim(self.net_layers[i]), float(o.lr[min(pos, len(o.lr) - 1)]), o.projector == "orthonormal")
            for pos, i in enumerate(self.layers)
        }
        self.q = (lambda v: quantise(v, o.spiking_scale, o.spiking_steps)) if o.spiking else None
        if o.projection != "grad":
            for i in self.layers:
                if not self.net_layers[i].is_conv:
                    self._hooks.append(self.net_layers[i].register_forward_hook(self._capture(i)))

    def _capture(self, i: int) -> Any:
        """Forward hook: keep the error δ = ∂L/∂(synaptic current) of layer ``i``."""

        def hook(module: Any, inputs: Any, output: Any) -> None:
            cur = module.state.current
            if self.task > 0 and not self.project_step and cur is not None and cur.requires_grad:
                self._delta.pop(i, None)
                cur.register_hook(lambda g: self._delta.__setitem__(i, g.detach()))

        return hook

    def _input_projection(self, i: int) -> bool:
        """Whether to rebuild layer ``i``'s gradient from δ and the projected input.

        With m = k (or n - k when the complement is the smaller side), projecting R input
        rows and rebuilding Σ_r δ_r x̃_rᵀ costs R·n·(2m + out) multiply-adds, projecting the
        gradient G [out, n] 2·out·n·m: the input wins when the rows are few (direct-encoded
        input: R = batch size; rate nets; small T).
        """
        layer = self.net_layers[i]
        if self.opts.projection == "grad" or i not in self._delta or layer.state.input is None:
            return False
        if self.opts.projection == "input":
            return True
        m = self.lateral[i].proj_rank  # k, or n - k when projecting via the complement
        out = layer.weight.shape[0]
        x = layer.state.input
        rows = x.shape[1] if (layer.temporal and x.stride(0) == 0) else x[..., 0].numel()
        return rows * (2 * m + out) < 2 * out * m

    def _project_input_grad(self, i: int) -> bool:
        """W.grad <- Σ_r δ_r (x_r - H_oldᵀ H_old x_r)ᵀ from the captured error; False if absent."""
        layer = self.net_layers[i]
        d = self._delta.pop(i)
        x = layer.state.input.detach()
        if layer.temporal and x.stride(0) == 0:
            x, d = x[0], d.sum(0)  # the synapse ran once on B rows; its error sums over T
        X = x.reshape(-1, x.shape[-1])
        D = d.reshape(-1, d.shape[-1])
        if D.shape[0] != X.shape[0] or layer.weight.grad is None:
            return False
        # The rebuilt gradient replaces W.grad: check on a random direction v that W.grad is
        # exactly Σ δ xᵀ (no second forward through the layer, no extra term from the rule
        # or another plugin); otherwise fall back to projecting W.grad itself.
        G = layer.weight.grad.view(layer.weight.shape[0], -1)
        if i not in self._probe:
            self._probe[i] = torch.randn(X.shape[1], generator=self.generator)
        v = self._probe[i]
        lhs, rhs = G @ v, D.T @ (X @ v)
        if float((lhs - rhs).norm()) > 1e-3 * float(lhs.norm()) + 1e-12:
            self.fallbacks += 1
            return False
        Xp = self.lateral[i].project_rows(X, BinaryRows.of(X))
        layer.weight.grad.copy_((D.T @ Xp).view_as(layer.weight))
        return True

    def close(self, rule: Rule) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def before_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        super().before_task(rule, task, loader)
        o = self.opts
        for pos, i in enumerate(self.layers):
            k = new_dims(task.index, o.neurons_first, o.neurons_per_task, o.decay_every, o.decay, o.min_neurons, pos)
            lat = self.lateral[i]
            if lat.dim + k >= lat.n and task.index + 1 < task.n_tasks and i not in self._full_warned:
                self._full_warned.add(i)
                self._warn_full(i, lat.dim + k, lat.n, task)
            lat.add(k, self.generator, residual=o.init == "residual")

    def _warn_full(self, i: int, neurons: int, n: int, task: TaskInfo) -> None:
        """One line: layer ``i``'s lateral neurons span its whole input; later tasks cannot move it.

        A warning, not a refusal: freezing a layer from some task on can be meant (a small
        input layer protected completely while the layers above keep learning), and the
        built-in defaults (80 neurons for task 0) exceed small inputs such as the 64 pixels
        of ``digits``, where refusing would make the plugin unusable without tuning.
        """
        print(f"bioplaus: warning: plugins.hlop: layer {i} gets {neurons} lateral neurons for its {n} inputs by "
              f"task {task.index}: they span its whole input space, so from task {task.index + 1} on the "
              f"projection leaves it no direction and it stops learning; keep neurons_first / neurons_per_task "
              f"(summed over tasks) below {n}", file=sys.stderr, flush=True)

    def after_backward(self, rule: Rule) -> None:
        if self.task == 0:
            return
        t0 = time.perf_counter()
        super().after_backward(rule)
        self._delta.clear()
        self.proj_seconds += time.perf_counter() - t0

    def project_grad(self, i: int, layer: Any) -> None:
        """Rebuild the gradient from δ and the projected input when cheaper, else project it."""
        if self._input_projection(i) and self._project_input_grad(i):
            return
        g = layer.weight.grad
        lat = self.lateral[i]
        if g is not None and lat.comp is not None:
            G = g.view(g.shape[0], -1)
            G.copy_(lat.project_rows(G))
            return
        super().project_grad(i, layer)

    def projection_basis(self, i: int) -> Tensor:
        return self.lateral[i].proj

    def after_step(self, rule: Rule, step: int, metrics: dict[str, float]) -> None:
        self.local_step += 1
        if self.local_step % self.opts.every == 0:
            self.hebbian_update()

    def hebbian_update(self) -> None:
        """One Hebbian update of every layer's new lateral neurons on the last forward's input."""
        o = self.opts
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in self.layers:
                X = presynaptic_rows(self.net_layers[i], o.activity)
                if o.max_rows and X.shape[0] > o.max_rows:
                    X = X[torch.randperm(X.shape[0], generator=self.generator)[: o.max_rows]]
                self.lateral[i].hebbian(X, o.iterations, o.momentum, o.clip, self.q)
        self.hebb_seconds += time.perf_counter() - t0

    def after_task(self, rule: Rule, task: TaskInfo, loader: Any) -> None:
        o = self.opts
        if o.after_task_batches:
            for b, (x, _) in enumerate(loader):
                if b >= o.after_task_batches:
                    break
                self.rule.probe_forward(x)
                self.hebbian_update()
        logs: dict[str, float] = {}
        if o.angles:
            acts = collect_activity(self.rule, loader, self.layers, o.angle_samples, o.activity, 20000, self.generator)
            for i in self.layers:
                logs.update(self._compare(i, acts[i], task.index))
        for i in self.layers:
            lat = self.lateral[i]
            logs[f"layer{i}/hlop_dim"] = float(lat.dim)
            logs[f"layer{i}/hlop_new"] = float(lat.new.shape[0])
            # Orthonormality of the learned rows: ||H Hᵀ - I||_F / sqrt(k).
            H = lat.H
            if H.shape[0]:
                eye = torch.eye(H.shape[0])
                logs[f"layer{i}/hlop_orth_err"] = float(torch.linalg.norm(H @ H.T - eye) / H.shape[0] ** 0.5)
            if o.record_lateral and lat.new.shape[0]:
                self.ctx.log_array(f"/hlop/layer{i}/task{task.index}/H", lat.new.cpu().numpy(), task=task.index)
            lat.merge()
        logs["hlop/hebb_seconds"] = self.hebb_seconds
        logs["hlop/proj_seconds"] = self.proj_seconds
        logs["hlop/input_fallbacks"] = float(self.fallbacks)
        self.ctx.log(**logs)

    def _compare(self, i: int, X: Tensor, task_id: int) -> dict[str, float]:
        """Hebbian new neurons vs the exact top-k PCA subspace of this task's residual input.

        Residual r = x - H_oldᵀ H_old x (what the new neurons see); exact subspace: top-k
        eigenvectors of Σ r rᵀ. Also the share of residual energy each subspace captures.
        """
        lat = self.lateral[i]
        k = lat.new.shape[0]
        if k == 0 or X.shape[0] == 0:
            return {}
        R = X - (X @ lat.old.T) @ lat.old if lat.old.shape[0] else X
        V, evals = top_eigvecs(R, k)
        ang = principal_angles(lat.new, V)
        Q = torch.linalg.qr(lat.new.double().T).Q
        heb = float(((R.double() @ Q) ** 2).sum())
        exact = float(evals[:k].sum())
        self.ctx.log_array(f"/hlop/layer{i}/task{task_id}/angles", ang.cpu().numpy(), unit="degree")
        return {
            f"layer{i}/hlop_angle_max": float(ang.max()),
            f"layer{i}/hlop_angle_mean": float(ang.mean()),
            f"layer{i}/hlop_energy_ratio": heb / exact if exact > 0 else float("nan"),
        }

    def basis(self, i: int) -> Tensor:
        """All lateral weights of layer ``i`` (old then new rows)."""
        return self.lateral[i].H
