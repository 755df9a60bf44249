"""NIR graphs (neuromorphic intermediate representation) from and to spiking nets.

Written with the ``nir`` package directly. The discrete LIF of the spiking backend,
v_t = β v_{t-1} + I_t − θ r_t, is the Euler step of NIR's continuous LIF
τ dv/dt = (v_leak − v) + R I with

    τ = dt / (1 − β),   R = τ / dt,   v_leak = 0,   v_threshold = θ,

so that v ← v + (dt/τ)(−v + R I) = β v + I. NIR has no subtractive reset and no notion of the
one-step reset delay, so the graph's metadata carries what a simulator needs to reproduce the
run exactly: ``dt`` (s), ``T``, ``reset`` ("subtract" | "zero"), ``reset_delay`` (true),
``readout``, ``encoder`` and the bioplaus version. The output layer is an ``LIF`` node, or an
``LI`` node (leaky integrator) when it does not fire.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioplaus.config import NetworkConfig, SpikingConfig
from bioplaus.errors import BioplausError
from bioplaus.nets import Net, build_net


def _lif_params(layer: Any, dt: float) -> tuple[float, float]:
    p = layer.neuron.params
    tau = dt / (1.0 - p.beta)
    return tau, tau / dt


def to_nir(net: Net) -> Any:
    """The NIR graph of a spiking ``Net`` (MLP; conv layers without max-pool)."""
    import nir

    if not net.temporal:
        raise BioplausError("export: NIR describes spiking nets; this net is on the rate backend")
    dt = float(net.dt)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(net.input_shape)})}
    edges: list[tuple[str, str]] = []
    prev = "input"
    shape = tuple(net.input_shape)
    for la in net.layers:
        i = la.index
        if la.is_conv:
            if la.pool > 1:
                raise BioplausError(
                    f"export: {la.name} max-pools its spikes, and NIR 1.0 has no max-pool node"
                )
            conv = la.synapse
            bias = conv.bias.detach().numpy() if conv.bias is not None else np.zeros(conv.out_channels)
            nodes[f"syn{i}"] = nir.Conv2d(
                input_shape=np.array(shape[1:]), weight=conv.weight.detach().numpy(),
                stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                groups=conv.groups, bias=bias,
            )
            shape = (conv.out_channels, *shape[1:])
        else:
            if len(shape) > 1:
                nodes[f"flat{i}"] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0)
                edges.append((prev, f"flat{i}"))
                prev = f"flat{i}"
                shape = (int(math.prod(shape)),)
            lin = la.synapse
            w = lin.weight.detach().numpy()
            if lin.bias is not None:
                nodes[f"syn{i}"] = nir.Affine(weight=w, bias=lin.bias.detach().numpy())
            else:
                nodes[f"syn{i}"] = nir.Linear(weight=w)
            shape = (lin.out_features,)
        edges.append((prev, f"syn{i}"))
        tau, r = _lif_params(la, dt)

        def full(v: float, n_shape: tuple[int, ...] = shape) -> np.ndarray:
            return np.full(n_shape, v, dtype=np.float32)

        thr = la.neuron.params.threshold
        if math.isfinite(thr):
            nodes[f"lif{i}"] = nir.LIF(tau=full(tau), r=full(r), v_leak=full(0.0), v_threshold=full(thr),
                                       v_reset=full(0.0))
        else:
            nodes[f"lif{i}"] = nir.LI(tau=full(tau), r=full(r), v_leak=full(0.0))
        edges.append((f"syn{i}", f"lif{i}"))
        prev = f"lif{i}"
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((prev, "output"))
    s = net.cfg.spiking
    from bioplaus import __version__

    meta = {
        "producer": f"bioplaus {__version__}",
        "dt": dt,
        "T": int(net.T),
        "reset": s.reset,
        "reset_delay": True,
        "surrogate": s.surrogate,
        "readout": s.readout,
        "encoder": s.encoder,
        "n_classes": int(net.n_classes),
    }
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def export_nir(net: Net, path: str | Path) -> Path:
    """Write the NIR graph of ``net`` to ``path`` (HDF5, as ``nir.write`` does)."""
    import nir

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(path, to_nir(net))
    return path


def _meta(graph: Any, key: str, default: Any) -> Any:
    v = graph.metadata.get(key, default)
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.ndarray):
        v = v.item()
    return v


def from_nir(graph: Any) -> Net:
    """A spiking ``Net`` (MLP) rebuilt from a NIR graph written by :func:`to_nir`."""
    import nir

    if isinstance(graph, str | Path):
        graph = nir.read(graph)
    dt = float(_meta(graph, "dt", 1e-3))
    order, cur = [], "input"
    nxt = {a: b for a, b in graph.edges}
    while cur in nxt:
        cur = nxt[cur]
        order.append(cur)
    syn = [graph.nodes[n] for n in order if n.startswith("syn")]
    neu = [graph.nodes[n] for n in order if n.startswith("lif")]
    if any(not isinstance(s, nir.Linear | nir.Affine) for s in syn):
        raise BioplausError("import: only Linear/Affine synapses can be rebuilt as a bioplaus MLP")
    # invert τ_nir = dt / (1 − β) to the backend's τ, β = exp(−dt/τ)
    beta = 1.0 - dt / float(np.asarray(neu[0].tau).flat[0])
    tau = -dt / math.log(beta)
    thr = float(np.asarray(neu[0].v_threshold).flat[0]) if isinstance(neu[0], nir.LIF) else 1.0
    out_spikes = isinstance(neu[-1], nir.LIF)
    bias = isinstance(syn[0], nir.Affine)
    in_shape = tuple(int(v) for v in np.asarray(graph.nodes["input"].input_type["input"]))
    hidden = [int(s.weight.shape[0]) for s in syn[:-1]]
    cfg = NetworkConfig(
        backend="spiking", arch="mlp", hidden=hidden, bias=bias,
        spiking=SpikingConfig(
            T=int(_meta(graph, "T", 20)), dt=dt, tau=tau, threshold=thr,
            reset=str(_meta(graph, "reset", "subtract")), surrogate=str(_meta(graph, "surrogate", "atan")),
            readout=str(_meta(graph, "readout", "mem_mean")), encoder=str(_meta(graph, "encoder", "direct")),
            output_spikes=out_spikes,
        ),
    )
    net = build_net(cfg, in_shape, int(syn[-1].weight.shape[0]))
    with torch.no_grad():
        for la, s in zip(net.layers, syn):
            la.synapse.weight.copy_(torch.as_tensor(np.asarray(s.weight)))
            if bias:
                la.synapse.bias.copy_(torch.as_tensor(np.asarray(s.bias)))
    return net


def load_net(run_path: str | Path) -> Net:
    """The trained net saved in a run file (``/model/net``), rebuilt from the run's config."""
    from bioplaus.config import load_config
    from bioplaus.record import open_run

    with open_run(run_path) as run:
        cfg = load_config(run.config)
        shape = run.attrs.get("input_shape")
        n_classes = run.attrs.get("n_classes")
        if shape is None or n_classes is None:
            raise BioplausError(f"{run_path}: the run file records no input shape / class count")
        state = {}
        for key in run.model_keys("net"):
            state[key] = torch.as_tensor(np.asarray(run.array(f"/model/net/{key}")))
    if not state:
        raise BioplausError(f"{run_path}: no saved model (record.save_model was off or the run did not finish)")
    net = build_net(cfg.network, tuple(int(v) for v in shape), int(n_classes), seed=cfg.seed)
    net.load_state_dict(state)
    return net
