"""Reading NIR graphs of the NIR-exact neuron models (``lif_nir``, ``if_nir``, ``cuba_lif``).

`bioplaus.export.nir.from_nir` hands a graph here when its metadata names one of these
models (``neuron_model``), when the caller names one (``model=``), or when its neuron nodes
are ones only these models read (``IF``, ``CubaLIF``, ``CubaLI``). Each model claims its
nodes (``from_nir_node``: the node's parameters, or None) and turns the layers' parameters
into its config (``config_from_nir``); this module walks the chain with the structural
reader every graph goes through (`bioplaus.export.nir_layers`: Linear / Affine, Conv2d,
sum / average / max pooling, Flatten, blocks ``[Flatten] synapse [pool] neuron [pool]``)
and copies the weights as they are (the models' synapses have input scale 1). A conv graph
rebuilds as a ``Net`` of the graph's geometry (`nir_layers.conv_net`), an MLP as before.

The time step is the metadata's ``dt``, else the ``dt`` given, else 1 ms; the rule is the
``integration`` given, else the metadata's, else "exact" (the ODE's solution).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from bioplaus.config import NetworkConfig, SpikingConfig, check_choice
from bioplaus.errors import ConfigError, NIRFileError
from bioplaus.export import nir_layers
from bioplaus.nets import Net, build_net
from bioplaus.neurons.base import neuron_model
from bioplaus.neurons.nir_exact import INTEGRATIONS
from bioplaus.registry import NEURONS

DEFAULT_INTEGRATION = "exact"


def readers() -> dict[str, Any]:
    """The registered neuron models that read NIR nodes (name -> model)."""
    return {name: m for name, m in NEURONS.items()
            if callable(getattr(m, "from_nir_node", None)) and callable(getattr(m, "config_from_nir", None))}


def claimant(graph: Any, order: list[str], model: str | None, src: str, meta: Callable[..., Any]) -> str | None:
    """The model that reads ``graph`` here (module docstring), or None: the LIF path of
    `from_nir` reads it. ``meta``: `bioplaus.export.nir`'s checked metadata reader."""
    import nir

    _meta = meta
    found = readers()
    if model is not None:
        if model not in found:
            raise NIRFileError(f"{src}: model={model!r} does not read NIR graphs; valid: {', '.join(sorted(found))}")
        return model
    named = _meta(graph, "neuron_model", None, src)
    if isinstance(named, str) and named in found:
        return named
    neurons = [graph.nodes[k] for k in order[1:-1] if not nir_layers.is_structural(graph.nodes[k])]
    if not any(isinstance(n, nir.IF | nir.CubaLIF | nir.CubaLI) for n in neurons):
        return None
    for name, m in found.items():
        if all(_claims(m, n, src) for n in neurons):
            return name
    return None


def _claims(m: Any, node: Any, src: str) -> bool:
    """Whether model ``m`` reads ``node`` (a node of its kind with bad parameters counts:
    its reader then names what is wrong)."""
    try:
        return m.from_nir_node(node, src) is not None
    except (ValueError, TypeError):
        return True


