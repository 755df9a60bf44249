"""The optimisation mechanics under every rule: optimisers, schedules, clipping, the update.

`update` is the one sequence a rule's loss goes through: zero_grad, one backward,
[gradient centralisation], the ``after_backward`` hooks, clipping, the optimiser step
(fused SGD folds the clip into its pass), the ``after_update`` hooks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bioplaus.config import RuleConfig
from bioplaus.errors import ConfigError, RunError
from bioplaus.training.hooks import Rule

# (optimiser, max grad norm (0/None: no clip), parameters (None: the optimiser's own))
UpdateGroup = tuple[torch.optim.Optimizer, float | None, list[Tensor] | None]


def make_optimizer(
    cfg: RuleConfig, params: Any, lr: float | None = None, momentum: float | None = None
) -> torch.optim.Optimizer:
    """The ``[rule]`` optimiser (sgd | adam | adamw) over ``params`` (tensors or param groups).

    ``lr`` and ``momentum`` override the config's (CCL's feedback net).
    """
    lr = cfg.lr if lr is None else lr
    mom = cfg.momentum if momentum is None else momentum
    params = [_group(g) for g in ([params] if isinstance(params, Tensor) else params)]
    if cfg.optimizer == "sgd":
        # fused: one pass over each parameter (read p, g, buf; write p, buf) instead of
        # foreach's three; bit-identical results (tests/rules/test_ccl.py checks).
        kind = {"fused": True} if _fusable(params) else {"foreach": True}
        return torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=cfg.weight_decay, **kind)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"rule.optimizer: unknown optimizer {cfg.optimizer!r}; valid: sgd, adam, adamw")


def make_scheduler(cfg: RuleConfig, opt: torch.optim.Optimizer, total_steps: int) -> Any:
    """The ``[rule] schedule`` of ``opt`` over ``total_steps`` (None: constant lr).

    cosine: lr(s) = lr · ½ (1 + cos(π min(s, S) / S)).
    """
    if cfg.schedule != "cosine" or total_steps <= 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
    )


def check_finite(loss: Tensor, step: int) -> None:
    """`RunError` when the loss of step ``step + 1`` is NaN or infinite."""
    if not torch.isfinite(loss).all():
        raise RunError(f"loss is {loss.item()} at step {step + 1}: the run diverged")


def update(rule: Rule, loss: Tensor, groups: Sequence[UpdateGroup], centralize: bool = False) -> None:
    """zero_grad, one backward, [centralise], ``after_backward`` hooks, clip, step, ``after_update``.

    Each group (optimiser, max grad norm, params) is clipped on its own norm; params None
    means the optimiser's own. An optimiser shared by several groups is stepped once.
    """
    check_finite(loss, rule.step)
    groups = [
        (opt, c, ps or [p for g in opt.param_groups for p in g["params"]])
        for opt, c, ps in groups
    ]
    opts = list({id(o): o for o, _, _ in groups}.values())
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if centralize:
        for _, _, ps in groups:
            centralize_gradients(ps)
    rule.plugins.after_backward(rule)
    clipped = [(ps, c) for _, c, ps in groups if c and c > 0]
    if clipped and all(_plain_fused_sgd(o) for o in opts):
        # The clip's rescale is folded into the fused SGD pass (one pass over the
        # gradients fewer); same numbers to float rounding (g / s for g · (1 / s)).
        scales = clip_scales(clipped)
        for opt in opts:
            fused_sgd_step(opt, scales)
    else:
        if len(clipped) == 1:
            clip_grad_norm(*clipped[0])
        elif clipped:
            clip_grad_norms(clipped)
        for opt in opts:
            opt.step()
    rule.plugins.after_update(rule)


def centralize_gradients(params: list[Tensor]) -> None:
    """Gradient centralisation: g ← g - mean of g over every dim but the output one (weights)."""
    with torch.no_grad():
        for p in params:
            if p.grad is None or p.dim() < 2:
                continue
            p.grad -= p.grad.mean(dim=tuple(range(1, p.dim())), keepdim=True)


def _group(g: Any) -> Any:
    """A parameter or a param group with its "params" as a list (generators read once)."""
    if not isinstance(g, dict):
        return g
    ps = g["params"]
    return {**g, "params": [ps] if isinstance(ps, Tensor) else list(ps)}


def _fusable(params: Any) -> bool:
    """Whether torch's fused SGD takes these parameters (floating, all on one CPU/CUDA device)."""
    ps = [p for g in params for p in g["params"]] if params and isinstance(params[0], dict) else list(params)
    if not ps:
        return False
    dev = ps[0].device
    return dev.type in ("cpu", "cuda") and all(p.is_floating_point() and p.device == dev for p in ps)


