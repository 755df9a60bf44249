"""Gradient projection memory (GPM; Saha, Garg & Roy, ICLR 2021), as published.

After task τ, each protected layer l forms its representation matrix R_l = [x_1 … x_S]
from the inputs x of the layer on ``samples`` training samples of the task (rows here:
one per sample, per time step on a spiking net, per patch of a conv layer). With the
stored orthonormal basis M_l (columns; rows in the code), the part of R_l not yet
represented is R̂_l = R_l - M_l M_lᵀ R_l; its SVD R̂_l = Û Σ̂ V̂ᵀ gives the new bases:
the first k columns of Û with k the smallest number such that

    ‖M_l M_lᵀ R_l‖²_F + Σ_{i<=k} σ̂_i²  >=  ε_l^τ ‖R_l‖²_F        (task 0: M_l empty)

ε_l^τ = min(ε_l + τ · Δε_l, 1) is the energy threshold of layer l, which may grow per task
(GPM's CIFAR and 5-datasets code: 0.97 + 0.003 τ; permuted MNIST: [0.95, 0.99, 0.99] fixed).
While later tasks are learned every protected layer's weight gradient is projected onto the
orthogonal complement of the stored space, G_l <- G_l - G_l M_l M_lᵀ, and biases learn on
task 0 only (GPM trains them only there). The SVD of R̂ is taken as the eigen-decomposition
of R̂ᵀR̂ (same subspace, σ̂² = eigenvalues).

Spiking nets: the rows are the layer's input spike vectors at every time step
(``activity = "spikes"``, the vectors BPTT's weight gradient Σ_t δ_t s_tᵀ is made of, so
the projection keeps every time step's input current of old tasks), or the spike rates
(spike count / T, ``activity = "rate"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bioplaus.config import bounded, check_choice
from bioplaus.errors import ConfigError
from bioplaus.metrics import Metric
from bioplaus.plugins.projection import ExactProjection
from bioplaus.registry import register_plugin


@register_plugin("gpm")
class GPM(ExactProjection):
    """Orthogonal gradient projection onto the complement of the SVD bases of past inputs."""

    metrics = (Metric("layer*/proj_dim", unit="dimensions", description="size of the protected subspace"),)

    @dataclass
    class Options:
        layers: list[int] = field(default_factory=list)  # [] = every layer
        protect_output: bool = True
        threshold: list[float] = bounded(default_factory=lambda: [0.95, 0.99, 0.99], gt=0, le=1)  # ε_l (last repeats)
        threshold_step: list[float] = bounded(default_factory=lambda: [0.0], ge=0)  # Δε_l per task (last repeats)
        samples: int = bounded(300, ge=1)  # samples of a task in R_l (GPM's permuted MNIST: 300)
        max_rows: int = bounded(20000, ge=1)  # rows kept (time steps, patches), sampled at random
        activity: str = "spikes"  # spikes (per time step) | rate (spike count / T)
        adaptive: str = "refuse"  # refuse | project_step
        freeze_bias: bool = True  # biases learn on task 0 only (as GPM)

    @classmethod
    def check_options(cls, o: Any, where: str) -> None:
        check_choice(o.activity, ("spikes", "rate"), f"{where}.activity")
        check_choice(o.adaptive, ("refuse", "project_step"), f"{where}.adaptive")
        if not o.threshold or not o.threshold_step:
            raise ConfigError(f"{where}.threshold / threshold_step: give at least one value")

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        """GPM's CIFAR schedule: thresholds growing per task (bioplaus.conformance)."""
        return {"plugin": {"threshold": [0.97], "threshold_step": [0.003], "samples": 125}}

    seed_offset = 12289

    def energy_threshold(self, pos: int, task: int) -> float:
        o = self.opts
        pick = lambda v: float(v[min(pos, len(v) - 1)])  # noqa: E731 - a shorter list repeats its last value
        return min(pick(o.threshold) + task * pick(o.threshold_step), 1.0)
