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
``metadata.input_shape``. Conv graphs keep the spec's ``Flatten(start_dim=0)``.
Weights are stored in float64 so that bioplaus's reader recovers the float32 weights
bit for bit after dividing by the input scale.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioplaus.config import NetworkConfig, SpikingConfig, check_choice
from bioplaus.errors import BioplausError, ConfigError, NIRFileError, RunFileError
from bioplaus.nets import Net, build_net, conv_out
from bioplaus.neurons.lif import INTEGRATIONS, LIFModel, LIFParams, nir_beta


def to_nir(net: Net, *, integration: str = "euler", li_readout: bool = True,
           extra_metadata: dict[str, Any] | None = None) -> Any:
    """The NIR graph of a spiking ``Net`` (MLP; conv layers without max-pool).

    ``integration`` ("euler" | "exact") is the rule the node parameters are computed for
    (module docstring); ``li_readout=False`` keeps a firing output layer as a LIF node
    (its spikes, not its membrane, leave the graph); ``extra_metadata`` is merged into the graph metadata (e.g. the data
    set a run was trained on).
    """
    import nir

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
        out_shape = (syn.out_channels, *(conv_out(n, k, pd) for n, k, pd in zip(shape[1:], syn.kernel_size, syn.padding))) \
            if la.is_conv else (syn.out_features,)
        # the layer's neuron model states its node (NotStatable, a BioplausError, if it cannot)
        neuron = la.neuron.model.nir(la.neuron.params, out_shape, integration=integration,
                                     li_readout=la.is_output and li_readout and s.readout == "mem_mean")
        if model_meta is None:
            model_meta = neuron.metadata
        scale = neuron.input_scale
        w = syn.weight.detach().numpy().astype(np.float64) * scale
        b = syn.bias.detach().numpy().astype(np.float64) * scale if syn.bias is not None else None
        if la.is_conv:
            if la.pool > 1:
                raise BioplausError(
                    f"export: {la.name} max-pools its spikes, and NIR 1.0 has no max-pool node"
                )
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
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def export_nir(net: Net, path: str | Path, *, integration: str = "euler", li_readout: bool = True,
               extra_metadata: dict[str, Any] | None = None) -> Path:
    """Write the NIR graph of ``net`` to ``path`` (HDF5, as ``nir.write`` does)."""
    import nir

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = to_nir(net, integration=integration, li_readout=li_readout, extra_metadata=extra_metadata)
    try:
        nir.write(path, graph)
    except OSError as exc:
        raise BioplausError(f"{path}: cannot write the NIR file ({exc})") from None
    return path


