"""Run a bioplaus NIR graph in snntorch and Norse: the peers' importers, and adapters.

Measured on snntorch 1.0.0 and Norse 1.1.0 (docs/export.md has the table). What each
importer gets wrong with a graph that follows the NIR spec, and what the adapter here fixes:

snntorch ``import_from_nir`` (``snntorch.import_nir``):
  * no ``LI`` node (``ValueError: Unknown node type LI``), so no membrane readout;
  * ``dt = 1e-4`` hard-coded: β = 1 − 1e-4/τ, and the threshold divided by r·1e-4/τ;
  * ``reset_mechanism="zero"`` and ``reset_delay=False`` whatever the graph says.
Norse ``from_nir`` (``norse.torch.utils.import_nir``):
  * no ``LI`` node (silently dropped: the output is the last synapse's current);
  * ignores ``r`` (harmless for bioplaus graphs, r = 1), ``v_reset`` and its own
    ``reset_method`` argument for ``LIF`` nodes: always an immediate reset to 0;
  * Euler only (a graph written with ``integration="exact"`` decays differently).
Both map NIR's unbatched ``Flatten(start_dim=0)`` to ``nn.Flatten(0)`` (batch flattened
away); bioplaus MLP graphs carry no Flatten node, conv graphs need the adapters.

The adapters keep each peer's own modules and importer for every node it reads right and
replace only the neuron nodes: `snntorch_from_nir` builds ``snn.Leaky`` with β from the
graph's dt and integration rule, the threshold as written, the graph's reset and
``reset_delay=True`` (bioplaus's dynamics, which snntorch implements natively), and an
``LI`` readout; `norse_from_nir` builds Norse ``LIFBoxCell`` / ``LIBoxCell`` with the
τ that gives β under Norse's Euler step and, for ``reset = "subtract"``, an immediate
subtraction of θ/β, which equals bioplaus's delayed subtraction of θ:
β (v − θ/β) + I = β v + I − θ.

`run_peer` drives either module over T steps and returns every neuron node's output.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioplaus.export.nir import nir_beta, read_nir


def _graph(graph: Any) -> Any:
    return read_nir(graph) if isinstance(graph, str | Path) else graph


def _meta(graph: Any, key: str, default: Any) -> Any:
    v = graph.metadata.get(key, default) if isinstance(graph.metadata, dict) else default
    if isinstance(v, np.generic | np.ndarray) and np.size(v) == 1:
        v = np.asarray(v).item()
    return v.decode() if isinstance(v, bytes) else v


def _beta(graph: Any, node: Any, dt: float | None) -> tuple[float, float]:
    """(β, dt) of a neuron node: the graph's dt (else ``dt``) and integration rule."""
    dt = float(_meta(graph, "dt", dt if dt is not None else 1e-3))
    tau = float(np.unique(np.asarray(node.tau))[0])
    return nir_beta(tau, dt, str(_meta(graph, "integration", "euler"))), dt


def _fix_flatten(node: Any) -> torch.nn.Module:
    # NIR shapes are unbatched: start_dim 0 of the sample is dim 1 of a batch.
    start = int(node.start_dim)
    return torch.nn.Flatten(start + 1 if start >= 0 else start, int(node.end_dim))