def from_nir_exact(graph: Any, order: list[str], src: str, *, model: str, dt: float | None,
                   integration: str | None, meta: Callable[..., Any], max_t: int) -> Net:
    """The ``model`` net that ``graph`` (a checked chain ``order``) states; NIRFileError
    (one line naming the node or field) for anything it cannot rebuild exactly.

    ``meta`` and ``max_t`` are `bioplaus.export.nir`'s checked reader of metadata and its
    longest T (passed in: that module imports this one).
    """
    import nir

    _meta, MAX_T = meta, max_t  # noqa: N806

    m = neuron_model(model)
    nodes = graph.nodes
    # the structure (synapses, Conv2d, pooling, Flatten) as nir_layers reads it for every graph
    declared = _declared_shape(graph, order[0], src)
    blocks = nir_layers.blocks(graph, order[1:-1], declared, src)
    if not blocks:
        raise NIRFileError(f"{src}: expected synapse/neuron pairs between input and output for {model}")
    if blocks[-1].conv is not None or blocks[-1].pool > 1:
        raise NIRFileError(f"{src}: node {blocks[-1].syn!r}: the last synapse must be Linear/Affine "
                           "(its neurons are the classes)")
    has_conv = any(b.conv is not None for b in blocks)
    neu_names = [b.neuron for b in blocks]
    kinds = {type(nodes[b.syn]) for b in blocks if b.conv is None}
    if len(kinds) > 1:
        raise NIRFileError(f"{src}: mixes Linear and Affine synapses; a bioplaus net has bias in every layer or in none")
    bias = nir.Affine in kinds if not has_conv else any(b.bias is not None for b in blocks)
    layers: list[dict[str, Any]] = []
    for i, k in enumerate(neu_names):
        where = f"{src}: node {k!r}"
        try:
            got = m.from_nir_node(nodes[k], where)
        except (ValueError, TypeError) as exc:
            raise NIRFileError(str(exc)) from None
        if got is None:
            raise NIRFileError(f"{where}: {type(nodes[k]).__name__} is not a node of neuron model {model!r}")
        if got.get("threshold") is None and i < len(neu_names) - 1:
            raise NIRFileError(f"{where}: a non-firing {type(nodes[k]).__name__} node is read only as the "
                               "output layer")
        layers.append(got)

    meta_dt = _meta(graph, "dt", None, src)
    if meta_dt is not None:
        if not isinstance(meta_dt, int | float) or isinstance(meta_dt, bool) or not (math.isfinite(meta_dt) and meta_dt > 0):
            raise NIRFileError(f"{src}: metadata dt={meta_dt!r}: expected a positive number of seconds")
        dt = float(meta_dt)
    dt = 1e-3 if dt is None else float(dt)
    if integration is None:
        integration = _meta(graph, "integration", DEFAULT_INTEGRATION, src)
    if integration not in INTEGRATIONS:
        raise NIRFileError(f"{src}: integration={integration!r}: expected one of {', '.join(INTEGRATIONS)}")
    T = _meta(graph, "T", 20, src)
    if not isinstance(T, int) or isinstance(T, bool) or not 1 <= T <= MAX_T:
        raise NIRFileError(f"{src}: metadata T={T!r}: expected an integer in [1, {MAX_T}]")
    fires_out = layers[-1].get("threshold") is not None
    texts = {}
    for key, default in (("surrogate", "atan"), ("readout", "spike_count" if fires_out else "mem_mean"),
                         ("encoder", "direct")):
        texts[key] = _meta(graph, key, default, src)
        if not isinstance(texts[key], str):
            raise NIRFileError(f"{src}: metadata {key}={texts[key]!r}: expected text")
    if not fires_out:
        texts["readout"] = "mem_mean"
    try:
        spiking_kw, neuron_kw = m.config_from_nir(layers, src)
    except ValueError as exc:
        raise NIRFileError(str(exc)) from None

    shape = _input_shape(graph, order, src) if not has_conv else declared
    for b in blocks:
        n_out = math.prod(b.out_shape)
        for attr in ("r", "v_threshold", "tau", "tau_mem"):
            val = getattr(nodes[b.neuron], attr, None)
            if val is not None and np.asarray(val).size not in (1, n_out):
                raise NIRFileError(f"{src}: node {b.neuron!r}: {attr} has {np.asarray(val).size} values for "
                                   f"{n_out} neurons")
    cfg_spiking = {"T": T, "dt": dt, "surrogate": texts["surrogate"], "readout": texts["readout"],
                   "encoder": texts["encoder"], **spiking_kw}
    try:
        check_choice(texts["readout"], ["mem_mean", "spike_count"], "metadata.readout")
        check_choice(texts["encoder"], ["direct", "poisson", "latency"], "metadata.encoder")
        cfg = NetworkConfig(backend=model, arch="mlp", hidden=[math.prod(b.out_shape) for b in blocks[:-1]],
                            bias=bias, spiking=SpikingConfig(**cfg_spiking),
                            neuron={"integration": integration, **neuron_kw})
        for key in ("dt", "tau", "threshold"):
            v = getattr(cfg.spiking, key)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{key}: must be a positive number, got {v}")
        from bioplaus.neurons import check_spiking_table

        check_spiking_table(cfg)
        m.check(cfg)
        if has_conv:
            net = nir_layers.conv_net(blocks, shape, cfg.spiking, model, cfg.neuron)
        else:
            net = build_net(cfg, shape, int(blocks[-1].weight.shape[0]))
    except ConfigError as exc:
        raise NIRFileError(f"{src}: {exc}") from None
    with torch.no_grad():
        for la, b in zip(net.layers, blocks):
            la.synapse.weight.copy_(torch.as_tensor(b.weight))
            if la.synapse.bias is not None:
                la.synapse.bias.copy_(torch.as_tensor(b.bias if b.bias is not None else np.zeros(b.out_shape[0])))
    return net


def _declared_shape(graph: Any, name: str, src: str) -> tuple[int, ...]:
    """The sample shape the Input node declares (1 to 3 positive sizes; a leading batch
    dimension of 1, as Norse and snntorch write it, is dropped)."""
    in_type = getattr(graph.nodes[name], "input_type", None)
    raw = in_type.get("input") if isinstance(in_type, dict) else None
    arr = np.asarray(raw) if raw is not None else np.zeros(0)
    if arr.ndim == 1 and arr.size == 4 and arr.dtype.kind in "iu" and arr[0] == 1:
        arr = arr[1:]
    if arr.ndim != 1 or not 1 <= arr.size <= 3 or arr.dtype.kind not in "iu" or (arr <= 0).any():
        raise NIRFileError(f"{src}: node {name!r}: input shape {raw!r}: expected 1 to 3 positive integers")
    return tuple(int(v) for v in arr)


