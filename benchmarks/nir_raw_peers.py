"""Raw peer importers of a NIR graph, run as their users would, given only ``dt`` (issue 21).

For each peer, the thin runner a user writes: read the graph with the peer's own importer
(``dt`` passed where its API takes one, nothing else: no bioplaus metadata, no rewriting of
the graph), feed the input as the graph's spike convention says (direct encoding: the
sample, held over each of the T steps), and read the output node (summed over time, argmax
= the class) and every neuron node's spikes. Nothing here corrects a peer.

``readout=True`` is the one thing such a user adds when the importer stops at the graph's
read-out node (``LI`` / ``CubaLI``: none of the torch peers but Norse maps them, and Norse
drops them silently): that node, built from the peer's own leaky integrator with the
peer's own reading of τ (its LIF's), returning its membrane. Every other node is still the
importer's. Rows with it are labelled "+ readout" in benchmarks/results/nir_agreement.md.

Peers (each optional; `versions` says which import):

- ``norse``        ``norse.torch.from_nir(graph, dt=dt)``
- ``snntorch``     ``snntorch.import_nir.import_from_nir(graph)`` (no dt argument)
- ``spikingjelly`` ``spikingjelly.activation_based.nir_exchange.import_from_nir(graph, dt=dt)``
- ``sinabs``       ``sinabs.from_nir(graph, batch_size=B)`` (no dt argument)
- ``rockpool``     ``rockpool.nn.modules.torch.nir.from_nir(graph)`` (no dt argument)
- ``spyx``         ``spyx.nir.from_nir(graph, x, dt=dt)`` (JAX; builds and runs in one call)

docs/export.md ("Raw peers") lists what each gets wrong, measured with these runners.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bioplaus.export.peers import hooked, quiet, run_peer

PEERS = ("norse", "snntorch", "spikingjelly", "sinabs", "rockpool", "spyx")
_DIST = {"norse": "norse", "snntorch": "snntorch", "spikingjelly": "spikingjelly", "sinabs": "sinabs",
         "rockpool": "rockpool", "spyx": "spyx"}


@dataclass
class PeerRun:
    """What a peer's module gave: its output per step and each neuron node's spikes."""

    out: np.ndarray  # [T, B, n] the graph's output node per step
    spikes: dict[str, np.ndarray]  # neuron node -> [T, B, ...] (the peer's layout)


def versions() -> dict[str, str | None]:
    """Installed version of each peer (None: not installed)."""
    got: dict[str, str | None] = {}
    for p in PEERS:
        try:
            got[p] = importlib.metadata.version(_DIST[p])
        except importlib.metadata.PackageNotFoundError:
            got[p] = None
    return got


def available(peer: str) -> bool:
    """Whether ``peer``'s importer imports here."""
    try:
        _import(peer)
    except Exception:  # noqa: BLE001 - any failure to import means "not available"
        return False
    return True


def _import(peer: str) -> Any:
    if peer == "norse":
        import norse.torch as mod
    elif peer == "snntorch":
        import snntorch.import_nir as mod
    elif peer == "spikingjelly":
        import spikingjelly.activation_based.nir_exchange as mod
    elif peer == "sinabs":
        import sinabs as mod
    elif peer == "rockpool":
        import rockpool.nn.modules.torch.nir as mod
    elif peer == "spyx":
        import spyx.nir as mod
    else:
        raise ValueError(f"unknown peer {peer!r}; valid: {', '.join(PEERS)}")
    return mod


def neuron_nodes(graph: Any) -> list[str]:
    """Names of the neuron nodes (LIF, IF, CubaLIF, LI, CubaLI) of a chain graph, input to output."""
    import nir

    succ = dict(graph.edges)
    cur, order = next(k for k, v in graph.nodes.items() if isinstance(v, nir.Input)), []
    while cur in succ:
        cur = succ[cur]
        order.append(cur)
    kinds = (nir.LIF, nir.IF, nir.CubaLIF, nir.LI, nir.CubaLI)
    return [k for k in order if isinstance(graph.nodes[k], kinds)]


def direct_input(x: torch.Tensor, T: int) -> torch.Tensor:
    """The direct encoding as the graph states it: the sample held over each of T steps, [T, B, ...]."""
    return x.unsqueeze(0).expand(T, *x.shape).contiguous()


def run(peer: str, graph: Any, x: torch.Tensor, dt: float, T: int, *, readout: bool = False) -> PeerRun:
    """Run ``graph`` (a ``nir.NIRGraph``; importers may edit it, pass a fresh one) in ``peer``
    on samples ``x`` [B, ...] (the Input node's shape) for T steps of ``dt`` s."""
    xt = direct_input(x.float(), T)
    names = neuron_nodes(graph)
    if peer == "spyx":
        return _run_spyx(graph, xt, dt, names)
    if peer == "sinabs":
        return _run_sinabs(graph, xt, names)
    if peer == "rockpool":
        mod = quiet(_import("rockpool").from_nir, graph)
        return _run_batch_major(mod, xt, names)
    mod = quiet(_load_torch, peer, graph, dt, readout)
    out, caught = quiet(run_peer, mod, xt, names, "snntorch" if peer == "snntorch" else "norse")
    return PeerRun(out.numpy(), {k: v.numpy() for k, v in caught.items()})


