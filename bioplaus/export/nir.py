"""NIR graphs (neuromorphic intermediate representation) from and to spiking nets.

Written with the ``nir`` package directly; each layer's neuron model states its own node
(`bioplaus.neurons.NeuronModel.nir`). The discrete LIF (``network.backend = "spiking"``),

    v_t = β v_{t-1} + I_t − θ r_t,   r_t = H(v_{t-1} − θ),   s_t = H(v_t − θ),

is written as NIR's continuous LIF τ dv/dt = (v_leak − v) + r·I with (``integration``):

    "euler" (default)  τ = dt / (1 − β)   one forward-Euler step of dt gives β v + (1 − β) I'
    "exact"            τ = −dt / ln β     the exact (zero-order-hold) step gives the same

and, in both, r = 1, v_leak = 0, v_threshold = θ and the synapse weights (and biases)
multiplied by the input scale 1 / (1 − β), so that (1 − β) W' x = W x: a reader that
integrates the node the stated way reproduces β v + W x, and a reader that ignores ``r``
(Norse) is not misled. NIR 1.0.8 has neither a timestep nor a subtractive reset, so the
node says ``v_reset = 0`` (what a reader that only knows reset-to-value should do) and the
node's and the graph's metadata say ``reset`` ("subtract" | "zero") and ``reset_delay``
(true: the reset acts on the step after the spike). The graph metadata holds ``dt`` (s),
``T``, ``integration``, ``beta``, ``input_scale``, ``reset``, ``readout``,
``output_spikes``, ``encoder``, ``input_shape``, ``n_classes`` and the producer.

The readout is in the graph: with ``readout = "mem_mean"`` the output layer is an ``LI``
node (leaky integrator) whose membrane, averaged over T, is the logits; a peer's argmax of
its output summed over time is the class. That is exact when the output layer does not fire
(``output_spikes = false``); when it fires, bioplaus's output membrane also loses θ per
spike, which the LI node does not (``output_spikes`` in the metadata says which; see
docs/export.md for how often the class differs). ``readout = "spike_count"`` keeps the
output ``LIF`` node.

MLP graphs take the flattened sample: the Input node declares ``(D,)`` and there is no
Flatten node (NIR's unbatched ``Flatten(start_dim=0)`` becomes ``nn.Flatten(0)`` in the
torch peers, which flattens the batch away); the original sample shape is in
``metadata.input_shape``. Conv graphs keep the spec's ``Flatten(start_dim=0)``; a conv
block's max-pool of spikes is ``SumPool2d`` → ``Threshold(0.5)`` (max of 0/1 values =
H(Σ − ½); NIR has no max-pool node). `from_nir` reads conv graphs in the shapes bioplaus
and peers write (structure in `bioplaus.export.nir_layers`). `spec_notes` / `truth_line`
say which nodes need bioplaus's conventions (printed at export and by ``bioplaus inspect
GRAPH.nir``).
Weights are stored in float64 so that bioplaus's reader recovers the float32 weights
bit for bit after dividing by the input scale.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioplaus.config import NetworkConfig, SpikingConfig, check_choice
from bioplaus.errors import BioplausError, ConfigError, NIRFileError, RunFileError
from bioplaus.export import nir_layers
from bioplaus.nets import Net, build_net, conv_out
from bioplaus.neurons.lif import INTEGRATIONS, LIFModel, LIFParams, nir_beta


def to_nir(net: Net, *, integration: str | None = None, li_readout: bool = True,
           extra_metadata: dict[str, Any] | None = None, fold_r: bool | None = None) -> Any:
    """The NIR graph of a spiking ``Net`` (MLP or CNN; max-pool as SumPool2d → Threshold).

    ``integration`` ("euler" | "exact") is the rule the node parameters are computed for
    (module docstring; default `trained_integration`); ``li_readout=False`` keeps a firing output layer as a LIF node
    (its spikes, not its membrane, leave the graph); ``extra_metadata`` is merged into the graph metadata (e.g. the data
    set a run was trained on). ``fold_r`` (default: on for ``lif_nir`` and ``cuba_lif`` nets, off
    for the others) writes the leaky nodes with r = 1 and r in the synapses
    (`bioplaus.export.nir_exact.fold_r`, exact by the spec; the metadata then says ``r_folded``);
    ``False`` keeps the model's r in the nodes. The discrete LIF's nodes have r = 1 already.
    """
    import nir

    if integration is None:
        integration = trained_integration(net)
    if integration not in INTEGRATIONS:
        raise BioplausError(f"export: integration {integration!r}; valid: {', '.join(INTEGRATIONS)}")
    dt = float(net.dt)
    s = net.cfg.spiking
    has_conv = any(la.is_conv for la in net.layers)
    in_shape = tuple(net.input_shape) if has_conv else (int(math.prod(net.input_shape)),)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(in_shape)})}
    edges: list[tuple[str, str]] = []
    prev = "input"
    shape = in_shape
    model_meta: dict[str, Any] | None = None
    for la in net.layers:
        i = la.index
        syn = la.synapse
        out_shape = (syn.out_channels, *(conv_out(n, d * (k - 1) + 1, pd, st) for n, k, pd, st, d in zip(
            shape[1:], syn.kernel_size, syn.padding, syn.stride, syn.dilation))) if la.is_conv else (syn.out_features,)
        # the layer's neuron model states its node (NotStatable, a BioplausError, if it cannot)
        neuron = la.neuron.model.nir(la.neuron.params, out_shape, integration=integration,
                                     li_readout=la.is_output and li_readout and s.readout == "mem_mean")
        if model_meta is None:
            model_meta = neuron.metadata
        scale = neuron.input_scale
        w = syn.weight.detach().numpy().astype(np.float64) * scale
        b = syn.bias.detach().numpy().astype(np.float64) * scale if syn.bias is not None else None
        if la.is_conv:
            nodes[f"syn{i}"] = nir.Conv2d(
                input_shape=np.array(shape[1:]), weight=w,
                stride=syn.stride, padding=syn.padding, dilation=syn.dilation,
                groups=syn.groups, bias=b if b is not None else np.zeros(syn.out_channels),
            )
        else:
            if len(shape) > 1:
                nodes[f"flat{i}"] = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0)
                edges.append((prev, f"flat{i}"))
                prev = f"flat{i}"
                shape = (int(math.prod(shape)),)
            nodes[f"syn{i}"] = nir.Affine(weight=w, bias=b) if b is not None else nir.Linear(weight=w)
        shape = out_shape
        edges.append((prev, f"syn{i}"))
        name = f"{neuron.kind}{i}"
        nodes[name] = neuron.node
        edges.append((f"syn{i}", name))
        prev = name
        if la.is_conv and la.pool > 1:
            prev, shape = _pool_nodes(nodes, edges, prev, i, la.pool, la.pool_kind, shape)
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((prev, "output"))
    from bioplaus import __version__

    meta = {
        "producer": f"bioplaus {__version__}",
        "dt": dt,
        "T": int(net.T),
        **(model_meta or {}),
        "readout": s.readout,
        "output_spikes": bool(s.output_spikes),
        "encoder": s.encoder,
        "n_classes": int(net.n_classes),
        "input_shape": [int(v) for v in net.input_shape],
    }
    if s.encoder == "poisson" and s.max_rate is not None:
        meta["max_rate"] = float(s.max_rate)
    meta.update(extra_metadata or {})
    from bioplaus.export import nir_exact

    model = (model_meta or {}).get("neuron_model")
    if fold_r is None:
        fold_r = model in nir_exact.FOLDED_MODELS
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)
    if not fold_r or model not in nir_exact.FOLDED_MODELS:  # if_nir: IF nodes keep r (fold_r's docstring)
        return graph
    try:
        graph = nir_exact.fold_r(graph)
    except NIRFileError as exc:  # cannot happen for a bioplaus chain; a one-line error if it does
        raise BioplausError(f"export: {exc}") from None
    graph.metadata["r_folded"] = True
    return graph


def _pool_nodes(nodes: dict[str, Any], edges: list[tuple[str, str]], prev: str, i: int, k: int,
                kind: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """A conv block's pooling of its spikes as NIR states it (k×k windows, stride k, no padding).

    NIR 1.0 has no max-pool node; on spikes (values 0 or 1 in a step) the maximum of a
    window is 1 exactly when its sum is ≥ 1, so max = H(Σ − ½): ``pool<i>`` (``SumPool2d``)
    sums, ``max<i>`` (``Threshold`` 0.5) thresholds. Sum and average pools (nets read from
    a peer's graph) are their own nodes. Returns the last node and its shape.
    """
    import nir

    out = (shape[0], shape[1] // k, shape[2] // k)
    pool_cls = nir.AvgPool2d if kind == "avg" else nir.SumPool2d
    nodes[f"pool{i}"] = pool_cls(kernel_size=np.array([k, k]), stride=np.array([k, k]), padding=np.array([0, 0]))
    edges.append((prev, f"pool{i}"))
    if kind != "max":
        return f"pool{i}", out
    nodes[f"max{i}"] = nir.Threshold(threshold=np.full(out, 0.5))
    edges.append((f"pool{i}", f"max{i}"))
    return f"max{i}", out


def export_nir(net: Net, path: str | Path, *, integration: str | None = None, li_readout: bool = True,
               extra_metadata: dict[str, Any] | None = None, fold_r: bool | None = None) -> Path:
    """Write the NIR graph of ``net`` to ``path`` (HDF5, as ``nir.write`` does; options as `to_nir`)."""
    import nir

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = to_nir(net, integration=integration, li_readout=li_readout, extra_metadata=extra_metadata, fold_r=fold_r)
    try:
        nir.write(path, graph)
    except OSError as exc:
        raise BioplausError(f"{path}: cannot write the NIR file ({exc})") from None
    return path


def trained_integration(net: Net) -> str:
    """The integration rule ``net`` was trained with, the default of `to_nir`.

    A neuron model whose parameters (or ``[network.spiking]``) name an ``integration`` was
    trained with it. The discrete LIF (``network.backend = "spiking"``) names none: its update
    β v + I with β = exp(−dt/τ) is reproduced exactly by either reading of its graph (the
    τ written differs), so it keeps "euler", the rule of every graph exported so far.
    """
    for la in net.layers:
        rule = getattr(getattr(la.neuron, "params", None), "integration", None)
        if rule in INTEGRATIONS:
            return str(rule)
    rule = getattr(net.cfg.spiking, "integration", None)
    return str(rule) if rule in INTEGRATIONS else "euler"


def spec_notes(graph: Any) -> list[str]:
    """What a reader that follows only the NIR spec would get wrong, one item per convention.

    Each item names its nodes: a LIF node whose ``reset`` (node or graph metadata) is
    "subtract" (NIR's LIF sets v ← v_reset at once; bioplaus subtracts θ on the next step);
    LIF/LI nodes of a bioplaus graph written for ``integration = "euler"`` (τ = dt / (1 − β)
    gives bioplaus's decay only to a forward-Euler reader at that dt; an exact reader decays
    by exp(−dt/τ)); an ``LI`` readout whose bioplaus layer fires (``output_spikes``: it also
    loses θ per spike); a non-direct ``encoder`` (the graph has no encoder node). Empty: the
    graph means what the spec says (read at the metadata's dt; SumPool2d → Threshold is
    max-pool exactly on 0/1 spikes, so it needs no note).
    """
    import nir

    meta = graph.metadata if isinstance(getattr(graph, "metadata", None), dict) else {}
    src = "NIR graph"
    if not str(_meta(graph, "producer", "", src)).startswith("bioplaus"):
        return []
    dt = _meta(graph, "dt", None, src)
    rule = _meta(graph, "integration", "euler", src)
    groups: dict[str, list[str]] = {}

    def add(note: str, name: str) -> None:
        groups.setdefault(note, []).append(name)

    try:
        names = _chain(graph, src)
    except NIRFileError:
        names = list(graph.nodes)
    for name in names:
        node = graph.nodes[name]
        if not isinstance(node, nir.LIF | nir.LI):
            continue
        nmeta = node.metadata if isinstance(getattr(node, "metadata", None), dict) else {}
        if isinstance(node, nir.LIF):
            reset = nmeta.get("reset", meta.get("reset"))
            reset = reset.decode() if isinstance(reset, bytes) else reset
            if str(reset) == "subtract":
                add("reset subtracts v_threshold one step after the spike (the spec's LIF sets v to "
                    "v_reset at once)", name)
        elif bool(_meta(graph, "output_spikes", False, src)):
            add("bioplaus's output layer also fires and loses v_threshold per spike (an LI node "
                "only integrates)", name)
        tau = np.asarray(getattr(node, "tau", np.zeros(0)), dtype=np.float64).ravel()
        if rule == "euler" and isinstance(dt, int | float) and tau.size and np.isfinite(tau[0]) and tau[0] > dt > 0:
            t0 = float(tau[0])
            add(f"tau = {t0 * 1e3:.4g} ms is forward Euler's for dt = {dt * 1e3:g} ms (an exact-ODE reader "
                f"decays by {math.exp(-dt / t0):.4f} per step, bioplaus by {1 - dt / t0:.4f})", name)
    items = [f"{', '.join(names)}: {note}" for note, names in groups.items()]
    enc = _meta(graph, "encoder", "direct", src)
    if enc not in ("direct", None):
        items.append(f"input: bioplaus feeds {enc} spikes of the sample (metadata encoder); the graph "
                     "has no encoder node")
    return items


def truth_line(graph: Any) -> str:
    """One line: whether ``graph`` means what the NIR spec says, else every convention it needs."""
    notes = spec_notes(graph)
    if not notes:
        return ("plain NIR: every node means what the spec says (read with the metadata's dt; spikes are "
                "values 1 for one step)")
    return "needs bioplaus's conventions: " + "; ".join(notes)


def describe_nir(path: str | Path) -> str:
    """``bioplaus inspect GRAPH.nir``: the chain of nodes, the metadata that drives it, the
    truth line, and whether (as what) bioplaus can rebuild it."""
    graph = read_nir(path)
    src = str(path)
    lines = [f"{path}: NIR graph by {_meta(graph, 'producer', 'an unnamed producer', src)}, "
             f"{len(graph.nodes)} nodes"]
    try:
        order = _chain(graph, src)
    except NIRFileError as exc:
        order = list(graph.nodes)
        lines.append(f"  not a chain: {exc}")
    parts = []
    for name in order:
        node = graph.nodes[name]
        kind = type(node).__name__
        shape = getattr(node, "weight", None)
        if shape is None:
            shape = getattr(node, "tau", None)
        dims = f" {tuple(int(v) for v in np.shape(shape))}" if shape is not None and np.ndim(shape) else ""
        parts.append(f"{name} {kind}{dims}")
    lines.append("  " + " → ".join(parts))
    keys = [k for k in ("dt", "T", "integration", "reset", "readout", "output_spikes", "encoder", "dataset")
            if isinstance(graph.metadata, dict) and k in graph.metadata]
    if keys:
        lines.append("  " + ", ".join(f"{k} = {_meta(graph, k, None, src)}" for k in keys))
    lines.append("  " + truth_line(graph))
    try:
        lines.append(f"  bioplaus reads it as: {from_nir(graph).describe()}")
    except BioplausError as exc:
        lines.append(f"  bioplaus cannot rebuild it: {exc}")
    return "\n".join(lines)


# Most bytes of datasets a NIR file may hold (``nir.read`` loads them all).
MAX_NIR_BYTES = 1 << 30
# Longest simulation (time steps) a rebuilt net accepts from a file's metadata.
MAX_T = 1_000_000
_SUPPORTED = ("Input, Flatten, Linear, Affine, Conv2d, SumPool2d, AvgPool2d, SumPool2d→Threshold (max-pool), "
              "LIF, LI (last), Output")


def read_nir(path: str | Path) -> Any:
    """Read a NIR file after checking it as untrusted HDF5 (see ``bioplaus.record._untrusted``).

    ``nir.read`` follows links, reads external storage and loads every dataset whole; so the
    file is walked first: only hard links, no external or virtual storage, declared sizes
    backed by stored bytes, at most ``MAX_NIR_BYTES`` in all. Any failure of ``nir.read``
    itself becomes one `NIRFileError` line.
    """
    import h5py
    import nir

    from bioplaus.record import _untrusted as u
    from bioplaus.record._superblock import looping_global_heap

    p = Path(path)
    if not p.is_file():
        raise NIRFileError(f"{p}: no such NIR file")
    heap = looping_global_heap(p)
    if heap is not None:
        raise NIRFileError(f"{p}: not a NIR file (corrupt HDF5: the global heap at byte {heap} has an "
                           "object of size 0, which HDF5 would read forever)")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise NIRFileError(f"{p}: not a NIR file (HDF5 cannot open it: {exc})") from None
    with f:
        u.check_tree(f, str(p), NIRFileError, read_cap=MAX_NIR_BYTES)
        if not isinstance(u.get(f, "node", str(p), NIRFileError), h5py.Group):
            raise NIRFileError(f"{p}: not a NIR file (no /node group)")
    try:
        with warnings.catch_warnings():
            # nir's shape arithmetic on hostile values (a zero stride) warns, then fails: one line
            warnings.simplefilter("error", RuntimeWarning)
            return nir.read(p, type_check=False)
    except Exception as exc:  # noqa: BLE001 - a third-party parser of untrusted input
        raise NIRFileError(f"{p}: not a readable NIR graph ({type(exc).__name__}: {exc})") from None


def _meta(graph: Any, key: str, default: Any, src: str) -> Any:
    meta = graph.metadata if isinstance(getattr(graph, "metadata", None), dict) else {}
    v = meta.get(key, default)
    if isinstance(v, np.ndarray):
        if v.size != 1:
            raise NIRFileError(f"{src}: metadata {key}: expected one value, got shape {v.shape}")
        v = v.reshape(()).item()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bytes):
        try:
            v = v.decode()
        except UnicodeDecodeError:
            raise NIRFileError(f"{src}: metadata {key}: text is not UTF-8") from None
    return v


def _array(src: str, name: str, node: Any, attr: str, shape: tuple[int, ...] | None,
           broadcast: bool = False) -> np.ndarray:
    """A finite float parameter of a node, of ``shape`` (any shape if None)."""
    value = getattr(node, attr, None)
    if value is None:
        raise NIRFileError(f"{src}: node {name!r}: no {attr}")
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise NIRFileError(f"{src}: node {name!r}: {attr} is not numeric (dtype {arr.dtype.str})")
    arr = arr.astype(np.float64)
    if broadcast and shape is not None and arr.size == 1 and arr.shape != shape:  # one value for all (snntorch)
        arr = np.full(shape, arr.reshape(()).item())
    if shape is not None and arr.shape != shape:
        raise NIRFileError(f"{src}: node {name!r}: {attr} has shape {arr.shape}, expected {shape}")
    if not np.isfinite(arr).all():
        raise NIRFileError(f"{src}: node {name!r}: {attr} holds NaN or inf")
    return arr


def _chain(graph: Any, src: str) -> list[str]:
    """Node names from the Input to the Output node; the graph must be exactly that chain."""
    import nir

    nodes, edges = getattr(graph, "nodes", None), getattr(graph, "edges", None)
    if not isinstance(nodes, dict) or not nodes:
        raise NIRFileError(f"{src}: the graph has no nodes")
    if edges is None or len(edges) == 0:
        raise NIRFileError(f"{src}: the graph has no edges")
    pairs: list[tuple[str, str]] = []
    for edge in edges:
        if not isinstance(edge, tuple | list) or len(edge) != 2 or not all(isinstance(e, str) for e in edge):
            raise NIRFileError(f"{src}: edge {edge!r} is not a pair of node names")
        a, b = str(edge[0]), str(edge[1])
        for end in (a, b):
            if end not in nodes:
                raise NIRFileError(f"{src}: edge ({a!r}, {b!r}) refers to unknown node {end!r}")
        if (a, b) in pairs:
            raise NIRFileError(f"{src}: duplicate edge ({a!r}, {b!r})")
        pairs.append((a, b))
    for kind in (nir.Input, nir.Output):
        found = [k for k, v in nodes.items() if isinstance(v, kind)]
        if len(found) != 1:
            raise NIRFileError(f"{src}: expected one {kind.__name__} node, found {len(found)}")
    # Kahn's algorithm: whatever keeps an incoming edge is on a cycle.
    indegree = dict.fromkeys(nodes, 0)
    succ: dict[str, list[str]] = {k: [] for k in nodes}
    for a, b in pairs:
        indegree[b] += 1
        succ[a].append(b)
    ready = [k for k, d in indegree.items() if d == 0]
    while ready:
        for b in succ[ready.pop()]:
            indegree[b] -= 1
            if indegree[b] == 0:
                ready.append(b)
    cyclic = sorted(k for k, d in indegree.items() if d > 0)
    if cyclic:
        raise NIRFileError(f"{src}: the edges form a cycle through {', '.join(map(repr, cyclic[:4]))}")
    n_in = {k: 0 for k in nodes}
    for _, b in pairs:
        n_in[b] += 1
    for k in nodes:
        if len(succ[k]) > 1 or n_in[k] > 1:
            raise NIRFileError(f"{src}: node {k!r} branches; only a chain from input to output "
                               "can be rebuilt as a bioplaus MLP")
    cur = next(k for k, v in nodes.items() if isinstance(v, nir.Input))
    order = [cur]
    while succ[cur]:
        cur = succ[cur][0]
        order.append(cur)
    if not isinstance(nodes[cur], nir.Output):
        raise NIRFileError(f"{src}: the path from the input ends at {cur!r}, not at the output")
    stray = sorted(set(nodes) - set(order))
    if stray:
        raise NIRFileError(f"{src}: node {stray[0]!r} is not on the path from input to output")
    return order


def unsupported(src: str, name: str, node: Any, expected: str) -> NIRFileError:
    """One line naming a node bioplaus cannot rebuild."""
    return NIRFileError(f"{src}: node {name!r}: unsupported node {type(node).__name__} where "
                        f"{expected} was expected (bioplaus reads {_SUPPORTED})")


def graph_arg(graph: Any) -> tuple[Any, str]:
    """A NIR graph given as a ``nir.NIRGraph`` or a file path: (the graph, how messages name
    it); anything else is one `NIRFileError` line."""
    import nir

    src = "NIR graph"
    if isinstance(graph, str | Path):
        src = str(graph)
        graph = read_nir(graph)
    if not isinstance(graph, nir.NIRGraph):
        raise NIRFileError(f"{src}: expected a nir.NIRGraph, got {type(graph).__name__}")
    return graph, src


def from_nir(graph: Any, *, dt: float | None = None, reset: str | None = None, model: str | None = None,
             integration: str | None = None) -> Net:
    """A spiking ``Net`` (MLP) rebuilt from a NIR graph, by bioplaus or by a peer exporter.

    ``graph`` is a ``nir.NIRGraph`` or the path of a NIR file (read with `read_nir`). The
    graph must be a chain input → [Flatten] → (Linear|Affine → LIF)* → LIF|LI → output,
    with finite parameters of matching shapes, one τ and one threshold for every neuron,
    r > 0, v_leak = 0 and v_reset = 0. Anything else raises `NIRFileError` naming the node
    or field (one line).

    The time step is the metadata's ``dt``; else ``dt`` given here; else, for a node written
    with r = τ/dt (snntorch's exporter, bioplaus before 0.x), τ/r; else 1 ms. Each LIF node
    is read with the metadata's ``integration`` (default "euler"): β = 1 − dt/τ (euler) or
    exp(−dt/τ) (exact), and a synapse's weights are multiplied by r (1 − β), which undoes the
    input scale bioplaus writes. The reset is the metadata's (bioplaus graphs) or, for other
    graphs, what the node says: reset to v_reset = 0 ("zero"; the same spikes whether the
    reset acts at once or on the next step). ``reset`` overrides it for a graph whose
    producer resets otherwise without saying so (snntorch's ``Leaky`` subtracts).

    A graph of a NIR-exact model (metadata ``neuron_model``, or ``model`` given, or IF /
    CubaLIF / CubaLI nodes) is rebuilt as that model instead, its nodes' parameters as they
    are, MLP or conv (`bioplaus.export.nir_exact`, same structural reader). ``integration`` ("euler" | "exact") overrides the
    rule the metadata states.
    """
    import nir

    graph, src = graph_arg(graph)
    order = _chain(graph, src)
    # -- NIR-exact neuron models (lif_nir, if_nir, cuba_lif): their own reader -------------
    from bioplaus.export.nir_exact import claimant, from_nir_exact

    exact_model = claimant(graph, order, model, src, _meta)
    if exact_model is not None:
        return from_nir_exact(graph, order, src, model=exact_model, dt=dt, integration=integration,
                              meta=_meta, max_t=MAX_T)
    # -- the spiking model's LIF ------------------------------------------------------------
    nodes = graph.nodes
    # -- structure (bioplaus.export.nir_layers): synapses, pooling, Flatten ----------------
    in_shape = _input_shape(graph, order[0], src)
    blocks = nir_layers.blocks(graph, order[1:-1], in_shape, src)
    if not blocks:
        raise NIRFileError(f"{src}: expected synapse/neuron pairs between input and output ({_SUPPORTED})")
    if blocks[-1].conv is not None or blocks[-1].pool > 1:
        raise NIRFileError(f"{src}: node {blocks[-1].syn!r}: the last synapse must be Linear/Affine "
                           "(its neurons are the classes)")
    has_conv = any(b.conv is not None for b in blocks)
    neu_names = [b.neuron for b in blocks]
    # -- neuron nodes ------------------------------------------------------------------------
    for i, k in enumerate(neu_names):
        allowed = (nir.LIF, nir.LI) if i == len(neu_names) - 1 else (nir.LIF,)
        if not isinstance(nodes[k], nir.LIF | nir.LI):
            raise unsupported(src, k, nodes[k], "a LIF/LI neuron")
        if not isinstance(nodes[k], allowed):
            raise NIRFileError(f"{src}: node {k!r}: {type(nodes[k]).__name__} where a "
                               f"{'/'.join(a.__name__ for a in allowed)} neuron was expected ({_SUPPORTED})")
    kinds = {type(nodes[b.syn]) for b in blocks if b.conv is None}
    if len(kinds) > 1 and not has_conv:
        raise NIRFileError(f"{src}: mixes Linear and Affine synapses; a bioplaus net has bias "
                           "in every layer or in none")
    bias = nir.Affine in kinds
    is_bioplaus = str(_meta(graph, "producer", "", src)).startswith("bioplaus")

    meta_dt = _meta(graph, "dt", None, src)
    if meta_dt is not None:
        if not isinstance(meta_dt, int | float) or isinstance(meta_dt, bool) or not (math.isfinite(meta_dt) and meta_dt > 0):
            raise NIRFileError(f"{src}: metadata dt={meta_dt!r}: expected a positive number of seconds")
        dt = float(meta_dt)
    integration = integration or _meta(graph, "integration", "euler", src)
    if integration not in INTEGRATIONS:
        raise NIRFileError(f"{src}: metadata integration={integration!r}: expected one of {', '.join(INTEGRATIONS)}")
    T = _meta(graph, "T", 20, src)
    if not isinstance(T, int) or isinstance(T, bool) or not 1 <= T <= MAX_T:
        raise NIRFileError(f"{src}: metadata T={T!r}: expected an integer in [1, {MAX_T}]")
    last_is_li = isinstance(nodes[neu_names[-1]], nir.LI)
    texts = {}
    for key, default in (("reset", "subtract" if is_bioplaus else "zero"), ("surrogate", "atan"),
                         ("readout", "mem_mean"), ("encoder", "direct")):
        texts[key] = _meta(graph, key, default, src)
        if not isinstance(texts[key], str):
            raise NIRFileError(f"{src}: metadata {key}={texts[key]!r}: expected text")
    out_spikes = _meta(graph, "output_spikes", not last_is_li, src)
    if not isinstance(out_spikes, bool):
        raise NIRFileError(f"{src}: metadata output_spikes={out_spikes!r}: expected true or false")
    if last_is_li:
        texts["readout"] = "mem_mean"
    if reset is not None:
        texts["reset"] = reset
    scale = _meta(graph, "input_scale", None, src) if is_bioplaus else None
    if scale is not None and (not isinstance(scale, int | float) or not (math.isfinite(scale) and scale > 0)):
        raise NIRFileError(f"{src}: metadata input_scale={scale!r}: expected a positive number")

    meta_shape = graph.metadata.get("input_shape") if isinstance(graph.metadata, dict) else None
    if meta_shape is not None and not has_conv:  # an MLP graph takes the flat sample
        ms = np.asarray(meta_shape).ravel()
        if ms.dtype.kind in "iu" and 1 <= ms.size <= 3 and (ms > 0).all() and int(np.prod(ms)) == math.prod(in_shape):
            in_shape = tuple(int(v) for v in ms)

    weights, biases, taus, rs, thresholds = [], [], [], [], []
    for block in blocks:
        n_name, n_out = block.neuron, block.out_shape
        weights.append(block.weight)
        biases.append(block.bias)
        neu = nodes[n_name]
        tau = _array(src, n_name, neu, "tau", n_out, True)
        r = _array(src, n_name, neu, "r", n_out, True)
        v_leak = _array(src, n_name, neu, "v_leak", n_out, True)
        if (tau <= 0).any() or (dt is not None and integration == "euler" and (tau <= dt).any()):
            raise NIRFileError(f"{src}: node {n_name!r}: tau must exceed dt = {dt or 0:g} s "
                               f"(the discrete LIF needs 0 < beta < 1), got min {tau.min():g}")
        if (r <= 0).any():
            raise NIRFileError(f"{src}: node {n_name!r}: r must be > 0, got min {r.min():g}")
        if not np.allclose(v_leak, 0.0, atol=1e-9):
            raise NIRFileError(f"{src}: node {n_name!r}: v_leak must be 0 for the bioplaus LIF")
        if block.conv is not None and not np.all(r == r.ravel()[0]):
            raise NIRFileError(f"{src}: node {n_name!r}: r differs between neurons of a convolution")
        taus.append(tau.ravel())
        rs.append(r.ravel() if block.conv is None else r.ravel()[:1])
        if isinstance(neu, nir.LIF):
            thresholds.append(_array(src, n_name, neu, "v_threshold", n_out, True).ravel())
            v_reset = _array(src, n_name, neu, "v_reset", n_out, True)
            if not np.allclose(v_reset, 0.0, atol=1e-9):
                raise NIRFileError(f"{src}: node {n_name!r}: v_reset must be 0 (bioplaus resets to 0 "
                                   "or subtracts the threshold)")
    n_in = math.prod(blocks[-1].y_shape)
    out_type = getattr(nodes[order[-1]], "output_type", None)
    raw_out = out_type.get("output") if isinstance(out_type, dict) else None
    if raw_out is not None:
        out_arr = np.asarray(raw_out)
        if out_arr.dtype.kind not in "iu" or int(np.prod(out_arr)) != n_in:
            raise NIRFileError(f"{src}: node {order[-1]!r}: output shape {raw_out!r} does not "
                               f"match the last layer's {n_in} neurons")
    all_tau = np.concatenate(taus)
    if not np.allclose(all_tau, all_tau[0], rtol=1e-6):
        raise NIRFileError(f"{src}: tau differs between neurons; a bioplaus net has one tau")
    tau0 = float(all_tau[0])
    if dt is None:
        r0 = float(np.concatenate(rs)[0])
        dt = float(f"{tau0 / r0:.6g}") if (integration == "euler" and not np.isclose(r0, 1.0) and np.allclose(np.concatenate(rs), r0)) else 1e-3
    if integration == "euler" and tau0 <= dt:
        raise NIRFileError(f"{src}: node {neu_names[0]!r}: tau must exceed dt = {dt:g} s "
                           f"(the discrete LIF needs 0 < beta < 1), got min {tau0:g}")
    thr = 1.0
    if thresholds:
        all_thr = np.concatenate(thresholds)
        if not np.allclose(all_thr, all_thr[0], rtol=1e-6):
            raise NIRFileError(f"{src}: v_threshold differs between neurons; a bioplaus net has one")
        thr = float(all_thr[0])
    beta = _meta(graph, "beta", None, src) if is_bioplaus else None
    if not (isinstance(beta, float) and 0 < beta < 1 and np.isclose(beta, nir_beta(tau0, dt, integration), rtol=1e-9)):
        beta = nir_beta(tau0, dt, integration)
    tau_backend = -dt / math.log(beta)
    # Undo the input scale: W_ours = W_nir r (1 - beta); exact division for bioplaus's own.
    for i in range(len(weights)):
        if scale is not None and np.all(rs[i] == 1.0):
            weights[i] = weights[i] / scale
            if biases[i] is not None:
                biases[i] = biases[i] / scale
        else:
            k = rs[i] * (1.0 - beta)  # one value for a convolution, one per row for a Linear
            weights[i] = weights[i] * (k.reshape(-1, *[1] * (weights[i].ndim - 1)))
            if biases[i] is not None:
                biases[i] = biases[i] * k
    spiking = SpikingConfig(
        T=T, dt=dt, tau=tau_backend, threshold=thr, reset=texts["reset"],
        surrogate=texts["surrogate"], readout=texts["readout"], encoder=texts["encoder"],
        output_spikes=bool(out_spikes) if last_is_li else True,
    )
    try:
        LIFParams(dt, tau_backend, thr, spiking.reset, spiking.surrogate).check("metadata")
        check_choice(spiking.readout, ["mem_mean", "spike_count"], "metadata.readout")
        check_choice(spiking.encoder, ["direct", "poisson", "latency"], "metadata.encoder")
    except ConfigError as exc:
        raise NIRFileError(f"{src}: {exc}") from None
    if has_conv:
        net = nir_layers.conv_net(blocks, in_shape, spiking, LIFModel.name)
    else:
        cfg = NetworkConfig(backend=LIFModel.name, arch="mlp", hidden=[int(w.shape[0]) for w in weights[:-1]],
                            bias=bias, spiking=spiking)
        net = build_net(cfg, in_shape, int(weights[-1].shape[0]))
    with torch.no_grad():
        for i, la in enumerate(net.layers):
            la.synapse.weight.copy_(torch.as_tensor(weights[i]))
            if la.synapse.bias is not None:
                la.synapse.bias.copy_(torch.as_tensor(biases[i]))
    return net


def _input_shape(graph: Any, name: str, src: str) -> tuple[int, ...]:
    """The sample shape the Input node declares: 1 to 3 positive integers, or 4 with a
    leading batch dimension of 1 (Norse, snntorch), which is dropped."""
    in_type = getattr(graph.nodes[name], "input_type", None)
    raw_shape = in_type.get("input") if isinstance(in_type, dict) else None
    shape_arr = np.asarray(raw_shape) if raw_shape is not None else np.zeros(0)
    if shape_arr.ndim == 1 and shape_arr.size == 4 and shape_arr.dtype.kind in "iu" and shape_arr[0] == 1:
        shape_arr = shape_arr[1:]
    if (shape_arr.ndim != 1 or not 1 <= shape_arr.size <= 3 or shape_arr.dtype.kind not in "iu"
            or (shape_arr <= 0).any() or math.prod(int(v) for v in shape_arr) > nir_layers.MAX_UNITS):
        raise NIRFileError(f"{src}: node {name!r}: input shape {raw_shape!r}: expected 1 to 3 "
                           "positive integers")
    return tuple(int(v) for v in shape_arr)


def _positive_ints(value: Any, where: str, max_len: int) -> tuple[int, ...]:
    arr = np.asarray(value) if isinstance(value, list | tuple | np.ndarray | int) else np.zeros(0)
    if (arr.dtype.kind not in "iu" or arr.ndim > 1 or not 1 <= arr.size <= max_len
            or (arr <= 0).any() or math.prod(int(v) for v in arr.ravel()) > 1 << 40):
        raise RunFileError(f"{where}={value!r}: expected up to {max_len} positive integers")
    return tuple(int(v) for v in arr.ravel())


def load_net(run_path: str | Path) -> Net:
    """The trained net saved in a run file (``/model/net``), rebuilt from the run's config.

    The saved parameters must be finite and match, key for key and shape for shape, the
    net the run's config builds (checked on torch's meta device before allocating);
    otherwise `RunFileError` names the file and the parameter.
    """
    from bioplaus.config import load_config
    from bioplaus.record import open_run

    src = str(run_path)
    with open_run(run_path) as run:
        try:
            cfg = load_config(run.config)
        except RunFileError:
            raise
        except (BioplausError, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise RunFileError(f"{src}: /: attribute config: {exc}") from None
        if cfg.section("network") is None:  # a kind without a layer stack (hopfield, simulate)
            raise BioplausError(f"{run_path}: a {cfg.kind!r} run has no [network]; no net to export")
        attrs = run.attrs
        shape = attrs.get("input_shape")
        n_classes = attrs.get("n_classes")
        if shape is None or n_classes is None:
            raise BioplausError(f"{run_path}: the run file records no input shape / class count")
        in_shape = _positive_ints(shape, f"{src}: /: attribute input_shape", 3)
        (classes,) = _positive_ints(n_classes, f"{src}: /: attribute n_classes", 1)
        arrays = {key: run.array(f"/model/net/{key}") for key in run.model_keys("net")}
    if not arrays:
        raise BioplausError(f"{run_path}: no saved model (record.save_model was off or the run did not finish)")
    for key, arr in arrays.items():
        where = f"{src}: /model/net/{key}"
        if arr.dtype.kind not in "biuf":
            raise RunFileError(f"{where}: expected a numeric array, got dtype {arr.dtype.str}")
        if not np.isfinite(arr).all():
            raise RunFileError(f"{where}: holds NaN or inf")
    try:
        with torch.device("meta"):
            skeleton = build_net(cfg.network, in_shape, classes, seed=cfg.seed)
    except ConfigError as exc:
        raise RunFileError(f"{src}: /: attribute config: {exc}") from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        more = len(missing) + len(extra) - 1
        raise RunFileError(f"{src}: /model/net: {what}{f' (and {more} more)' if more else ''}; "
                           "the saved model does not match the run's config")
    for key, arr in arrays.items():
        if tuple(arr.shape) != expected[key]:
            raise RunFileError(f"{src}: /model/net/{key}: shape {tuple(arr.shape)}, but the run's "
                               f"config builds {expected[key]}")
    net = build_net(cfg.network, in_shape, classes, seed=cfg.seed)
    net.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()})
    return net
