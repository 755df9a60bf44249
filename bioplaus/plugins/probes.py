"""Probes: record layer variables of a fixed set of samples every N training steps."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bioplaus.config import ProbeConfig
from bioplaus.errors import ConfigError
from bioplaus.plugins.base import Plugin


def _select_layers(spec: list[Any], n_layers: int, where: str = "record.probes.layers") -> list[int]:
    """Indices into the rule's probe points: "all", ints, or names ``layer<k>``."""
    if not spec or "all" in spec:
        return list(range(n_layers))
    out = []
    for s in spec:
        try:
            i = int(s[5:]) if isinstance(s, str) and s.startswith("layer") else int(s)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {s!r} is not a layer (use 'all', an index or 'layer<k>')") from None
        if not -n_layers <= i < n_layers:
            raise ConfigError(f"{where}: layer {s} does not exist (the model has {n_layers} probe points)")
        out.append(i % n_layers)
    return out


class Probes(Plugin):
    """Runs the rule's model (no gradient) on fixed probe samples and streams what the config asks.

    The layers are the rule's ``probe_points()``. Spikes go to ``/spikes/<layer>`` as event
    lists; membrane, current, input and rate activity go to ``/traces/<layer>.<variable>`` as
    ``[record, time, sample, neuron]`` (spiking) or ``[record, sample, neuron]`` (rate).
    """

    name = "probes"

    def __init__(self, probes: list[ProbeConfig], probe_x: Tensor) -> None:
        super().__init__({})
        self.probes = probes
        self.x = probe_x
        self.events_logged: dict[str, int] = {}

    def setup(self, rule: Any, ctx: Any) -> None:
        self.rule = rule
        self.run = ctx.run
        self.points = rule.probe_points()
        self.layer_ids = [
            _select_layers(p.layers, len(self.points), f"record.probes[{i}].layers") for i, p in enumerate(self.probes)
        ]

    def after_step(self, step: int, metrics: dict[str, float]) -> None:
        for i, p in enumerate(self.probes):
            if step % p.every == 0:
                self.record(step, i)

    @torch.no_grad()
    def record(self, step: int, i: int) -> None:
        p = self.probes[i]
        self.rule.probe_forward(self.x[: p.samples])
        suffix = "" if i == 0 else f"#{i}"
        for li in self.layer_ids[i]:
            layer = self.points[li]
            temporal = bool(getattr(layer, "temporal", False))
            dt = float(layer.dt) if temporal else 0.0
            dims = "record,time,sample,neuron" if temporal else "record,sample,neuron"
            st = layer.state
            for var in p.variables:
                if var == "spikes":
                    if not temporal:
                        continue  # a rate layer has no spikes; "out" records its activity
                    spk = st.out.flatten(2)
                    pop = layer.name + suffix
                    n = self.run.log_spikes(pop, spk.numpy().astype(bool), step=step, dt=dt)
                    self.events_logged[pop] = self.events_logged.get(pop, 0) + int(n)
                    continue
                t = getattr(st, var, None)
                if t is None:
                    continue
                arr = t.flatten(2) if temporal else t.flatten(1)
                unit = {"mem": "threshold units", "current": "threshold units"}.get(var, "1")
                self.run.log_trace(
                    f"{layer.name}.{var}{suffix}", arr.float().numpy(), step=step, unit=unit, dt=dt,
                    every=p.every, dims=dims,
                )