class _Membrane(torch.nn.Module):
    """snntorch leaky integrator that returns its membrane (the readout)."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        import snntorch as snn

        self.leaky = snn.Leaky(beta=beta, threshold=1.0, reset_mechanism="none", init_hidden=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.leaky(x)
        return self.leaky.mem


def discrete_weights(graph: Any, dt: float | None = None) -> Any:
    """A copy of ``graph`` whose synapses carry the discrete-time weights W (v ← β v + W x).

    A synapse followed by a neuron node with parameters (τ, r) is multiplied by r (1 − β);
    for a bioplaus graph (r = 1, ``input_scale`` in the metadata) it is divided by the input
    scale in float64, which gives back the trained float32 weights exactly. The neuron
    nodes then get r = 1.
    """
    import copy

    import nir

    g = copy.deepcopy(_graph(graph))
    succ = {a: b for a, b in g.edges}
    scale = _meta(g, "input_scale", None)
    bioplaus = str(_meta(g, "producer", "")).startswith("bioplaus")
    for name, node in g.nodes.items():
        nxt = g.nodes.get(succ.get(name, ""))
        if not isinstance(node, nir.Linear | nir.Affine | nir.Conv2d) or not isinstance(nxt, nir.LIF | nir.LI):
            continue
        r = np.asarray(nxt.r, dtype=np.float64)
        if bioplaus and scale and np.all(r == 1.0):
            k = np.full(r.shape, 1.0 / float(scale))
            node.weight = np.asarray(node.weight, dtype=np.float64) / float(scale)
            if getattr(node, "bias", None) is not None:
                node.bias = np.asarray(node.bias, dtype=np.float64) / float(scale)
        else:
            k = r * (1.0 - _beta(g, nxt, dt)[0])
            w = np.asarray(node.weight, dtype=np.float64)
            node.weight = w * k.reshape(-1, *([1] * (w.ndim - 1)))
            if getattr(node, "bias", None) is not None:
                node.bias = np.asarray(node.bias, dtype=np.float64) * k
        nxt.r = np.ones_like(r)
    return g


def snntorch_from_nir(graph: Any, dt: float | None = None) -> torch.nn.Module:
    """snntorch module of a NIR graph with bioplaus's dynamics (the adapter; see module doc).

    Linear / Affine / Conv2d / AvgPool2d come from snntorch's own importer; LIF becomes
    ``snn.Leaky(beta, threshold=v_threshold, reset_mechanism=<graph reset>,
    reset_delay=True)`` with β = 1 − dt/τ (euler) or exp(−dt/τ) (exact); LI becomes a
    leaky integrator whose output is its membrane. Call ``snntorch.utils.reset`` before
    each new input (snntorch keeps hidden state in the modules).
    """
    import nir
    import nirtorch
    import snntorch as snn
    from snntorch.import_nir import _nir_to_snntorch_module

    g = discrete_weights(graph, dt)  # snn.Leaky adds W x undamped: v ← β v + W x
    reset = str(_meta(g, "reset", "zero"))
    if reset not in ("subtract", "zero"):
        raise ValueError(f"reset {reset!r}")

    def lif(node: Any) -> torch.nn.Module:
        beta, _ = _beta(g, node, dt)
        thr = float(np.unique(np.asarray(node.v_threshold))[0])
        return snn.Leaky(beta=beta, threshold=thr, reset_mechanism=reset, init_hidden=True,
                         reset_delay=True)

    def li(node: Any) -> torch.nn.Module:
        return _Membrane(_beta(g, node, dt)[0])

    def own(n: Any) -> torch.nn.Module:
        return _nir_to_snntorch_module(n, init_hidden=True)

    node_map = {nir.Affine: own, nir.Linear: own, nir.Conv2d: own, nir.AvgPool2d: own,
                nir.Flatten: _fix_flatten, nir.LIF: lif, nir.LI: li}
    return nirtorch.nir_to_torch(g, node_map)


def norse_from_nir(graph: Any, dt: float | None = None) -> torch.nn.Module:
    """Norse module of a NIR graph with bioplaus's dynamics (the adapter; see module doc).

    Synapses come from Norse's own importer; LIF becomes ``LIFBoxCell`` with τ = dt/(1 − β)
    (Norse integrates by Euler), the threshold as written, and reset to 0 (zero) or an
    immediate subtraction of θ/β (subtract); LI becomes ``LIBoxCell`` with the same τ.
    """
    import nir
    import nirtorch
    from norse.torch.module.leaky_integrator_box import LIBoxCell, LIBoxParameters
    from norse.torch.module.lif_box import LIFBoxCell, LIFBoxParameters
    from norse.torch.utils.import_nir import _import_norse_module

    g = _graph(graph)
    reset = str(_meta(g, "reset", "zero"))

    def model_map(node: Any) -> torch.nn.Module | None:
        if isinstance(node, nir.LIF | nir.LI):
            beta, step = _beta(g, node, dt)
            inv = torch.full(np.asarray(node.tau).shape, (1.0 - beta) / step, dtype=torch.float32)
            leak = torch.zeros_like(inv)
            if isinstance(node, nir.LI):
                return LIBoxCell(LIBoxParameters(tau_mem_inv=inv, v_leak=leak), dt=step)
            thr = float(np.unique(np.asarray(node.v_threshold))[0])
            if reset == "subtract":
                sub = thr / beta

                def reset_method(z: torch.Tensor, v: torch.Tensor, _r: Any, _th: Any) -> torch.Tensor:
                    return v - z * sub
            else:
                def reset_method(z: torch.Tensor, v: torch.Tensor, _r: Any, _th: Any) -> torch.Tensor:
                    return (1 - z) * v
            p = LIFBoxParameters(tau_mem_inv=inv, v_th=torch.full_like(inv, thr), v_leak=leak,
                                 v_reset=torch.zeros_like(inv), reset_method=reset_method)
            return LIFBoxCell(p, dt=step)
        if isinstance(node, nir.Flatten):
            return _fix_flatten(node)
        return _import_norse_module(node, ignore_warnings=True, dt=dt or 1e-3)

    return nirtorch.load(g, model_map)


def quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a peer's function with its printing, warnings and logging below ERROR silenced
    (the peers' importers report every LIF node they read)."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            return fn(*args, **kwargs)
        finally:
            logging.disable(logging.NOTSET)


def neuron_nodes(graph: Any) -> list[str]:
    """Names of the LIF / LI nodes of ``graph``, input to output."""
    import nir

    g = _graph(graph)
    order, cur = [], next(k for k, v in g.nodes.items() if isinstance(v, nir.Input))
    succ = {a: b for a, b in g.edges}
    while cur in succ:
        cur = succ[cur]
        order.append(cur)
    return [k for k in order if isinstance(g.nodes[k], nir.LIF | nir.LI)]


def hooked(module: torch.nn.Module, names: list[str]) -> tuple[dict[str, list[torch.Tensor]], list[Any]]:
    """Forward hooks on the submodules of ``module`` named ``names`` (or ``nir_node_<name>``):
    ({name: the outputs it produced, one per call}, the hook handles to remove)."""
    caught: dict[str, list[torch.Tensor]] = {k: [] for k in names}
    mods = dict(module.named_modules())
    hooks = []
    for k in names:
        mod = mods.get(k) or mods.get(f"nir_node_{k}")
        if mod is None:
            continue

        def hook(_m: Any, _i: Any, out: Any, key: str = k) -> None:
            val = out[0] if isinstance(out, tuple) else out
            caught[key].append(val.detach().clone())

        hooks.append(mod.register_forward_hook(hook))
    return caught, hooks


def run_peer(module: torch.nn.Module, x: torch.Tensor, names: list[str],
             peer: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run a peer's module on time-major ``x`` [T, B, ...]; (output [T, B, n], {node: [T, B, n]}).

    ``peer`` is "snntorch" (modules keep hidden state: reset first; fx GraphModule) or
    "norse" (nirtorch GraphExecutor with explicit state). The neuron nodes' outputs are
    caught with forward hooks (spikes of LIF nodes; the membrane of an LI node in the
    adapters).
    """
    caught, hooks = hooked(module, names)
    outs = []
    try:
        with torch.no_grad():
            if peer == "snntorch":
                from snntorch import utils

                utils.reset(module)
                state = None
                for t in range(x.shape[0]):
                    res = module(x[t]) if state is None else module(x[t], state)
                    out, state = (res if isinstance(res, tuple) and len(res) == 2 and not isinstance(res[1], torch.Tensor)
                                  else (res, None))
                    outs.append(out[0] if isinstance(out, tuple) else out)
            else:
                state = None
                for t in range(x.shape[0]):
                    out, state = module(x[t], state)
                    outs.append(out[0] if isinstance(out, tuple) else out)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(outs), {k: torch.stack(v) for k, v in caught.items() if v}