def _load_torch(peer: str, graph: Any, dt: float, readout: bool) -> torch.nn.Module:
    """The module of a torch peer whose runner steps ``module(x_t[, state])``."""
    import nir
    import nirtorch

    if peer == "norse":
        nt = _import("norse")
        if not readout:
            return nt.from_nir(graph, dt=dt)
        from norse.torch.module.leaky_integrator_box import LIBoxCell, LIBoxParameters
        from norse.torch.utils.import_nir import _import_norse_module

        def li(tau: Any, leak: Any) -> torch.nn.Module:  # Norse's LIF reading of τ and v_leak, no threshold
            inv = 1 / torch.as_tensor(np.asarray(tau), dtype=torch.float32)
            return LIBoxCell(LIBoxParameters(tau_mem_inv=inv, v_leak=torch.as_tensor(np.asarray(leak), dtype=torch.float32)),
                             dt=dt)

        def node_map(node: Any) -> torch.nn.Module | None:
            if isinstance(node, nir.LI):
                return li(node.tau, node.v_leak)
            if isinstance(node, nir.CubaLI):
                return _Chain(li(node.tau_syn, 0 * node.tau_syn), li(node.tau_mem, node.v_leak))
            return _import_norse_module(node, dt=dt)

        return nirtorch.load(graph, node_map)
    if peer == "snntorch":
        imp = _import("snntorch")
        if not readout:
            return imp.import_from_nir(graph)
        import snntorch as snn

        step = 1e-4  # snntorch's importer's own dt (hard-coded for its LIF and CubaLIF)

        def own(n: Any) -> torch.nn.Module:
            return imp._nir_to_snntorch_module(n, init_hidden=True)

        def li(node: Any) -> torch.nn.Module:
            beta = float(np.unique(1 - step / np.asarray(node.tau))[0])
            return _SnnMembrane(snn.Leaky(beta=beta, threshold=1.0, reset_mechanism="none", init_hidden=True))

        def cuba_li(node: Any) -> torch.nn.Module:
            alpha = float(np.unique(1 - step / np.asarray(node.tau_syn))[0])
            beta = float(np.unique(1 - step / np.asarray(node.tau_mem))[0])
            return _SnnMembrane(snn.Synaptic(alpha=alpha, beta=beta, threshold=1.0, reset_mechanism="none",
                                             init_hidden=True))

        g = imp._replace_rnn_subgraph_with_nirgraph(graph)
        node_map = {k: own for k in (nir.Affine, nir.Linear, nir.Conv2d, nir.Flatten, nir.AvgPool2d, nir.IF,
                                     nir.LIF, nir.CubaLIF)}
        return nirtorch.nir_to_torch(g, {**node_map, nir.LI: li, nir.CubaLI: cuba_li})
    if peer == "spikingjelly":
        imp = _import("spikingjelly")
        if not readout:
            return imp.import_from_nir(graph, dt=dt)
        from spikingjelly.activation_based import functional, neuron
        from spikingjelly.activation_based.nir_exchange.from_nir import (
            _NIRStatefulModule,
            _NodeMapper,
        )

        def sj_li(node: Any) -> torch.nn.Module:  # SpikingJelly's LIF reading (tau in steps), no threshold
            tau = float(np.unique(np.asarray(node.tau))[0]) / dt
            r = float(np.unique(np.asarray(node.r))[0])
            return _SJMembrane(_NIRStatefulModule(neuron.LIFNode(
                tau=tau, decay_input=not np.isclose(r, tau), v_threshold=float("inf"), v_reset=0.0)))

        def sj_cuba_li(node: Any) -> torch.nn.Module:
            return _SJMembrane(_NIRStatefulModule(neuron.CUBALIFNode(
                c_decay=1.0 - dt / float(np.unique(np.asarray(node.tau_syn))[0]),
                v_decay=1.0 - dt / float(np.unique(np.asarray(node.tau_mem))[0]),
                v_threshold=float("inf"), v_reset=0.0)))

        gm = nirtorch.nir_to_torch(graph, {**_NodeMapper(dt=dt).map_dict, nir.LI: sj_li, nir.CubaLI: sj_cuba_li})
        functional.set_step_mode(gm, "s")
        return gm
    raise ValueError(f"{peer}: not a step-wise torch peer")


