"""Replay a NIR graph in Brian2 (``bioplaus simulate GRAPH.nir --backend brian2``).

The graph is read and checked by `bioplaus.export.nir.from_nir` (the discrete weights, β,
θ, reset, T, encoder, readout); every layer becomes a population of the generic runner
(`bioplaus.simulators.brian2_runner`), every weight matrix a projection. The input is
encoded as bioplaus encodes it: ``direct`` input is the current W₀x (+ b₀) added to the
first layer at each of the T steps; ``poisson`` / ``latency`` spikes come from a spike
source through the first weight matrix.

Delay compensation. Brian2 delivers a spike in the "synapses" slot, after the thresholds of
the same step, so each projection delays by one step: layer l (counting the spike source
as layer −1) fires at Brian2 step t + l for bioplaus's step t. Each sample therefore runs in
a window of T + L − 1 steps (one more with a spike source), state zeroed at the start of
each window, and layer l is read from step l of its window (``Brian2Result.shifted``).
Spikes and the output membrane then agree with bioplaus step for step (to float64 vs
float32 rounding).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioplaus.registry import SIMULATORS
from bioplaus.simulators.base import SimResult, Simulator


def _net(graph: Any) -> Any:
    from bioplaus.export.nir import from_nir

    return from_nir(graph)


def simulate_bioplaus(graph: Any, x: torch.Tensor, **_: Any) -> SimResult:
    """The reference: the graph rebuilt as a bioplaus net and run on the torch backend."""
    net = _net(graph)
    t0 = time.perf_counter()
    net.eval()
    with torch.no_grad():
        logits = net(x)
    secs = time.perf_counter() - t0
    spikes = {la.name: la.state.out.numpy().astype(bool) for la in net.layers
              if math.isfinite(la.neuron.params.threshold)}
    return SimResult(spikes, net.layers[-1].state.mem.numpy().astype(np.float64), logits.numpy(),
                     float(net.dt), int(net.T), net.layers[-1].name, {"run": secs})


def simulate_brian2(graph: Any, x: torch.Tensor, *, mode: str = "runtime",
                    cache_dir: str | Path | None = None) -> SimResult:
    """Run the graph in Brian2 on samples ``x`` [S, ...] (see module docstring)."""
    from bioplaus.simulators.brian2_runner import Brian2Runner

    net = _net(graph)
    if net.backend != "spiking":  # the runner states the spiking model's discrete LIF only
        from bioplaus.neurons import NotStatable

        raise NotStatable(f"simulate: the brian2 backend runs the spiking model's LIF only; this graph is "
                          f"a {net.backend} net (run it with --backend bioplaus)")
    T, dt, L = int(net.T), float(net.dt), len(net.layers)
    S = x.shape[0]
    xs = x.reshape(S, -1).double().numpy()
    layers = net.layers
    params = [la.neuron.params for la in layers]
    W = [la.synapse.weight.detach().double().numpy() for la in layers]
    B = [la.synapse.bias.detach().double().numpy() if la.synapse.bias is not None else None for la in layers]
    spike_input = net.encoder != "direct"
    lag = 1 if spike_input else 0  # the spike source adds one projection
    win = T + L - 1 + lag
    sim = Brian2Runner(dt, mode, cache_dir=cache_dir)
    for la, p in zip(layers, params):
        thr = p.threshold if math.isfinite(p.threshold) else None
        sim.add_population(la.name, la.n_out, tau=p.tau, threshold=thr, reset=p.reset)
    if spike_input:
        enc = net.encode(x.reshape(S, -1)).numpy().astype(bool)  # [T, S, D]
        src = np.zeros((S * win, enc.shape[2]), dtype=bool)
        for k in range(S):
            src[k * win:k * win + T] = enc[:, k]
        sim.add_spike_input("inp", src)
        sim.connect("inp", layers[0].name, W[0])
    else:
        cur = np.zeros((S * win, layers[0].n_out))
        c0 = xs @ W[0].T
        for k in range(S):
            cur[k * win:k * win + T] = c0[k]
        sim.add_current_input(layers[0].name, cur)
    for i, la in enumerate(layers):
        if i > 0:
            sim.connect(layers[i - 1].name, la.name, W[i])
        if B[i] is not None:  # a constant current during the layer's T steps of each window
            bc = np.zeros((S * win, la.n_out))
            for k in range(S):
                bc[k * win + i + lag:k * win + i + lag + T] = B[i]
            sim.add_current_input(la.name, bc)
        sim.record(la.name, spikes=True, v=la.is_output)
    res = sim.run(S * win, reset_every=win)
    spikes: dict[str, np.ndarray] = {}
    for i, la in enumerate(layers):
        if math.isfinite(la.neuron.params.threshold):
            spikes[la.name] = res.shifted(la.name, i + lag, T).transpose(1, 0, 2)  # [T, S, n]
    v = res.v[layers[-1].name].reshape(S, win, -1)[:, L - 1 + lag:L - 1 + lag + T]
    mem = v.transpose(1, 0, 2)
    if net.readout_kind == "mem_mean":
        logits = mem.mean(0)
    else:
        logits = spikes[layers[-1].name].mean(0).astype(np.float64)
    return SimResult(spikes, mem, logits, dt, T, layers[-1].name,
                     {"build": res.wall_build, "run": res.wall_run, "sim": res.wall_sim})


class Brian2(Simulator):
    """`simulate_brian2` as a registered simulator: modes runtime (Cython) | numpy | standalone."""

    def run(self, graph: Any, x: torch.Tensor, *, mode: str, cache_dir: Any = None) -> SimResult:
        return simulate_brian2(graph, x, mode=mode, cache_dir=cache_dir)

    def versions(self) -> str:
        try:
            import brian2

            return f"brian2 {brian2.__version__}"
        except ImportError:  # pragma: no cover
            return ""


class BioplausReference(Simulator):
    """`simulate_bioplaus` as a registered simulator; it takes the modes of the simulators it
    is compared with and ignores them."""

    def run(self, graph: Any, x: torch.Tensor, *, mode: str, cache_dir: Any = None) -> SimResult:
        return simulate_bioplaus(graph, x)


SIMULATORS.register("brian2", Brian2())
SIMULATORS.register("bioplaus", BioplausReference())
