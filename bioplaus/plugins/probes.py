"""Probes: record layer variables of a fixed set of samples every N training steps."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from bioplaus.config import ProbeConfig
from bioplaus.errors import ConfigError
from bioplaus.plugins.base import Plugin, Rule, RuleContext


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
    Attributes for the figures: ``labels`` (class of each probe sample, when ``probe_y`` is
    given) on every spike population and trace, ``threshold`` (the LIF threshold) on
    ``*.mem`` traces.
    """

    name = "probes"

    def __init__(self, probes: list[ProbeConfig], probe_x: Tensor, probe_y: Tensor | None = None) -> None:
        super().__init__({})
        self.probes = probes
        self.x = probe_x
        self.y = probe_y
        self.events_logged: dict[str, int] = {}
        self._described: set[str] = set()

    def setup(self, rule: Rule, ctx: RuleContext) -> None:
        self.rule = rule
        self.run = ctx.run
        self.points = rule.probe_points()
        self.layer_ids = [
            _select_layers(p.layers, len(self.points), f"record.probes[{i}].layers") for i, p in enumerate(self.probes)
        ]

    def after_step(self, rule: Rule, step: int, metrics: dict[str, float]) -> None:
        for i, p in enumerate(self.probes):
            if step % p.every == 0:
                self.record(step, i)

    def _describe(self, path: str, samples: int, threshold: float | None = None) -> None:
        """Attributes of a population or trace, set once (labels, threshold)."""
        if path in self._described:
            return
        self._described.add(path)
        attrs: dict[str, Any] = {}
        if self.y is not None:
            attrs["labels"] = self.y[:samples].detach().cpu().numpy().astype("i8")
        if threshold is not None and math.isfinite(float(threshold)):  # an integrator's is inf
            attrs["threshold"] = float(threshold)
        if attrs:
            self.run.set_attrs(path, **attrs)

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
                    n = self.run.log_spikes(pop, spk.cpu().numpy().astype(bool), step=step, dt=dt)
                    self.events_logged[pop] = self.events_logged.get(pop, 0) + int(n)
                    self._describe(f"/spikes/{pop}", spk.shape[1])
                    continue
                t = getattr(st, var, None)
                if t is None:
                    continue
                arr = t.flatten(2) if temporal else t.flatten(1)
                unit = {"mem": "threshold units", "current": "threshold units"}.get(var, "1")
                name = f"{layer.name}.{var}{suffix}"
                self.run.log_trace(
                    name, arr.float().cpu().numpy(), step=step, unit=unit, dt=dt,
                    every=p.every, dims=dims,
                )
                params = getattr(getattr(layer, "neuron", None), "params", None)
                threshold = getattr(params, "threshold", None) if var == "mem" else None
                self._describe(f"/traces/{name}", arr.shape[-2], threshold)