class _Chain(torch.nn.Module):
    """Two stateful cells in series (Norse's CubaLIF pattern: synapse current, then membrane)."""

    def __init__(self, a: torch.nn.Module, b: torch.nn.Module) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        sa, sb = state if state is not None else (None, None)
        i, sa = self.a(x, sa)
        v, sb = self.b(i, sb)
        return v, (sa, sb)


class _SnnMembrane(torch.nn.Module):
    """An snntorch neuron with init_hidden whose membrane is the output (the read-out)."""

    def __init__(self, cell: torch.nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cell(x)
        return self.cell.mem


class _SJMembrane(torch.nn.Module):
    """A SpikingJelly node (stateful wrapper of its importer) returning its membrane ``v``."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.v_index = list(inner.module._memories).index("v")

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        _, st = self.inner(x, state)
        v = st[self.v_index]
        return (v if isinstance(v, torch.Tensor) else torch.full_like(x, float(v))), st


def _run_sinabs(graph: Any, xt: torch.Tensor, names: list[str]) -> PeerRun:
    """Sinabs layers take all steps at once, batch and time merged: [B·T, ...] (batch major)."""
    sinabs = _import("sinabs")
    T, B = xt.shape[:2]
    mod = quiet(sinabs.from_nir, graph, batch_size=B)
    caught, hooks = hooked(mod, names)
    try:
        with torch.no_grad():
            out = quiet(mod, xt.transpose(0, 1).reshape(B * T, *xt.shape[2:]))
    finally:
        for h in hooks:
            h.remove()
    out = out[0] if isinstance(out, tuple) else out

    def tm(a: torch.Tensor) -> np.ndarray:
        return a.reshape(B, T, *a.shape[1:]).transpose(0, 1).numpy()

    return PeerRun(tm(out), {k: tm(v[0]) for k, v in caught.items() if v})


def _run_batch_major(mod: torch.nn.Module, xt: torch.Tensor, names: list[str]) -> PeerRun:
    """Rockpool's torch modules take [B, T, N] in one call."""
    caught, hooks = hooked(mod, names)
    try:
        with torch.no_grad():
            out = mod(xt.transpose(0, 1))
    finally:
        for h in hooks:
            h.remove()
    out = out[0] if isinstance(out, tuple) else out
    return PeerRun(out.transpose(0, 1).numpy(), {k: v[0].transpose(0, 1).numpy() for k, v in caught.items() if v})


def _run_spyx(graph: Any, xt: torch.Tensor, dt: float, names: list[str]) -> PeerRun:
    """Spyx builds and runs in ``from_nir``; its model is then stepped again layer by layer
    (what ``spyx.nn.Sequential`` does) to read each neuron layer's spikes, in the graph's order.
    Spyx runs channels-last: conv inputs are given as [T, B, H, W, C] and read back as C-first."""
    import jax.numpy as jnp
    import spyx.nn as snn

    spx = _import("spyx")
    x = xt.numpy()
    if x.ndim == 5:
        x = x.transpose(0, 1, 3, 4, 2)
    model, out = quiet(spx.from_nir, graph, jnp.asarray(x), dt=dt)
    neuron_types = tuple(c for c in (snn.LIF, snn.IF, snn.CuBaLIF, getattr(snn, "PSU_LIF", None)) if c is not None)
    layers = list(model.layers)
    which = [i for i, la in enumerate(layers) if isinstance(la, neuron_types)]
    state = model.initial_state(x.shape[1])
    rec: dict[int, list[np.ndarray]] = {i: [] for i in which}
    for t in range(x.shape[0]):
        h, new = jnp.asarray(x[t]), []
        for i, (la, s) in enumerate(zip(layers, state, strict=True)):
            if s is not None:
                h, s = la(h, s)
            else:
                h = la(h)
            new.append(s)
            if i in rec:
                rec[i].append(np.asarray(h))
        state = new
    spikes = {}
    for name, i in zip(names, which):
        a = np.stack(rec[i])
        spikes[name] = a.transpose(0, 1, 4, 2, 3) if a.ndim == 5 else a
    return PeerRun(np.asarray(out), spikes)


def load_only(peer: str, graph: Any, dt: float, *, readout: bool = False) -> Any:
    """Just the import step (for tests of importer errors); returns the peer's module."""
    if peer == "spyx":
        import jax.numpy as jnp

        shape = np.asarray(next(iter(graph.nodes["input"].input_type.values())))
        return quiet(_import("spyx").from_nir, graph, jnp.zeros((1, 1, *[int(s) for s in shape])), dt=dt)[0]
    if peer == "sinabs":
        return quiet(_import("sinabs").from_nir, graph, batch_size=1)
    if peer == "rockpool":
        return quiet(_import("rockpool").from_nir, graph)
    return quiet(_load_torch, peer, graph, dt, readout)


__all__ = ["PEERS", "PeerRun", "available", "direct_input", "load_only", "neuron_nodes", "run", "versions"]
