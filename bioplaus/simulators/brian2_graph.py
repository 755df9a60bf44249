"""Brian2 from the graph: a NIR graph's nodes as Brian2 equations, read as the NIR spec says.

Nothing of bioplaus's own update is used. The chain input → … → output is cut into layers by
`bioplaus.export.nir_layers` (the structural reader: Linear / Affine / Conv2d, pooling,
Flatten), and each node becomes Brian2 objects:

- a neuron node (``LIF``, ``LI``, ``IF``, ``CubaLIF``, ``CubaLI``) is a ``NeuronGroup`` whose
  equations are the node's ODE as the NIR spec writes it, with units, stated by the NIR-exact
  model of that node (`NeuronModel.brian2`: ``lif_nir`` for LIF/LI, ``if_nir`` for IF,
  ``cuba_lif`` for CubaLIF/CubaLI)::

      LIF / LI   tau dv/dt = (v_leak − v) + r I                     [tau in s]
      IF         dv/dt = r I                                         [r in 1/s]
      CubaLIF    tau_syn dI/dt = −I + w_in S,  tau_mem dv/dt = (v_leak − v) + r I

  every parameter per neuron as the node holds it; a firing node has the threshold
  ``v > v_threshold`` and the reset ``v ← v_reset`` in the same step; LI and CubaLI have
  neither (their membrane is recorded, not spikes).
- a synapse (``Linear`` / ``Affine`` weight, a ``Conv2d`` unrolled into its connections, a
  sum / average pool of spikes multiplied into the next synapse, ``Flatten`` the C-order
  index) is a ``Synapses`` object: ``I_syn_post += w`` on each presynaptic spike; the bias a
  constant current ``b`` of the neuron; the first synapse sums the held input sample
  (``I_x_post = w x_pre``, a summed variable of an input group reading the sample from a
  ``TimedArray``).
- ``SumPool2d`` → ``Threshold`` (max-pool of spikes) is a group of its own that fires where
  the window's spike sum exceeds the Threshold node's value.

The spike convention of the NIR-exact models (`bioplaus.neurons.nir_exact.SPIKE_CONVENTION`)
is kept inside Brian2: the input ``S = I_x + I_syn + b`` is held over each step of ``dt``
(Brian2 integrates the equations with ``method`` = the rule: ``"exact"`` solves the linear
ODE over the step, ``"euler"`` takes one forward-Euler step); a spike is the value 1 for one
step (``I_syn_post += w`` for one step, then ``I_syn = 0``: area ``w dt``); a layer's spikes
reach the next layer in the same step. The last needs Brian2's schedule changed: by default
spikes propagate after every group's integration (one step of delay per synapse), so every
object runs in the slot "groups" in the order of the chain: per layer, the incoming synapses,
the integration, the threshold, the reset, then ``I_syn = 0``. State starts at 0 and is
zeroed at the start of each sample's window of T steps (many samples run in one
simulation, hence one build in standalone mode).

dt, the rule and T come from the caller, else from the graph's metadata, else 1 ms,
"exact", 20. A graph whose meaning needs bioplaus's conventions (`bioplaus.export.nir.spec_notes`:
the subtractive reset of the default ``spiking`` model, an ``euler`` τ of that model, a
firing output read by its membrane, an encoder) is still read as the spec says, and the
result's ``note`` says in one line what differs from bioplaus's reading and why.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioplaus.errors import NIRFileError
from bioplaus.simulators.base import SimResult

# NIR node type -> (the NIR-exact model that states its equations, whether it fires)
NODE_MODELS = {"LIF": ("lif_nir", True), "LI": ("lif_nir", False), "IF": ("if_nir", True),
               "CubaLIF": ("cuba_lif", True), "CubaLI": ("cuba_lif", False)}
# A Brian2 parameter whose NIR name differs
NIR_NAME = {"theta": "v_threshold"}
INPUTS = "I_syn + I_x + b"
INTEGRATIONS = ("exact", "euler")


@dataclass
class Stage:
    """One Brian2 group of the chain: a layer's neuron node, or the max-pool after it."""

    name: str  # group name; "layer<i>" for the i-th neuron node
    n: int
    kind: str  # the NIR node type, or "maxpool"
    node: Any  # the NIR node (the Threshold node for a max-pool)
    weight: Any  # scipy.sparse CSR [n, n_pre]: from the stage before (the input for the first)
    bias: np.ndarray | None = None
    fires: bool = True
    node_name: str = ""  # the node's name in the graph

    @property
    def is_layer(self) -> bool:
        return self.kind != "maxpool"


