"""NIR graphs in Brian2 (``bioplaus simulate GRAPH.nir --backend brian2``).

`simulate_brian2(graph, x, reading="graph")` (the default) builds the Brian2 network from the
graph's nodes as the NIR spec states them (`bioplaus.simulators.brian2_graph`), independent
of bioplaus's update. ``reading="bioplaus"`` replays bioplaus's own reading instead (the
discrete LIF of the ``spiking`` model with the conventions its metadata names: subtractive
delayed reset, input scale), as below; for a graph of a NIR-exact model the two readings
are the same, and it takes the graph reading.

The bioplaus replay: the graph is read and checked by `bioplaus.export.nir.from_nir` (the discrete weights, β,
θ, reset, T, encoder, readout); every layer becomes a population of the generic runner
(`bioplaus.simulators.brian2_runner`), every weight matrix a projection (a convolution
unrolled into its dense matrix; a max-pool of spikes a population of its own, see `_stages`). The input is
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioplaus.registry import SIMULATORS
from bioplaus.simulators.base import SimResult, Simulator
from bioplaus.simulators.brian2_graph import pool_matrix


def _net(graph: Any, dt: float | None = None, integration: str | None = None) -> Any:
    from bioplaus.export.nir import from_nir

    return from_nir(graph, dt=dt, integration=integration)


def simulate_bioplaus(graph: Any, x: torch.Tensor, *, dt: float | None = None, integration: str | None = None,
                      T: int | None = None, **_: Any) -> SimResult:
    """The reference: the graph rebuilt as a bioplaus net (`from_nir`, given ``dt`` and the
    rule where the metadata has none) and run on the torch backend."""
    net = _net(graph, dt, integration)
    if T is not None:
        net.T = net.cfg.spiking.T = int(T)
    t0 = time.perf_counter()
    net.eval()
    with torch.no_grad():
        logits = net(x.reshape(x.shape[0], *net.input_shape))
    secs = time.perf_counter() - t0
    # [T, S, n] per layer, a conv layer's (C, H, W) neurons flattened as for an MLP
    spikes = {la.name: la.state.out.reshape(*la.state.out.shape[:2], -1).numpy().astype(bool)
              for la in net.layers if math.isfinite(la.neuron.params.threshold)}
    return SimResult(spikes, net.layers[-1].state.mem.numpy().astype(np.float64), logits.numpy(),
                     float(net.dt), int(net.T), net.layers[-1].name, {"run": secs})


@dataclass
class _Stage:
    """One Brian2 population of the chain: a layer's neurons, or the max-pool after them."""

    name: str
    n: int
    tau: float
    threshold: float | None
    reset: str
    weight: np.ndarray  # [n, n_pre] dense, from the stage before (the input for the first)
    bias: np.ndarray | None  # [n] constant current
    layer: Any = None  # the bioplaus layer whose neurons these are (None: a pool stage)


def _dense(la: Any, in_shape: tuple[int, ...]) -> np.ndarray:
    """The synapse of ``la`` as a dense [n_out, n_in] matrix on flattened samples (a
    convolution unrolled: its response to each unit input, without the bias)."""
    syn = la.synapse
    if not la.is_conv:
        return syn.weight.detach().double().numpy()
    n_in = math.prod(in_shape)
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *in_shape)
    with torch.no_grad():
        out = torch.nn.functional.conv2d(eye, syn.weight.detach().double(), None, syn.stride, syn.padding,
                                         syn.dilation, syn.groups)
    return out.reshape(n_in, -1).T.numpy().copy()