# Most bytes of datasets a NIR file may hold (``nir.read`` loads them all).
MAX_NIR_BYTES = 1 << 30
# Longest simulation (time steps) a rebuilt net accepts from a file's metadata.
MAX_T = 1_000_000
_SUPPORTED = "Input, Flatten (after the input), Linear or Affine, LIF or LI (last), Output"


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

    p = Path(path)
    if not p.is_file():
        raise NIRFileError(f"{p}: no such NIR file")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise NIRFileError(f"{p}: not a NIR file (HDF5 cannot open it: {exc})") from None
    with f:
        u.check_tree(f, str(p), NIRFileError, read_cap=MAX_NIR_BYTES)
        if not isinstance(u.get(f, "node", str(p), NIRFileError), h5py.Group):
            raise NIRFileError(f"{p}: not a NIR file (no /node group)")
    try:
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
    are (`bioplaus.export.nir_exact`). ``integration`` ("euler" | "exact") overrides the
    rule the metadata states.
    """
    import nir

    src = "NIR graph"
    if isinstance(graph, str | Path):
        src = str(graph)
        graph = read_nir(graph)
    if not isinstance(graph, nir.NIRGraph):
        raise NIRFileError(f"{src}: expected a nir.NIRGraph, got {type(graph).__name__}")
    order = _chain(graph, src)
    # -- NIR-exact neuron models (lif_nir, if_nir, cuba_lif): their own reader -------------
    from bioplaus.export.nir_exact import claimant, from_nir_exact

    exact_model = claimant(graph, order, model, src, _meta)
    if exact_model is not None:
        return from_nir_exact(graph, order, src, model=exact_model, dt=dt, integration=integration,
                              meta=_meta, array=_array, max_t=MAX_T)
    # -- the spiking model's LIF ------------------------------------------------------------
    nodes = graph.nodes
    inner = order[1:-1]
    if inner and isinstance(nodes[inner[0]], nir.Flatten):
        inner = inner[1:]
    for k in inner:
        if not isinstance(nodes[k], nir.Linear | nir.Affine | nir.LIF | nir.LI):
            raise unsupported(src, k, nodes[k], "a Linear/Affine synapse or a LIF/LI neuron")
    if not inner or len(inner) % 2:
        raise NIRFileError(f"{src}: expected synapse/neuron pairs between input and output ({_SUPPORTED})")
    syn_names, neu_names = inner[0::2], inner[1::2]
    for k in syn_names:
        if not isinstance(nodes[k], nir.Linear | nir.Affine):
            raise NIRFileError(f"{src}: node {k!r}: {type(nodes[k]).__name__} where a Linear/Affine "
                               f"synapse was expected ({_SUPPORTED})")
    for i, k in enumerate(neu_names):
        allowed = (nir.LIF, nir.LI) if i == len(neu_names) - 1 else (nir.LIF,)
        if not isinstance(nodes[k], allowed):
            raise NIRFileError(f"{src}: node {k!r}: {type(nodes[k]).__name__} where a "
                               f"{'/'.join(a.__name__ for a in allowed)} neuron was expected ({_SUPPORTED})")
    kinds = {type(nodes[k]) for k in syn_names}
    if len(kinds) > 1:
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

    in_type = getattr(nodes[order[0]], "input_type", None)
    raw_shape = in_type.get("input") if isinstance(in_type, dict) else None
    shape_arr = np.asarray(raw_shape) if raw_shape is not None else np.zeros(0)
    if (shape_arr.ndim != 1 or not 1 <= shape_arr.size <= 3 or shape_arr.dtype.kind not in "iu"
            or (shape_arr <= 0).any()):
        raise NIRFileError(f"{src}: node {order[0]!r}: input shape {raw_shape!r}: expected 1 to 3 "
                           "positive integers")
    in_shape = tuple(int(v) for v in shape_arr)
    meta_shape = graph.metadata.get("input_shape") if isinstance(graph.metadata, dict) else None
    if meta_shape is not None:
        ms = np.asarray(meta_shape).ravel()
        if ms.dtype.kind in "iu" and 1 <= ms.size <= 3 and (ms > 0).all() and int(np.prod(ms)) == math.prod(in_shape):
            in_shape = tuple(int(v) for v in ms)

    weights, biases, taus, rs, thresholds = [], [], [], [], []
    n_in = math.prod(in_shape)
    for s_name, n_name in zip(syn_names, neu_names):
        w = _array(src, s_name, nodes[s_name], "weight", None)
        if w.ndim != 2 or w.shape[1] != n_in or w.shape[0] == 0:
            raise NIRFileError(f"{src}: node {s_name!r}: weight has shape {w.shape}, expected "
                               f"(n_out, {n_in})")
        n_out = w.shape[0]
        weights.append(w)
        if bias:
            biases.append(_array(src, s_name, nodes[s_name], "bias", (n_out,)))
        neu = nodes[n_name]
        tau = _array(src, n_name, neu, "tau", (n_out,), True)
        r = _array(src, n_name, neu, "r", (n_out,), True)
        v_leak = _array(src, n_name, neu, "v_leak", (n_out,), True)
        if (tau <= 0).any() or (dt is not None and integration == "euler" and (tau <= dt).any()):
            raise NIRFileError(f"{src}: node {n_name!r}: tau must exceed dt = {dt or 0:g} s "
                               f"(the discrete LIF needs 0 < beta < 1), got min {tau.min():g}")
        if (r <= 0).any():
            raise NIRFileError(f"{src}: node {n_name!r}: r must be > 0, got min {r.min():g}")
        if not np.allclose(v_leak, 0.0, atol=1e-9):
            raise NIRFileError(f"{src}: node {n_name!r}: v_leak must be 0 for the bioplaus LIF")
        taus.append(tau)
        rs.append(r)
        if isinstance(neu, nir.LIF):
            thresholds.append(_array(src, n_name, neu, "v_threshold", (n_out,), True))
            v_reset = _array(src, n_name, neu, "v_reset", (n_out,), True)
            if not np.allclose(v_reset, 0.0, atol=1e-9):
                raise NIRFileError(f"{src}: node {n_name!r}: v_reset must be 0 (bioplaus resets to 0 "
                                   "or subtracts the threshold)")
        n_in = n_out
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
            if bias:
                biases[i] = biases[i] / scale
        else:
            k = rs[i] * (1.0 - beta)
            weights[i] = weights[i] * k[:, None]
            if bias:
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
    cfg = NetworkConfig(backend=LIFModel.name, arch="mlp", hidden=[int(w.shape[0]) for w in weights[:-1]],
                        bias=bias, spiking=spiking)
    net = build_net(cfg, in_shape, int(weights[-1].shape[0]))
    with torch.no_grad():
        for i, la in enumerate(net.layers):
            la.synapse.weight.copy_(torch.as_tensor(weights[i]))
            if bias:
                la.synapse.bias.copy_(torch.as_tensor(biases[i]))
    return net


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
