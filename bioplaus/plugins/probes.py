"""Probes: record layer variables of a fixed set of samples every N training steps."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bioplaus.config import ProbeConfig
from bioplaus.plugins.base import Plugin


def _select_layers(spec: list[Any], n_layers: int) -> list[int]:
    if not spec or "all" in spec:
        return list(range(n_layers))
    out = []
    for s in spec:
        i = int(s[5:]) if isinstance(s, str) and s.startswith("layer") else int(s)
        if not -n_layers <= i < n_layers:
            raise IndexError(f"record.probes.layers: layer {s} does not exist (net has {n_layers})")
        out.append(i % n_layers)
    return out


class Probes(Plugin):
    """Runs the net (no gradient) on fixed probe samples and streams what the config asks for.

    Spikes go to ``/spikes/<layer>`` as event lists; membrane, current, input and rate
    activity go to ``/traces/<layer>.<variable>`` as ``[record, time, sample, neuron]``
    (spiking) or ``[record, sample, neuron]`` (rate).
    """

    name = "probes"

    def __init__(self, probes: list[ProbeConfig], net: Any, recorder: Any, probe_x: Tensor) -> None:
        super().__init__({})
        self.probes = probes
        self.net = net
        self.rec = recorder
        self.x = probe_x
        self.layer_ids = [_select_layers(p.layers, len(net.layers)) for p in probes]
        self.events_logged: dict[str, int] = {}

    def after_step(self, step: int, metrics: dict[str, float]) -> None:
        for i, p in enumerate(self.probes):
            if step % p.every == 0:
                self.record(step, i)

    @torch.no_grad()
    def record(self, step: int, i: int) -> None:
        p = self.probes[i]
        net = self.net
        was_training = net.training
        net.eval()
        net(self.x[: p.samples])
        net.train(was_training)
        suffix = "" if i == 0 else f"#{i}"
        dt = net.dt if net.temporal else 0.0
        dims = "record,time,sample,neuron" if net.temporal else "record,sample,neuron"
        for li in self.layer_ids[i]:
            layer = net.layers[li]
            st = layer.state
            for var in p.variables:
                if var == "spikes":
                    if not net.temporal:
                        continue  # a rate layer has no spikes; "out" records its activity
                    spk = st.out.flatten(2)
                    pop = layer.name + suffix
                    n = self.rec.log_spikes(pop, step, spk.numpy().astype(bool), dt=dt)
                    self.events_logged[pop] = self.events_logged.get(pop, 0) + int(n)
                    continue
                t = getattr(st, var, None)
                if t is None:
                    continue
                arr = t.flatten(2) if net.temporal else t.flatten(1)
                unit = {"mem": "threshold units", "current": "threshold units"}.get(var, "1")
                self.rec.log_trace(
                    f"{layer.name}.{var}{suffix}", step, arr.float().numpy(), unit=unit, dt=dt,
                    every=p.every, dims=dims,
                )
