"""Reading NIR graphs of the NIR-exact neuron models (``lif_nir``, ``if_nir``, ``cuba_lif``).

`bioplaus.export.nir.from_nir` hands a graph here when its metadata names one of these
models (``neuron_model``), when the caller names one (``model=``), or when its neuron nodes
are ones only these models read (``IF``, ``CubaLIF``, ``CubaLI``). Each model claims its
nodes (``from_nir_node``: the node's parameters, or None) and turns the layers' parameters
into its config (``config_from_nir``); this module only walks the chain
input → [Flatten] → (Linear|Affine → neuron)* → output and copies the weights as they are
(the models' synapses have input scale 1).

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
    neurons = [graph.nodes[k] for k in order[1:-1]
               if not isinstance(graph.nodes[k], nir.Input | nir.Output | nir.Flatten | nir.Linear | nir.Affine)]
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
                   integration: str | None, meta: Callable[..., Any], array: Callable[..., Any],
                   max_t: int) -> Net:
    """The ``model`` net that ``graph`` (a checked chain ``order``) states; NIRFileError
    (one line naming the node or field) for anything it cannot rebuild exactly.

    ``meta``, ``array`` and ``max_t`` are `bioplaus.export.nir`'s checked readers of
    metadata and node arrays and its longest T (passed in: that module imports this one).
    """
    import nir

    _meta, _array, MAX_T = meta, array, max_t  # noqa: N806

    m = neuron_model(model)
    nodes = graph.nodes
    inner = order[1:-1]
    if inner and isinstance(nodes[inner[0]], nir.Flatten):
        inner = inner[1:]
    if not inner or len(inner) % 2:
        raise NIRFileError(f"{src}: expected synapse/neuron pairs between input and output for {model}")
    syn_names, neu_names = inner[0::2], inner[1::2]
    for k in syn_names:
        if not isinstance(nodes[k], nir.Linear | nir.Affine):
            raise NIRFileError(f"{src}: node {k!r}: {type(nodes[k]).__name__} where a Linear/Affine synapse "
                               f"was expected ({model} graphs are MLPs)")
    kinds = {type(nodes[k]) for k in syn_names}
    if len(kinds) > 1:
        raise NIRFileError(f"{src}: mixes Linear and Affine synapses; a bioplaus net has bias in every layer or in none")
    bias = nir.Affine in kinds
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

    shape = _input_shape(graph, order, src)
    weights, biases = [], []
    n_in = math.prod(shape)
    for s_name in syn_names:
        w = _array(src, s_name, nodes[s_name], "weight", None)
        if w.ndim != 2 or w.shape[1] != n_in or w.shape[0] == 0:
            raise NIRFileError(f"{src}: node {s_name!r}: weight has shape {w.shape}, expected (n_out, {n_in})")
        weights.append(w)
        if bias:
            biases.append(_array(src, s_name, nodes[s_name], "bias", (w.shape[0],)))
        n_in = w.shape[0]
    for s_name, n_name in zip(syn_names, neu_names):
        n_out = int(np.asarray(nodes[s_name].weight).shape[0])
        for attr in ("r", "v_threshold", "tau", "tau_mem"):
            val = getattr(nodes[n_name], attr, None)
            if val is not None and np.asarray(val).size not in (1, n_out):
                raise NIRFileError(f"{src}: node {n_name!r}: {attr} has {np.asarray(val).size} values for "
                                   f"{n_out} neurons")
    cfg_spiking = {"T": T, "dt": dt, "surrogate": texts["surrogate"], "readout": texts["readout"],
                   "encoder": texts["encoder"], **spiking_kw}
    try:
        check_choice(texts["readout"], ["mem_mean", "spike_count"], "metadata.readout")
        check_choice(texts["encoder"], ["direct", "poisson", "latency"], "metadata.encoder")
        cfg = NetworkConfig(backend=model, arch="mlp", hidden=[int(w.shape[0]) for w in weights[:-1]], bias=bias,
                            spiking=SpikingConfig(**cfg_spiking), neuron={"integration": integration, **neuron_kw})
        for key in ("dt", "tau", "threshold"):
            v = getattr(cfg.spiking, key)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{key}: must be a positive number, got {v}")
        from bioplaus.neurons import check_spiking_table

        check_spiking_table(cfg)
        m.check(cfg)
        net = build_net(cfg, shape, int(weights[-1].shape[0]))
    except ConfigError as exc:
        raise NIRFileError(f"{src}: {exc}") from None
    with torch.no_grad():
        for i, la in enumerate(net.layers):
            la.synapse.weight.copy_(torch.as_tensor(weights[i]))
            if bias:
                la.synapse.bias.copy_(torch.as_tensor(biases[i]))
    return net


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