def conv_matrix(w: np.ndarray, conv: Any, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Any:
    """A ``Conv2d`` (weight [C_out, C_in/groups, kh, kw], ``conv`` its stride, padding,
    dilation, groups) as a sparse [C_out·H'·W', C_in·H·W] matrix on C-order flat samples:
    out[co, y, x] = Σ w[co, c, a, b] in[g·C_in/groups + c, y s − p + a d, x s − p + b d]."""
    from scipy import sparse

    c_out, cg, kh, kw = w.shape
    c_in, h, wd = in_shape
    _, ho, wo = out_shape
    per_group = c_out // conv.groups
    co, ci, a, b, oy, ox = np.meshgrid(np.arange(c_out), np.arange(cg), np.arange(kh), np.arange(kw),
                                       np.arange(ho), np.arange(wo), indexing="ij", sparse=False)
    iy = oy * conv.stride[0] - conv.padding[0] + a * conv.dilation[0]
    ix = ox * conv.stride[1] - conv.padding[1] + b * conv.dilation[1]
    ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < wd)
    chan = (co // per_group) * cg + ci
    pre = ((chan * h + iy) * wd + ix)[ok]
    post = ((co * ho + oy) * wo + ox)[ok]
    m = sparse.coo_matrix((w[co, ci, a, b][ok], (post, pre)), shape=(c_out * ho * wo, c_in * h * wd)).tocsr()
    m.eliminate_zeros()
    return m


def pool_matrix(shape: tuple[int, ...], k: int, scale: float) -> Any:
    """Sparse [C·(H/k)·(W/k), C·H·W] matrix summing (× ``scale``) each k×k window (stride k,
    no padding; rows and columns beyond the last whole window are dropped)."""
    from scipy import sparse

    c, h, w = shape
    ho, wo = h // k, w // k
    ch, y, x = np.meshgrid(np.arange(c), np.arange(ho * k), np.arange(wo * k), indexing="ij")
    pre = ((ch * h + y) * w + x).ravel()
    post = ((ch * ho + y // k) * wo + x // k).ravel()
    return sparse.coo_matrix((np.full(pre.size, scale), (post, pre)), shape=(c * ho * wo, c * h * w)).tocsr()


def read_stages(graph: Any, src: str) -> tuple[list[Stage], tuple[int, ...]]:
    """The Brian2 groups the chain of ``graph`` states, and the sample shape its Input takes;
    NIRFileError (one line naming the node) for anything else."""
    from scipy import sparse

    from bioplaus.export import nir_layers
    from bioplaus.export.nir import _chain, _input_shape

    order = _chain(graph, src)
    in_shape = _input_shape(graph, order[0], src)
    blocks = nir_layers.blocks(graph, order[1:-1], in_shape, src)
    if not blocks:
        raise NIRFileError(f"{src}: expected synapse/neuron pairs between input and output")
    stages: list[Stage] = []
    carry: Any = None  # a sum / average pool of spikes, multiplied into the next synapse
    for i, b in enumerate(blocks):
        node = graph.nodes[b.neuron]
        kind = type(node).__name__
        if kind not in NODE_MODELS:
            raise NIRFileError(f"{src}: node {b.neuron!r}: {kind} where a neuron node was expected (Brian2 "
                               f"reads {', '.join(NODE_MODELS)})")
        fires = NODE_MODELS[kind][1]
        if not fires and i < len(blocks) - 1:
            raise NIRFileError(f"{src}: node {b.neuron!r}: a non-firing {kind} is read only as the last neuron node")
        if b.conv is not None:
            w = conv_matrix(b.weight, b.conv, b.in_shape, b.out_shape)
        else:
            w = sparse.csr_matrix(b.weight)
            w.eliminate_zeros()
        if carry is not None:
            w = (w @ carry).tocsr()
            carry = None
        n = math.prod(b.out_shape)
        bias = None
        if b.bias is not None:
            bias = np.repeat(b.bias, n // b.bias.size) if b.conv is not None else b.bias
        stages.append(Stage(f"layer{i}", n, kind, node, w, bias, fires, b.neuron))
        if b.pool > 1:
            if b.pool_kind == "max":
                thr = graph.nodes[b.nodes[-1]]
                stages.append(Stage(f"layer{i}_maxpool", math.prod(b.y_shape), "maxpool", thr,
                                    pool_matrix(b.out_shape, b.pool, 1.0), node_name=b.nodes[-1]))
            else:
                carry = pool_matrix(b.out_shape, b.pool, 1.0 if b.pool_kind == "sum" else 1.0 / b.pool ** 2)
    return stages, in_shape


def _param(src: str, stage: Stage, name: str) -> np.ndarray:
    """The per-neuron values of Brian2 parameter ``name`` from the stage's node (C-order)."""
    from bioplaus.export.nir import _array

    attr = NIR_NAME.get(name, name)
    if getattr(stage.node, attr, None) is None and name == "v_reset":
        return np.zeros(stage.n)  # LI / CubaLI: declared by the model's equations, never used
    arr = _array(src, stage.node_name, stage.node, attr, None)
    if arr.size not in (1, stage.n):
        raise NIRFileError(f"{src}: node {stage.node_name!r}: {attr} has {arr.size} values for {stage.n} neurons")
    if name.startswith("tau") and not (arr > 0).all():
        raise NIRFileError(f"{src}: node {stage.node_name!r}: {attr} must be > 0 s")
    return np.broadcast_to(arr.ravel(), (stage.n,)).copy() if arr.size == 1 else arr.ravel()


def _group_spec(src: str, st: Stage) -> tuple[str, str, str, dict[str, Any]]:
    """(equations, per-step code, window code, parameter values) of a stage's NeuronGroup:
    the node's NIR-exact model's `brian2()` equations plus the input terms, θ per neuron."""
    from bioplaus.neurons.base import neuron_model

    if st.is_layer:
        told = neuron_model(NODE_MODELS[st.kind][0]).brian2(fires=st.fires, reset="zero", inputs=INPUTS)
        eqs = told.equations + "I_x : 1\nb : 1 (constant)\n" + ("theta : 1 (constant)\n" if st.fires else "")
        step_code, window = told.step, told.window
    else:  # max-pool of spikes: fires where the window's spike sum exceeds the Threshold node's value
        eqs = "I_syn : 1\nI_x : 1\nb : 1 (constant)\ntheta : 1 (constant)\n"
        step_code, window = "I_syn = 0", "I_syn = 0"
    values: dict[str, Any] = {}
    for name in re.findall(r"^(\w+) : [^\n]*\(constant\)", eqs, flags=re.M):
        if name == "b":
            values[name] = st.bias if st.bias is not None else 0.0
        else:
            values[name] = _param(src, st, name if st.is_layer else "threshold")
    return eqs, step_code, window, values


def _meta_value(graph: Any, key: str, src: str) -> Any:
    from bioplaus.export.nir import _meta

    return _meta(graph, key, None, src)


def spec_note(graph: Any, rule: str, src: str = "NIR graph") -> str:
    """One line: what bioplaus's reading of ``graph`` does that this reading (the spec's, with
    the integration ``rule``) does not, and why (`bioplaus.export.nir.spec_notes`); "" when
    they agree. An ``euler`` graph read with "euler" decays as bioplaus does, so that item of
    the export's notes does not apply here."""
    from bioplaus.export.nir import spec_notes

    stated = _meta_value(graph, "integration", src)
    notes = [n for n in spec_notes(graph) if not (rule == "euler" and "forward Euler's" in n)]
    if stated in INTEGRATIONS and stated != rule:
        notes.append(f"read with integration = {rule!r}; the graph states {stated!r} (bioplaus's reading "
                     "follows the graph)")
    if not notes:
        return ""
    return ("Brian2 reads the graph as the NIR spec states it; bioplaus's reading differs: "
            + "; ".join(notes))


def encoded_input(graph: Any, x: torch.Tensor, T: int, src: str) -> np.ndarray:
    """The graph's input per step [T, S, D]: the sample held over T steps (``direct``), or,
    for a graph whose metadata names a spike encoder (which NIR has no node for), bioplaus's
    encoding of it (values 1 for one step)."""
    enc = _meta_value(graph, "encoder", src) or "direct"
    S = x.shape[0]
    flat = x.reshape(S, -1).double()
    if enc == "direct":
        return np.broadcast_to(flat.numpy(), (T, *flat.shape))
    from bioplaus.export.nir import from_nir

    net = from_nir(graph)
    with torch.no_grad():
        return net.encode(x.reshape(S, *net.input_shape)).reshape(T, S, -1).double().numpy()


def simulate_graph(graph: Any, x: torch.Tensor, *, mode: str = "runtime", cache_dir: str | Path | None = None,
                   dt: float | None = None, integration: str | None = None, T: int | None = None) -> SimResult:
    """Run the NIR ``graph`` (a ``nir.NIRGraph`` or a file) in Brian2 on samples ``x`` [S, ...]
    as the spec states it (module docstring); the result's ``note`` says what bioplaus's
    reading does differently ("" for a graph that means what the spec says)."""
    import brian2 as b2

    from bioplaus.export.nir import graph_arg
    from bioplaus.simulators.brian2_runner import brian2_device, standalone_cache

    graph, src = graph_arg(graph)
    stages, in_shape = read_stages(graph, src)
    dt = dt if dt is not None else _meta_value(graph, "dt", src) or 1e-3
    rule = integration or _meta_value(graph, "integration", src) or "exact"
    T = T if T is not None else _meta_value(graph, "T", src) or 20
    if not isinstance(dt, int | float) or isinstance(dt, bool) or not (math.isfinite(dt) and dt > 0):
        raise NIRFileError(f"{src}: dt={dt!r}: expected a positive number of seconds")
    if rule not in INTEGRATIONS:
        raise NIRFileError(f"{src}: integration={rule!r}: expected one of {', '.join(INTEGRATIONS)}")
    if not isinstance(T, int) or isinstance(T, bool) or not 1 <= T <= 1_000_000:
        raise NIRFileError(f"{src}: T={T!r}: expected an integer in [1, 1000000]")
    dt = float(dt)
    x = torch.as_tensor(x)
    S = int(x.shape[0])
    if math.prod(x.shape[1:]) != math.prod(in_shape):
        raise NIRFileError(f"{src}: samples of shape {tuple(x.shape[1:])}; the graph takes {in_shape}")
    stim = encoded_input(graph, x, T, src).transpose(1, 0, 2).reshape(S * T, -1)  # sample-major steps
    last = stages[-1]
    readout = "mem_mean" if not last.fires else (_meta_value(graph, "readout", src) or "spike_count")

    specs = [_group_spec(src, st) for st in stages]  # every parameter checked before Brian2 builds anything
    directory = None
    if mode == "standalone":
        sig = repr([(s.name, s.kind, s.n, s.weight.nnz, s.bias is not None) for s in stages]) + f"{S},{T},{rule}"
        directory = Path(cache_dir) if cache_dir else standalone_cache("graph_" + hashlib.sha1(sig.encode()).hexdigest()[:12])
    t0 = time.perf_counter()
    with brian2_device(mode, "float64", directory) as finish:
        step = dt * b2.second
        clock = b2.Clock(step, name="bioplaus_clock")
        held = {"stim": b2.TimedArray(stim, dt=step, name="stim")}  # the input of each step, held over it
        inp = b2.NeuronGroup(stim.shape[1], "x = stim(t, i) : 1", clock=clock, name="inp", namespace=held)
        objs: list[Any] = [inp]
        groups: dict[str, Any] = {}
        spike_mons: dict[str, Any] = {}
        prev: Any = inp
        for j, st in enumerate(stages):
            base = 10 * (j + 1)  # schedule: everything in "groups", in the order of the chain
            eqs, step_code, window, values = specs[j]
            # IF's dv/dt = r I does not depend on v, which Brian2's "exact" (linear) solver refuses;
            # for an input held over the step, forward Euler is its exact solution
            g = b2.NeuronGroup(st.n, eqs, method="euler" if st.kind == "IF" else rule, clock=clock, name=f"pop_{st.name}",
                               threshold=("v > theta" if st.is_layer else "I_syn + b > theta") if st.fires else None,
                               reset=("v = v_reset" if st.is_layer else "") if st.fires else None, namespace={})
            for name, val in values.items():
                setattr(g, name + "_", val)
            post, pre_idx = st.weight.nonzero()
            vals = np.asarray(st.weight[post, pre_idx]).ravel()
            if j == 0:
                syn = b2.Synapses(inp, g, "w : 1\nI_x_post = w * x_pre : 1 (summed)", clock=clock,
                                  name=f"syn_{st.name}", namespace=held)
                syn.connect(i=pre_idx.astype(np.int64), j=post.astype(np.int64))
                syn.w_ = vals
                upd = syn.summed_updaters["I_x_post"]
                upd.when, upd.order = "groups", base
            else:
                syn = b2.Synapses(prev, g, "w : 1", on_pre="I_syn_post += w", clock=clock, name=f"syn_{st.name}")
                syn.connect(i=pre_idx.astype(np.int64), j=post.astype(np.int64))
                syn.w_ = vals
                syn.pre.when, syn.pre.order = "groups", base + 1
            g.state_updater.when, g.state_updater.order = "groups", base + 2
            if st.fires:
                g.thresholder["spike"].when, g.thresholder["spike"].order = "groups", base + 3
                if st.is_layer:
                    g.resetter["spike"].when, g.resetter["spike"].order = "groups", base + 4
            g.run_regularly(step_code, when="groups", order=base + 5, name=f"step_{st.name}")
            g.run_regularly(window, dt=T * step, when="start", name=f"window_{st.name}")
            objs += [g, syn]
            groups[st.name] = g
            if st.is_layer and st.fires:
                spike_mons[st.name] = b2.SpikeMonitor(g, when="end", name=f"spk_{st.name}")
            prev = g
        vmon = b2.StateMonitor(groups[last.name], "v", record=True, when="end", name="v_out")
        net = b2.Network(*objs, *spike_mons.values(), vmon)
        t1 = time.perf_counter()
        net.run(S * T * step, namespace={})
        sim_seconds = finish()
        t2 = time.perf_counter()
        spikes: dict[str, np.ndarray] = {}
        for name, mon in spike_mons.items():
            k = np.rint(np.asarray(mon.t_[:]) / dt).astype(np.int64)
            raster = np.zeros((S * T, _n(stages, name)), dtype=bool)
            raster[k, np.asarray(mon.i[:], dtype=np.int64)] = True
            spikes[name] = raster.reshape(S, T, -1).transpose(1, 0, 2)
        mem = np.asarray(vmon.v[:]).T.reshape(S, T, -1).transpose(1, 0, 2).copy()
    logits = mem.mean(0) if readout == "mem_mean" else spikes[last.name].mean(0).astype(np.float64)
    return SimResult(spikes, mem, logits, dt, T, last.name,
                     {"build": t1 - t0, "run": t2 - t1, "sim": sim_seconds if sim_seconds is not None else t2 - t1},
                     note=spec_note(graph, rule, src))


def _n(stages: list[Stage], name: str) -> int:
    return next(s.n for s in stages if s.name == name)