def _input_shape(graph: Any, order: list[str], src: str) -> tuple[int, ...]:
    """The sample shape: the Input node's (flattened for the first Linear), or the
    metadata's ``input_shape`` when it has as many values."""
    in_type = getattr(graph.nodes[order[0]], "input_type", None)
    raw = in_type.get("input") if isinstance(in_type, dict) else None
    arr = np.asarray(raw) if raw is not None else np.zeros(0)
    if arr.ndim != 1 or not 1 <= arr.size <= 3 or arr.dtype.kind not in "iu" or (arr <= 0).any():
        raise NIRFileError(f"{src}: node {order[0]!r}: input shape {raw!r}: expected 1 to 3 positive integers")
    shape = tuple(int(v) for v in arr)
    meta_shape = graph.metadata.get("input_shape") if isinstance(graph.metadata, dict) else None
    if meta_shape is not None:
        ms = np.asarray(meta_shape).ravel()
        if ms.dtype.kind in "iu" and 1 <= ms.size <= 3 and (ms > 0).all() and int(np.prod(ms)) == math.prod(shape):
            shape = tuple(int(v) for v in ms)
    return shape


# -- the fold of r into the synapses (export) ---------------------------------------------
FOLDED_MODELS = ("lif_nir", "cuba_lif")  # models whose graphs `to_nir` folds by default
FOLDED_NODES = ("LIF", "LI", "CubaLIF", "CubaLI")


def fold_r(graph: Any) -> Any:
    """A copy of ``graph`` with each leaky node's input resistance r moved into the synapse
    that feeds it: the node gets r = 1, the weights and biases of its neuron (or channel) r.

    Exact by the NIR spec, for every integration rule and dt, because r multiplies only the
    synaptic input and the input is linear in the synapse's parameters. Per output neuron i
    (an ``Affine`` / ``Linear`` row; for ``Conv2d`` the output channel, whose r must then
    be one value over the channel's positions)::

        LIF, LI:        τ dv/dt = (v_leak − v) + r_i (W x + b)_i
                                = (v_leak − v) + 1 · (W' x + b')_i,   W' = r_i W_i,  b' = r_i b_i
        CubaLIF, CubaLI: τ_syn dI/dt = −I + w_in (W x + b),  τ_mem dv/dt = (v_leak − v) + r I;
                        with I' = r I: τ_syn dI'/dt = −I' + w_in (W' x + b'),
                        τ_mem dv/dt = (v_leak − v) + 1 · I'   (w_in, τ, θ, v_reset unchanged)

    Thresholds and resets act on v, which is unchanged, so the spikes are the same; the
    CubaLIF's (unobserved) current is r times larger. A reader that honours r reads both
    graphs alike; one that ignores r (Norse, Spyx) or needs r = 1 (Sinabs, snntorch on LI)
    reads only the folded graph right. ``IF`` nodes are left as they are: readers that
    ignore r step dv/dt = r I as v ← v + I, which the spec's v ← v + dt r I is only for
    r = 1/dt (``if_nir``'s default), so folding it to r = 1 would make them 1/dt too strong.
    Nodes whose r is already 1 are untouched. NIRFileError (one line naming the node) when a
    leaky node with r ≠ 1 is not fed by exactly one synapse that feeds only it, or when r
    varies within a conv channel.
    """
    import copy

    import nir

    g = copy.deepcopy(graph)
    preds: dict[str, list[str]] = {}
    succs: dict[str, list[str]] = {}
    for a, b in g.edges:
        preds.setdefault(b, []).append(a)
        succs.setdefault(a, []).append(b)
    for name, node in g.nodes.items():
        if type(node).__name__ not in FOLDED_NODES:
            continue
        r = np.asarray(node.r, dtype=np.float64)
        if (r == 1.0).all():
            continue
        src = preds.get(name, [])
        syn = g.nodes[src[0]] if len(src) == 1 else None
        if not isinstance(syn, nir.Affine | nir.Linear | nir.Conv2d) or succs.get(src[0]) != [name]:
            raise NIRFileError(f"node {name!r}: r = {r.ravel()[0]:g} cannot be folded: the node is not fed by "
                               "one synapse (Linear, Affine, Conv2d) of its own")
        w = np.asarray(syn.weight, dtype=np.float64)
        n_out = w.shape[0]
        per = r.reshape(n_out, -1) if r.size % n_out == 0 and r.size >= n_out else np.broadcast_to(r.ravel()[:1], (n_out, 1))
        if not (per == per[:, :1]).all():
            raise NIRFileError(f"node {name!r}: r varies within an output channel of {src[0]!r}; cannot fold it")
        scale = per[:, 0]
        syn.weight = w * scale.reshape((n_out,) + (1,) * (w.ndim - 1))
        if getattr(syn, "bias", None) is not None:
            syn.bias = np.asarray(syn.bias, dtype=np.float64) * scale
        node.r = np.ones_like(r)
    return g
