"""Spike encoders: turn inputs x in [0, 1] of any shape ``[B, ...]`` into ``[T, B, ...]``.

- ``direct``: the same analogue value on every step, a constant input current;
  a stride-0 view of ``x``, no copy.
- ``poisson``: independent Bernoulli spikes per step with
  p = clamp(x · max_rate · dt, 0, 1); the default ``max_rate = 1 / dt`` gives p = x,
  i.e. a firing rate of x / dt.
- ``latency``: at most one spike per input; stronger inputs fire earlier.
  ``mode="linear"`` (default): step t = round((1 - x) · (T - 1)) for x > threshold, so
  x = 1 fires at step 0 and x -> threshold near the end;
  ``mode="log"``: the time an RC membrane driven by x needs to reach ``threshold``,
  t = τ · ln(x / (x - threshold)) seconds, step round(t / dt); spikes later than step
  T - 1 are dropped.

Spike outputs are float32 0/1 tensors.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["ENCODERS", "direct", "encode", "latency", "poisson"]


def direct(
    x: torch.Tensor, T: int, dt: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Constant current: out[t] = x for every t (an expanded view, no copy)."""
    return x.unsqueeze(0).expand(T, *x.shape)


def poisson(
    x: torch.Tensor,
    T: int,
    dt: float,
    generator: torch.Generator | None = None,
    *,
    max_rate: float | None = None,
) -> torch.Tensor:
    """Bernoulli spikes: out[t] ~ Bernoulli(p), p = clamp(x · max_rate · dt, 0, 1).

    ``max_rate`` is in Hz and defaults to 1 / dt, which makes p = x.
    """
    rate = 1.0 / dt if max_rate is None else float(max_rate)
    if rate < 0:
        raise ValueError(f"poisson max_rate must be >= 0 Hz, got {max_rate}")
    p = (x * (rate * dt)).clamp_(0.0, 1.0) if rate * dt != 1.0 else x.clamp(0.0, 1.0)
    u = torch.rand((T, *x.shape), generator=generator, dtype=torch.float32, device=x.device)
    return (u < p).to(torch.float32)


def latency(
    x: torch.Tensor,
    T: int,
    dt: float,
    generator: torch.Generator | None = None,
    *,
    threshold: float = 0.01,
    mode: str = "linear",
    tau: float | None = None,
) -> torch.Tensor:
    """Time-to-first-spike code: one spike per input with x > threshold, none otherwise.

    linear: step = round((1 - x) · (T - 1));
    log: step = round(τ · ln(x / (x - threshold)) / dt), dropped if > T - 1.
    ``tau`` (seconds) is required for ``mode="log"`` and not accepted otherwise.
    """
    if mode == "linear":
        if tau is not None:
            raise ValueError("latency tau applies only to mode='log'")
        xc = x.clamp(0.0, 1.0)
        step = torch.round((1.0 - xc) * (T - 1)).to(torch.int64)
    elif mode == "log":
        if tau is None or tau <= 0:
            raise ValueError(f"latency mode='log' needs tau > 0 (seconds), got {tau}")
        if threshold <= 0:
            raise ValueError(f"latency mode='log' needs threshold > 0, got {threshold}")
        # Inactive inputs give log of a non-positive number; masked out below.
        with torch.no_grad():
            t_s = tau * torch.log(x / (x - threshold))
        step = torch.round(t_s / dt).nan_to_num(nan=T, posinf=T, neginf=T)
        step = step.clamp(0, T).to(torch.int64)
    else:
        raise ValueError(f"unknown latency mode {mode!r}; valid modes: linear, log")
    active = (x > threshold) & (step <= T - 1)
    out = torch.zeros((T, *x.shape), dtype=torch.float32, device=x.device)
    # Inactive inputs scatter a 0 into step 0, which leaves the zeros unchanged.
    out.scatter_(
        0, torch.where(active, step, 0).unsqueeze(0), active.to(torch.float32).unsqueeze(0)
    )
    return out


#: Encoder name -> function ``f(x, T, dt, generator, **opts)``.
ENCODERS: dict[str, Callable[..., torch.Tensor]] = {
    "direct": direct,
    "poisson": poisson,
    "latency": latency,
}


def encode(
    x: torch.Tensor | np.ndarray,
    kind: str,
    T: int,
    dt: float,
    generator: torch.Generator | None = None,
    **opts: object,
) -> torch.Tensor:
    """Encode inputs ``x`` in [0, 1], shape ``[B, ...]``, into a time-major ``[T, B, ...]``.

    ``kind`` is a name in `ENCODERS`; ``opts`` go to that encoder (``max_rate`` for
    poisson; ``threshold``, ``mode``, ``tau`` for latency). ``generator`` makes the
    stochastic encoders reproducible.
    """
    fn = ENCODERS.get(kind)
    if fn is None:
        raise ValueError(f"unknown encoder {kind!r}; valid names: {', '.join(ENCODERS)}")
    if int(T) != T or T < 1:
        raise ValueError(f"encoder T must be a positive integer, got {T}")
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"encoder dt must be > 0 seconds, got {dt}")
    allowed = [
        p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ValueError(
            f"encoder {kind!r} takes no option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(allowed) or 'none'}"
        )
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.array(x, dtype=np.float32))  # copy: input may be read-only
    elif x.dtype != torch.float32:
        x = x.to(torch.float32)
    return fn(x, int(T), float(dt), generator, **opts)