def _group_norms(groups: list[tuple[list[Tensor], float]]) -> tuple[list[list[Tensor]], list[float]]:
    """Each group's gradients and their joint L2 norm: one ``_foreach_norm``, one host read."""
    grads = [[p.grad for p in ps if p.grad is not None] for ps, _ in groups]
    flat = [g for gs in grads for g in gs]
    if not flat:
        return grads, [0.0] * len(groups)
    norms = torch._foreach_norm(flat)
    totals, k = [], 0
    for gs in grads:
        part = norms[k:k + len(gs)]
        k += len(gs)
        totals.append(torch.linalg.vector_norm(torch.stack(part)) if part else torch.zeros(()))
    return grads, torch.stack(totals).tolist()


def clip_scales(groups: list[tuple[list[Tensor], float]]) -> dict[int, float]:
    """The clip factor max_norm / (norm + 1e-6) of each gradient whose group needs one.

    Keys are ``id(param)``; a group within its bound has no entry. The norms are those of
    ``clip_grad_norms``.
    """
    _, totals = _group_norms(groups)
    out: dict[int, float] = {}
    for (ps, max_norm), total in zip(groups, totals):
        if total > max_norm:
            out.update({id(p): max_norm / (total + 1e-6) for p in ps if p.grad is not None})
    return out


def _plain_fused_sgd(opt: torch.optim.Optimizer) -> bool:
    """A torch SGD whose every group is fused and which has no step hooks of its own."""
    from torch.optim import optimizer as _o

    return (
        type(opt) is torch.optim.SGD
        and "step" not in vars(opt)  # no step patched onto the instance
        and all(g.get("fused") and not g.get("differentiable") for g in opt.param_groups)
        and not opt._optimizer_step_pre_hooks
        and not opt._optimizer_step_post_hooks
        and not _o._global_optimizer_pre_hooks
        and not _o._global_optimizer_post_hooks
        and getattr(opt, "grad_scale", None) is None
    )


@torch.no_grad()
def fused_sgd_step(opt: torch.optim.SGD, scales: dict[int, float]) -> None:
    """``opt.step()`` of a fused SGD with each gradient first multiplied by ``scales[id(p)]``.

    The multiply happens inside the fused kernel (its ``grad_scale`` divides), and the
    kernel writes the scaled gradient back to ``p.grad`` as the separate multiply would.
    Parameters of one group that share a factor go in one call; a group whose parameters
    have different factors is split.
    """
    from torch.optim.sgd import sgd

    for group in opt.param_groups:
        by_scale: dict[float | None, list[Tensor]] = {}
        for p in group["params"]:
            if p.grad is not None:
                by_scale.setdefault(scales.get(id(p)), []).append(p)
        for s, params in by_scale.items():
            grads = [p.grad for p in params]
            bufs = [opt.state[p].get("momentum_buffer") for p in params]
            sgd(
                params, grads, bufs, fused=True,
                grad_scale=None if s is None else torch.tensor(1.0 / s, dtype=torch.float32, device=params[0].device),
                weight_decay=group["weight_decay"], momentum=group["momentum"], lr=group["lr"],
                dampening=group["dampening"], nesterov=group["nesterov"], maximize=group["maximize"],
            )
            if group["momentum"] != 0:
                for p, b in zip(params, bufs):
                    opt.state[p]["momentum_buffer"] = b


def clip_grad_norms(groups: list[tuple[list[Tensor], float]]) -> list[float]:
    """``clip_grad_norm`` of several parameter groups, each on its own norm, in one pass.

    One ``_foreach_norm`` over every gradient and one host read of the group norms, instead
    of one of each per group (CCL clips its forward and feedback nets separately).
    """
    grads, values = _group_norms(groups)
    for gs, (_, max_norm), total in zip(grads, groups, values):
        if gs and total > max_norm:
            torch._foreach_mul_(gs, max_norm / (total + 1e-6))
    return values


def clip_grad_norm(params: list[Tensor], max_norm: float) -> float:
    """Scale the gradients so that their joint L2 norm is at most ``max_norm``; return the norm.

    As ``torch.nn.utils.clip_grad_norm_`` but the rescale is skipped when the norm is already
    within bounds (one fused norm, no multiply on most steps of a converged run).
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
    if total > max_norm:
        torch._foreach_mul_(grads, max_norm / (total + 1e-6))
    return total
