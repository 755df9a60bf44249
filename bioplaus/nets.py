"""Layer stacks (MLP, small CNN) built from the config on a neuron model (``network.backend``).

A ``Layer`` is a synapse (Linear or Conv2d) -> a neuron population (`bioplaus.neurons`: rate
activation, LIF, ...) -> optional max-pool. On a temporal model every tensor is time-major
``[T, B, ...]`` and the synapse runs once on the ``[(T*B), ...]`` view. After each forward a layer keeps its
``state`` (presynaptic input, synaptic current, membrane, output) for rules and probes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bioplaus.config import NetworkConfig
from bioplaus.device import generator as make_generator
from bioplaus.errors import ConfigError
from bioplaus.neurons.base import Population, neuron_model
from bioplaus.neurons.synapses import check_spike_gemm_env, spike_linear
from bioplaus.resources import check_bytes, size_text

# How a layer pools its neurons' output over pool x pool windows (stride = pool, no padding).
POOL_KINDS = ("max", "sum", "avg")


@dataclass
class LayerState:
    """What a layer saw and did on its last forward pass (tensors keep their graph)."""

    input: Tensor | None = None  # presynaptic activity (flattened for Linear)
    current: Tensor | None = None  # synaptic current W·input (+ b)
    mem: Tensor | None = None  # membrane potential (models that have one)
    out: Tensor | None = None  # neuron output: activation (rate) or spikes (spiking)
    y: Tensor | None = None  # what the layer returns (after pooling)


class Layer(nn.Module):
    """Synapse -> neuron -> pool; time-major when the neuron model is ``temporal``."""

    def __init__(
        self,
        synapse: nn.Linear | nn.Conv2d,
        neuron: Population,
        *,
        pool: int = 1,
        pool_kind: str = "max",
        index: int = 0,
        is_output: bool = False,
    ) -> None:
        super().__init__()
        self.synapse = synapse
        self.neuron = neuron
        self.pool = pool
        # "max" (every config-built net); "sum" / "avg" only for nets read from a NIR graph
        # whose SumPool2d / AvgPool2d nodes pool the spikes (bioplaus.export.nir.from_nir).
        if pool_kind not in POOL_KINDS:
            raise ConfigError(f"pool_kind: {pool_kind!r}; valid: {', '.join(POOL_KINDS)}")
        self.pool_kind = pool_kind
        self.temporal = neuron.model.temporal
        # Spikes (0/1) feed the synapses of a spiking model: they may take the spike path.
        self.spike_synapse = neuron.model.spikes
        self.index = index
        self.is_output = is_output
        self.state = LayerState()
        # A rule may replace how the synapse is applied (feedback alignment swaps the
        # backward weights); the forward value must stay W·x.
        self.synapse_fn: Callable[[Tensor], Tensor] | None = None

    @property
    def dt(self) -> float:
        """Time step in seconds (temporal models); 0 for static ones."""
        params = getattr(self.neuron, "params", None)
        return float(params.dt) if self.temporal and params is not None else 0.0

    @property
    def name(self) -> str:
        return f"layer{self.index}"

    @property
    def weight(self) -> Tensor:
        return self.synapse.weight

    @property
    def is_conv(self) -> bool:
        return isinstance(self.synapse, nn.Conv2d)

    @property
    def n_out(self) -> int:
        return self.synapse.out_channels if self.is_conv else self.synapse.out_features

    def forward(self, x: Tensor) -> Tensor:
        syn = self.synapse_fn or self.synapse
        if self.spike_synapse and self.synapse_fn is None and isinstance(self.synapse, nn.Linear):
            # spike-fed synapses run on an exact fast path (neurons/synapses.py)
            syn = functools.partial(spike_linear, linear=self.synapse)
        if self.temporal:
            n_t, n_b = x.shape[:2]
            if x.stride(0) == 0:
                # Constant input over time (direct encoding): the synapse runs once on B rows
                # and its current is broadcast over T; autograd then sums the error over T
                # before the weight-gradient matmul, so both matmuls are T times smaller.
                x0 = self._flat(x[0])
                c0 = syn(x0)
                inp = x0.unsqueeze(0).expand(n_t, *x0.shape)
                cur = c0.unsqueeze(0).expand(n_t, *c0.shape)
            else:
                flat = self._flat(x.reshape(n_t * n_b, *x.shape[2:]))
                inp = flat.reshape(n_t, n_b, *flat.shape[1:])
                c = syn(flat)
                cur = c.reshape(n_t, n_b, *c.shape[1:])
        else:
            inp = self._flat(x)
            cur = syn(inp)
        out, mem = self.neuron(cur)
        y = out
        if self.pool > 1:
            k = 2 if self.temporal else 1
            flat = out.reshape(-1, *out.shape[k:])
            if self.pool_kind == "max":
                pooled = nn.functional.max_pool2d(flat, self.pool)
            else:  # sum = average times the window's size, computed as one sum (divisor 1)
                pooled = nn.functional.avg_pool2d(flat, self.pool,
                                                  divisor_override=1 if self.pool_kind == "sum" else None)
            y = pooled.reshape(*out.shape[:k], *pooled.shape[1:])
        self.state = LayerState(input=inp, current=cur, mem=mem, out=out, y=y)
        return y

    def _flat(self, x: Tensor) -> Tensor:
        return x.flatten(1) if (not self.is_conv and x.dim() > 2) else x

    def presynaptic_trace(self, lam: float) -> Tensor:
        """Eligibility trace â(t) = λ â(t-1) + s_in(t) of the last input (temporal only)."""
        x = self.state.input
        if x is None or not self.temporal:
            raise RuntimeError(f"{self.name}: no temporal input recorded yet")
        tr = torch.empty_like(x)
        tr[0] = x[0]
        for t in range(1, x.shape[0]):
            tr[t] = lam * tr[t - 1] + x[t]
        return tr


class Net(nn.Module):
    """A stack of layers plus (temporal models) the input encoder and the readout."""

    def __init__(
        self,
        layers: list[Layer],
        *,
        backend: str,
        input_shape: tuple[int, ...],
        n_classes: int,
        cfg: NetworkConfig,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.backend = backend
        self.input_shape = tuple(input_shape)
        self.n_classes = n_classes
        self.cfg = cfg
        self.temporal = neuron_model(backend).temporal
        s = cfg.spiking
        self.T, self.dt = s.T, s.dt
        self.encoder = s.encoder
        self.readout_kind = s.readout
        self.generator = make_generator(seed + 7919)

    # -- time ------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """Static models: x as is. Temporal: ``[T, B, ...]`` from the configured encoder."""
        if not self.temporal:
            return x
        from neuro_data import encode

        opts = {}
        if self.encoder == "poisson" and self.cfg.spiking.max_rate is not None:
            opts["max_rate"] = self.cfg.spiking.max_rate
        gen = self.generator if self.encoder == "poisson" else None
        return encode(x, self.encoder, self.T, self.dt, generator=gen, **opts)

    def rate(self, y: Tensor) -> Tensor:
        """Time-averaged activity (temporal) or the activity itself (static)."""
        return y.mean(0) if self.temporal else y

    def readout(self) -> Tensor:
        """Logits ``[B, classes]`` from the output layer's last state."""
        st = self.layers[-1].state
        if not self.temporal:
            return st.out
        if self.readout_kind == "mem_mean":
            return st.mem.mean(0)
        return st.out.mean(0)

    def forward(self, x: Tensor) -> Tensor:
        h = self.encode(x)
        for layer in self.layers:
            h = layer(h)
        return self.readout()

    def forward_detached(self, x: Tensor) -> list[Tensor]:
        """Run every layer on the detached output of the one below (no gradient crosses)."""
        h = self.encode(x)
        outs = []
        for layer in self.layers:
            h = layer(h.detach())
            outs.append(h)
        return outs

    @property
    def output_layer(self) -> Layer:
        return self.layers[-1]

    def describe(self) -> str:
        """One line: backend and layer widths."""
        widths = [str(int(math.prod(self.input_shape)))] + [
            (f"c{la.n_out}" if la.is_conv else str(la.n_out)) for la in self.layers
        ]
        return f"{self.backend} {'-'.join(widths)}" + (f" T={self.T} dt={self.dt}" if self.temporal else "")


