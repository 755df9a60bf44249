"""NoProp's figures: accuracy against the denoising steps, and the z_t trajectories."""

from __future__ import annotations

from typing import Any

import numpy as np

from bioplaus.registry import register_figure


def _trace(run: Any, name: str) -> np.ndarray | None:
    if name not in getattr(run, "traces", {}):
        return None
    arr = np.asarray(run.trace(name), dtype=float)
    return arr if arr.size else None


@register_figure("noprop_steps", needs=("/traces/noprop.acc_steps",))
def noprop_steps_figure(run: Any, out_dir: Any) -> list[Any]:
    """Test accuracy of p_out(z_k) against the number k of denoising steps (each evaluation)."""
    from bioplaus.report import new_figure, save_figure

    arr = _trace(run, "noprop.acc_steps")
    if arr is None or arr.ndim != 2:
        return []
    fig = new_figure(6.0, 4.0)
    ax = fig.subplots()
    k = np.arange(1, arr.shape[1] + 1)
    for i, row in enumerate(arr):
        last = i == len(arr) - 1
        ax.plot(k, 100 * row, color="C0" if last else "0.7", lw=2 if last else 0.8,
                label="last evaluation" if last else None)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("denoising steps")
    ax.set_ylabel("accuracy of p_out(z_k) (%)")
    ax.set_title("NoProp: accuracy against the number of denoising steps", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out_dir, "noprop_steps.png")


@register_figure("noprop_trajectory", needs=("/traces/noprop.z_dist",))
def noprop_trajectory_figure(run: Any, out_dir: Any) -> list[Any]:
    """‖z_t − u_y‖ along the inference chain: the mean per evaluation and the last one's samples."""
    from bioplaus.report import new_figure, save_figure

    mean = _trace(run, "noprop.z_dist")
    if mean is None or mean.ndim != 2:
        return []
    samples = _trace(run, "noprop.z_samples")
    fig = new_figure(6.0, 4.0)
    ax = fig.subplots()
    k = np.arange(mean.shape[1])
    if samples is not None and samples.ndim == 3:
        for row in samples[-1]:
            ax.plot(k, row, color="C1", lw=0.6, alpha=0.5)
    for i, row in enumerate(mean):
        last = i == len(mean) - 1
        ax.plot(k, row, color="C0" if last else "0.6", lw=2 if last else 0.8, label="mean, last evaluation" if last else None)
    ax.set_xlabel("step t of the inference chain")
    ax.set_ylabel("‖z_t − u_y‖")
    ax.set_title("NoProp: z_t trajectories (orange: single test samples)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out_dir, "noprop_trajectory.png")
