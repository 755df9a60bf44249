"""Surrogate derivatives σ'(u) of the spike H(u), u = v - θ, for gradients through spikes.

Each is computed IN PLACE on a buffer holding u: the LIF backward scan works one time step at
a time on a cache-sized slice instead of streaming several temporaries of the whole
``[T, B, N]`` membrane through memory. ``SURROGATE_CODE`` numbers them for the C++ kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

from bioplaus.errors import ConfigError


def _atan_(u: Tensor, alpha: float) -> Tensor:
    """σ'(u) = (α/2) / (1 + (π α u / 2)²)   (snntorch ``surrogate.atan``, default α = 2)."""
    return u.mul_(math.pi / 2 * alpha).square_().add_(1.0).reciprocal_().mul_(alpha / 2)


def _fast_sigmoid_(u: Tensor, slope: float) -> Tensor:
    """σ'(u) = 1 / (1 + k|u|)²   (SuperSpike; snntorch ``surrogate.fast_sigmoid``, k = 25)."""
    return u.abs_().mul_(slope).add_(1.0).square_().reciprocal_()


def _sigmoid_(u: Tensor, slope: float) -> Tensor:
    """σ'(u) = k sig(ku)(1 - sig(ku))."""
    s = u.mul_(slope).sigmoid_()
    return s.sub_(s.square()).mul_(slope)


def _triangle_(u: Tensor, slope: float) -> Tensor:
    """σ'(u) = k max(0, 1 - k|u|)   (piecewise linear, support |u| < 1/k)."""
    return u.abs_().mul_(-slope).add_(1.0).clamp_min_(0.0).mul_(slope)


SURROGATES: dict[str, tuple[Callable[[Tensor, float], Tensor], float]] = {
    "atan": (_atan_, 2.0),
    "fast_sigmoid": (_fast_sigmoid_, 25.0),
    "sigmoid": (_sigmoid_, 5.0),
    "triangle": (_triangle_, 1.0),
}


def surrogate_fn(name: str, slope: float | None = None) -> Callable[[Tensor], Tensor]:
    """σ' of the named surrogate (default slope unless given), applied IN PLACE to u = v - θ."""
    if name not in SURROGATES:
        raise ConfigError(
            f"network.spiking.surrogate: unknown surrogate {name!r}; "
            f"valid: {', '.join(sorted(SURROGATES))}"
        )
    fn, default = SURROGATES[name]
    k = default if slope is None else float(slope)
    return lambda u: fn(u, k)

# The surrogate numbers of lif_kernel.cpp.
SURROGATE_CODE = {"atan": 0, "fast_sigmoid": 1, "sigmoid": 2, "triangle": 3}
