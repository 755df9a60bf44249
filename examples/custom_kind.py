"""An experiment kind of your own: no classes, no gradients, still a bioplaus run.

    python examples/custom_kind.py [OUT_DIR]

A random walk x_{t+1} = x_t + v dt + s sqrt(dt) ξ_t is simulated, and its drift v is
estimated online as the mean increment divided by dt (standard error s / sqrt(t dt)).
The kind declares its metrics (the headline: the absolute error of the estimate, lower is
better), streams them through the run context, writes the path as an array, and registers
a figure that ``bioplaus report`` draws.
"""

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import bioplaus
from bioplaus import ConfigError, Experiment, Metric
from bioplaus.report import new_figure, save_figure


@dataclass
class DriftConfig:
    """``[drift]``: the walk and how often to log."""

    v: float = 0.8  # drift (units / s)
    s: float = 1.0  # diffusion (units / sqrt(s))
    dt: float = 0.01  # s
    steps: int = 5000
    log_every: int = 100


@bioplaus.register_experiment("drift")
class DriftEstimation(Experiment):
    Config = DriftConfig
    figures = ("learning_curves", "drift_path")  # what `bioplaus report` draws for this kind

    @classmethod
    def validate(cls, cfg) -> None:  # noqa: ANN001
        o = cfg.section("drift")
        if not (o.dt > 0 and o.s >= 0 and o.steps > 0 and o.log_every > 0):
            raise ConfigError("drift: need dt > 0, s >= 0, steps > 0, log_every > 0")

    @classmethod
    def declared_metrics(cls, cfg) -> list[Metric]:  # noqa: ANN001
        return [
            Metric("v_hat", unit="1/s", panel="estimate", progress=True, summary=True),
            Metric("abs_error", "min", unit="1/s", panel="error", headline=True, progress=True, summary=True),
            Metric("std_error", "min", unit="1/s", panel="error"),
        ]

    def run(self) -> dict[str, float]:
        o, ctx = self.options, self.ctx
        rng = np.random.default_rng(self.cfg.seed)
        dx = o.v * o.dt + o.s * math.sqrt(o.dt) * rng.standard_normal(o.steps)
        bar = ctx.progress(o.steps)
        total = 0.0
        for t in range(1, o.steps + 1):
            ctx.check_stop()
            ctx.step = t
            total += dx[t - 1]
            if t % o.log_every == 0 or t == o.steps:
                v_hat = total / (t * o.dt)
                m = {"v_hat": v_hat, "abs_error": abs(v_hat - o.v), "std_error": o.s / math.sqrt(t * o.dt)}
                ctx.log(**m)
                bar.update(f"step {t}/{o.steps}", m)
        bar.line("walk", m, 0.0)
        bar.close()
        ctx.log_array("/drift/path", np.concatenate([[0.0], np.cumsum(dx)]), dt=o.dt, unit="units")
        return m


@bioplaus.register_figure("drift_path", needs=("/drift/path",))
def drift_path(run, out_dir: Path) -> list[Path]:  # noqa: ANN001
    if not run.has("/drift/path"):
        return []
    x, dt = run.array("/drift/path"), float(run.attrs_of("/drift/path")["dt"])
    fig = new_figure(7, 3.5)
    ax = fig.subplots()
    t = np.arange(len(x)) * dt
    ax.plot(t, x, lw=0.8, label="path")
    ax.plot(t, run.metric("v_hat")[-1] * t, "r--", label="estimated drift")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("x")
    ax.legend()
    return save_figure(fig, out_dir, "drift_path.png")


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "runs"
    res = bioplaus.run({"kind": "drift", "drift": {"steps": 20000}}, out=f"{out}/drift.h5", progress=False)
    print(res.summary())
    print("figures:", ", ".join(p.name for p in res.figures))
