"""The compute device of a run: ``[train] device = "auto" | "cpu" | "cuda"``.

``auto`` is CUDA when torch sees a GPU and the CPU otherwise. The run context makes the
resolved device torch's default device for the run (so models, rule and plugin state such
as HLOP's lateral weights, EWC's Fisher or CCL's targets are allocated there), the
gradient kinds move each data batch to it, and everything that goes into the run file is
pulled back to the CPU first. Random draws use generators made by `generator`, on the run's
device, so a CPU run draws exactly what it drew before the setting existed.
"""

from __future__ import annotations

from typing import Any

import torch

from bioplaus.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """Whether torch can use a CUDA GPU (a seam for tests on machines without one)."""
    return torch.cuda.is_available()


def resolve_device(name: str, where: str = "train.device") -> torch.device:
    """The torch device for ``name``; a `ConfigError` naming ``where`` for a bad value or
    for "cuda" on a machine (or a torch build) without a GPU."""
    if name not in DEVICES:
        shown = name if isinstance(name, str) and len(name) <= 40 else f"{str(name)[:40]}..."
        raise ConfigError(f"{where}: unknown value {shown!r}; valid: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if cuda_available() else "cpu")
    if name == "cuda" and not cuda_available():
        build = "built without CUDA" if torch.version.cuda is None else "sees no GPU"
        raise ConfigError(f"{where}: 'cuda' asked for but torch {torch.__version__} {build}; use 'cpu' or 'auto'")
    return torch.device(name)


def run_device(cfg: Any) -> torch.device:
    """The device a run of ``cfg`` uses: ``train.device`` resolved; for a kind whose
    ``devices`` (`bioplaus.experiments.base.Experiment.devices`) lack "cuda", the CPU under
    "auto" and a `ConfigError` under "cuda"."""
    from bioplaus.registry import EXPERIMENTS

    dev = resolve_device(cfg.train.device, "train.device")
    kind = cfg.kind or "supervised"
    if "cuda" not in EXPERIMENTS.get(kind, "kind").devices:
        if cfg.train.device == "cuda":
            raise ConfigError(f"train.device: the {kind!r} kind runs on the CPU only; use 'cpu' or 'auto'")
        return torch.device("cpu")
    return dev


def generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """A seeded generator on ``device`` (default: torch's current default device)."""
    dev = torch.device(device) if device is not None else torch.get_default_device()
    if dev.type == "meta":  # a skeleton built on the meta device draws nothing real
        dev = torch.device("cpu")
    return torch.Generator(device=dev).manual_seed(int(seed))


def to_device(loader: Any, device: torch.device) -> Any:
    """Move a loader's arrays to ``device`` in place (x, y, a task's input permutation) and
    return it; loaders of other shapes are left as they are (their batches move per step)."""
    inner = getattr(loader, "inner", None)
    if inner is not None:
        to_device(inner, device)
    for name in ("x", "y", "perm"):
        t = getattr(loader, name, None)
        if isinstance(t, torch.Tensor) and t.device != device:
            setattr(loader, name, t.to(device))
    return loader