# ----------------------------------------------------------------------------- sizes

# Most parameters a network may have: past this a model is a mistake in the config, not a
# model (and float32 weights alone would take 8 GB).
MAX_PARAMS = 2_000_000_000
# Bytes per parameter while training: weight, gradient, optimiser state (momentum or two
# Adam moments), and a rule's second net (CCL's feedback) of about the same size.
BYTES_PER_PARAM = 16


def conv_out(size: int, kernel: int, padding: int, stride: int = 1) -> int:
    """Output length of a convolution along one axis: ⌊(n + 2p - k) / s⌋ + 1."""
    return (size + 2 * padding - kernel) // stride + 1


@dataclass
class ConvPlan:
    """One conv block: its input channels, output channels and the size it produces."""

    c_in: int
    c_out: int
    conv_hw: tuple[int, int]  # after the convolution
    pool: int  # max-pool actually applied (1 = none)
    out_hw: tuple[int, int]  # after the pool


@dataclass
class NetPlan:
    """Shapes and sizes of the layer stack ``build_net`` makes, computed without allocating."""

    convs: list[ConvPlan]
    linear: list[tuple[int, int]]  # (in, out) of each Linear, output layer last
    params: int
    units: int  # neurons of all layers for one sample (one time step)


def plan_net(cfg: NetworkConfig, input_shape: tuple[int, ...], n_classes: int) -> NetPlan:
    """The shapes of the net described by ``cfg``; ConfigError if an image shrinks to nothing.

    A conv block pads by ⌊k/2⌋ with stride 1, so it maps H to H + 2⌊k/2⌋ - k + 1 (H for odd
    k, H + 1 for even k); its max-pool (when H and W are both >= pool) then maps H to
    ⌊H / pool⌋.
    """
    shape = tuple(int(v) for v in input_shape)
    if not shape or any(v <= 0 for v in shape):
        raise ConfigError(f"data: samples of shape {shape} have no values to learn from")
    convs: list[ConvPlan] = []
    params = units = 0
    bias = int(bool(cfg.bias))
    if cfg.arch == "cnn":
        if len(shape) != 3:
            raise ConfigError(f"network.arch: a cnn needs image input (C, H, W), got shape {shape}")
        c, h, w = shape
        k, pad = cfg.kernel, cfg.kernel // 2
        for i, ch in enumerate(cfg.channels):
            hc, wc = conv_out(h, k, pad), conv_out(w, k, pad)
            if hc <= 0 or wc <= 0:
                raise ConfigError(f"network.kernel: conv block {i} maps a {h}x{w} image to {hc}x{wc}")
            pool = cfg.pool if min(hc, wc) >= cfg.pool else 1
            convs.append(ConvPlan(c, ch, (hc, wc), pool, (hc // pool, wc // pool)))
            params += ch * c * k * k + bias * ch
            units += ch * hc * wc
            c, h, w = ch, hc // pool, wc // pool
        n_in = c * h * w
    else:
        n_in = math.prod(shape)
    linear = []
    for width in [*cfg.hidden, n_classes]:
        linear.append((n_in, width))
        params += n_in * width + bias * width
        units += width
        n_in = width
    return NetPlan(convs, linear, params, units)


def check_size(params: int, where: str, activations: int = 0) -> None:
    """Refuse a model of more than MAX_PARAMS parameters, or whose training would need more
    than this machine's memory (``activations``: float32 values alive during one step)."""
    if params > MAX_PARAMS:
        raise ConfigError(f"{where}: the network would have {_count(params)} parameters, about "
                          f"{size_text(params * BYTES_PER_PARAM)} to train (at most {_count(MAX_PARAMS)})")
    check_bytes(params * BYTES_PER_PARAM + activations * 4, where, f"training this network ({_count(params)} parameters)")


def _count(n: int) -> str:
    return f"{n:.3g}" if n < 10**15 else f"~1e{len(str(n)) - 1}"


# ----------------------------------------------------------------------------- building


def init_weights(mod: nn.Module, how: str, gain: float = 1.0) -> None:
    """Initialise a synapse's weight (``network.init``: default | kaiming | xavier | orthogonal), then scale it."""
    w = mod.weight
    if how == "kaiming":
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    elif how == "xavier":
        nn.init.xavier_uniform_(w)
    elif how == "orthogonal":
        nn.init.orthogonal_(w)
    if gain != 1.0:
        with torch.no_grad():
            w.mul_(gain)


def build_net(
    cfg: NetworkConfig, input_shape: tuple[int, ...], n_classes: int, seed: int = 0
) -> Net:
    """The network described by ``cfg`` for samples of ``input_shape`` (C, H, W)."""
    model = neuron_model(cfg.backend)
    plan = plan_net(cfg, tuple(input_shape), n_classes)
    if torch.empty(0).device.type != "meta":  # a skeleton on the meta device allocates nothing
        check_size(plan.params, "network")
    torch.manual_seed(seed)
    if model.spikes:
        check_spike_gemm_env()  # a bad value fails here, not at the first large product
    hidden, output = model.params_from(cfg, False), model.params_from(cfg, True)
    layers: list[Layer] = []
    shape = tuple(input_shape)
    for cp in plan.convs:
        conv = nn.Conv2d(cp.c_in, cp.c_out, cfg.kernel, padding=cfg.kernel // 2, bias=cfg.bias)
        layers.append(Layer(conv, model.population(hidden), pool=cp.pool, index=len(layers)))
    n_in = plan.linear[0][0]
    for width in cfg.hidden:
        lin = nn.Linear(n_in, width, bias=cfg.bias)
        layers.append(Layer(lin, model.population(hidden), index=len(layers)))
        n_in = width
    out = nn.Linear(n_in, n_classes, bias=cfg.bias)
    layers.append(Layer(out, model.population(output), index=len(layers), is_output=True))
    for la in layers:
        init_weights(la.synapse, cfg.init, cfg.init_gain)
    return Net(layers, backend=cfg.backend, input_shape=shape, n_classes=n_classes, cfg=cfg, seed=seed)