def _stages(net: Any) -> list[_Stage]:
    """The chain of Brian2 populations for ``net``: one per layer, plus one per max-pool.

    Conv synapses become dense matrices; a sum / average pool of spikes is linear, so it is
    multiplied into the next synapse; a max-pool of spikes (max of 0/1 = H(Σ − ½)) is a
    population of its own that sums each window and fires when the sum is ≥ 1, without
    memory (β = e⁻⁴⁰) — one more projection, so one more step of delay to compensate.
    """
    stages: list[_Stage] = []
    shape = tuple(net.input_shape)
    carry: np.ndarray | None = None  # a linear pool waiting to be multiplied into the next synapse
    for la in net.layers:
        p = la.neuron.params
        w = _dense(la, shape)
        if carry is not None:
            w = w @ carry
            carry = None
        b = la.synapse.bias.detach().double().numpy() if la.synapse.bias is not None else None
        out_shape = tuple(la.state.out.shape[2:]) if la.is_conv else (la.n_out,)
        if b is not None and la.is_conv:
            b = np.repeat(b, math.prod(out_shape[1:]))
        thr = p.threshold if math.isfinite(p.threshold) else None
        stages.append(_Stage(la.name, math.prod(out_shape), p.tau, thr, p.reset, w, b, la))
        shape = out_shape
        if la.is_conv and la.pool > 1:
            k = la.pool
            pooled = (shape[0], shape[1] // k, shape[2] // k)
            if la.pool_kind == "max":
                stages.append(_Stage(f"{la.name}_maxpool", math.prod(pooled), p.dt / 40.0, 0.5, "zero",
                                     pool_matrix(shape, k, 1.0).toarray(), None))
            else:
                carry = pool_matrix(shape, k, 1.0 if la.pool_kind == "sum" else 1.0 / (k * k)).toarray()
            shape = pooled
    return stages


READINGS = ("graph", "bioplaus")


def simulate_brian2(graph: Any, x: torch.Tensor, *, mode: str = "runtime", cache_dir: str | Path | None = None,
                    dt: float | None = None, integration: str | None = None, T: int | None = None,
                    reading: str = "graph") -> SimResult:
    """Run the graph in Brian2 on samples ``x`` [S, ...] (see module docstring).

    ``reading="graph"``: as the NIR spec states the nodes, with ``dt``, ``integration`` and
    ``T`` given here or else the graph's metadata (`bioplaus.simulators.brian2_graph`);
    ``"bioplaus"``: bioplaus's discrete LIF replayed (``dt`` and ``integration`` as
    `from_nir` takes them)."""
    from bioplaus.errors import BioplausError
    from bioplaus.simulators.brian2_graph import simulate_graph

    if reading not in READINGS:
        raise BioplausError(f"simulate: reading {reading!r}; valid: {', '.join(READINGS)}")
    if reading == "graph":
        return simulate_graph(graph, x, mode=mode, cache_dir=cache_dir, dt=dt, integration=integration, T=T)
    from bioplaus.neurons import LIFModel, neuron_model
    from bioplaus.simulators.brian2_runner import Brian2Runner

    net = _net(graph, dt=dt, integration=integration)
    if neuron_model(net.backend) is not LIFModel:  # a NIR-exact model: bioplaus reads the graph as the spec
        return simulate_graph(graph, x, mode=mode, cache_dir=cache_dir, dt=dt, integration=integration, T=T)
    if T is not None:
        net.T = net.cfg.spiking.T = int(T)
    T, dt = int(net.T), float(net.dt)
    S = x.shape[0]
    with torch.no_grad():  # one step of zeros through the layers fixes every layer's output shape
        h = torch.zeros(1, 1, *net.input_shape)  # (not through the encoder: its generator stays put)
        for la in net.layers:
            h = la(h)
    stages = _stages(net)
    L = len(stages)
    xs = x.reshape(S, -1).double().numpy()
    spike_input = net.encoder != "direct"
    lag = 1 if spike_input else 0  # the spike source adds one projection
    win = T + L - 1 + lag
    sim = Brian2Runner(dt, mode, cache_dir=cache_dir)
    for st in stages:
        sim.add_population(st.name, st.n, tau=st.tau, threshold=st.threshold, reset=st.reset)
    first = stages[0]
    if spike_input:
        enc = net.encode(x.reshape(S, -1)).numpy().astype(bool)  # [T, S, D]
        src = np.zeros((S * win, enc.shape[2]), dtype=bool)
        for k in range(S):
            src[k * win:k * win + T] = enc[:, k]
        sim.add_spike_input("inp", src)
        sim.connect("inp", first.name, first.weight)
    else:
        cur = np.zeros((S * win, first.n))
        c0 = xs @ first.weight.T
        for k in range(S):
            cur[k * win:k * win + T] = c0[k]
        sim.add_current_input(first.name, cur)
    for i, st in enumerate(stages):
        if i > 0:
            sim.connect(stages[i - 1].name, st.name, st.weight)
        if st.bias is not None:  # a constant current during the stage's T steps of each window
            bc = np.zeros((S * win, st.n))
            for k in range(S):
                bc[k * win + i + lag:k * win + i + lag + T] = st.bias
            sim.add_current_input(st.name, bc)
        sim.record(st.name, spikes=True, v=i == L - 1)
    res = sim.run(S * win, reset_every=win)
    spikes: dict[str, np.ndarray] = {}
    for i, st in enumerate(stages):
        if st.layer is not None and st.threshold is not None:
            spikes[st.name] = res.shifted(st.name, i + lag, T).transpose(1, 0, 2)  # [T, S, n]
    last = stages[-1].name
    v = res.v[last].reshape(S, win, -1)[:, L - 1 + lag:L - 1 + lag + T]
    mem = v.transpose(1, 0, 2)
    if net.readout_kind == "mem_mean":
        logits = mem.mean(0)
    else:
        logits = spikes[last].mean(0).astype(np.float64)
    return SimResult(spikes, mem, logits, dt, T, last,
                     {"build": res.wall_build, "run": res.wall_run, "sim": res.wall_sim})


class Brian2(Simulator):
    """`simulate_brian2` as a registered simulator: modes runtime (Cython) | numpy | standalone."""

    def run(self, graph: Any, x: torch.Tensor, *, mode: str, cache_dir: Any = None, **options: Any) -> SimResult:
        return simulate_brian2(graph, x, mode=mode, cache_dir=cache_dir, **options)

    def versions(self) -> str:
        try:
            import brian2

            return f"brian2 {brian2.__version__}"
        except ImportError:  # pragma: no cover
            return ""


class BioplausReference(Simulator):
    """`simulate_bioplaus` as a registered simulator; it takes the modes of the simulators it
    is compared with and ignores them."""

    def run(self, graph: Any, x: torch.Tensor, *, mode: str, cache_dir: Any = None, **options: Any) -> SimResult:
        options.pop("reading", None)  # the reference is bioplaus's reading
        return simulate_bioplaus(graph, x, **options)


SIMULATORS.register("brian2", Brian2())
SIMULATORS.register("bioplaus", BioplausReference())
