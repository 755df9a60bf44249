"""A third-party experiment kind, installed only through an entry point (tests use it).

``kind = "ou_fit"``: simulate an Ornstein–Uhlenbeck process
    dx = θ (μ - x) dt + σ dW
and fit θ and μ online by least squares on the increments, dx = a + b x + noise, so that
θ̂ = -b / dt and μ̂ = -a / b. Neither classification nor gradient descent: it only uses the
seams (its own table, declared metrics, the run context, a registered figure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bioplaus.errors import ConfigError
from bioplaus.experiments.base import Experiment
from bioplaus.metrics import Metric
from bioplaus.registry import register_figure
from bioplaus.report import new_figure, save_figure


@dataclass
class OUConfig:
    theta: float = 2.0
    mu: float = 0.5
    sigma: float = 0.3
    dt: float = 0.01
    steps: int = 4000
    log_every: int = 200


class OUFit(Experiment):
    Config = OUConfig
    section = "ou_fit"
    figures = ("learning_curves", "ou_fit")  # what `bioplaus report` draws for this kind

    @classmethod
    def validate(cls, cfg: Any) -> None:
        o = cfg.section("ou_fit")
        if not (o.theta > 0 and o.sigma > 0 and o.dt > 0 and o.steps > 2 and o.log_every > 0):
            raise ConfigError("ou_fit: need theta > 0, sigma > 0, dt > 0, steps > 2, log_every > 0")

    @classmethod
    def declared_metrics(cls, cfg: Any) -> list[Metric]:
        return [
            Metric("theta_hat", unit="1/s", panel="estimates", progress=True, summary=True),
            Metric("mu_hat", panel="estimates", summary=True),
            Metric("theta_rel_error", "min", panel="error", headline=True, progress=True, summary=True),
        ]

    def meta(self) -> dict[str, Any]:
        return {"process": "Ornstein-Uhlenbeck"}

    def run(self) -> dict[str, float]:
        o, ctx = self.options, self.ctx
        rng = np.random.default_rng(self.cfg.seed)
        x = np.empty(o.steps + 1)
        x[0] = o.mu + 1.0
        noise = o.sigma * math.sqrt(o.dt) * rng.standard_normal(o.steps)
        sums = np.zeros(5)  # n, Σx, Σx², Σdx, Σx·dx
        bar = ctx.progress(o.steps)
        m: dict[str, float] = {}
        for t in range(o.steps):
            ctx.check_stop()
            dx = o.theta * (o.mu - x[t]) * o.dt + noise[t]
            x[t + 1] = x[t] + dx
            sums += (1.0, x[t], x[t] ** 2, dx, x[t] * dx)
            ctx.step = t + 1
            if ctx.step % o.log_every == 0:
                n, sx, sxx, sd, sxd = sums
                b = (n * sxd - sx * sd) / (n * sxx - sx**2)
                a = (sd - b * sx) / n
                theta = -b / o.dt
                m = {"theta_hat": theta, "mu_hat": -a / b, "theta_rel_error": abs(theta - o.theta) / o.theta}
                ctx.log(**m)
                bar.update(f"step {ctx.step}", m)
                bar.line(f"step {ctx.step}", m, 0.0)
        bar.close()
        ctx.log_array("/ou_fit/path", x, dt=o.dt)
        return m


@register_figure("ou_fit", needs=("/ou_fit/path",))
def ou_fit_figure(run: Any, out_dir: Path) -> list[Path]:
    """The simulated path with the fitted mean."""
    if not run.has("/ou_fit/path"):
        return []
    x = np.asarray(run.array("/ou_fit/path"))
    dt = float(run.attrs_of("/ou_fit/path")["dt"])
    fig = new_figure(7, 3.5)
    ax = fig.subplots()
    ax.plot(np.arange(len(x)) * dt, x, lw=0.7, label="x(t)")
    ax.axhline(float(run.metric("mu_hat")[-1]), color="r", ls="--", label="fitted mean")
    ax.set_xlabel("time (s)")
    ax.legend()
    return save_figure(fig, out_dir, "ou_fit.png")
