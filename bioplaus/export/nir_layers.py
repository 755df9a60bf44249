"""The layer structure of a NIR graph: synapses, pooling and Flatten between its neurons.

`bioplaus.export.nir.from_nir` reads a chain input → … → output in two parts: this module
cuts the chain into blocks ``[Flatten] synapse [pool] NEURON [pool]`` and checks every
structural node (what it does, its shapes); the neuron node of each block is mapped by
``from_nir`` itself (the neuron-model seam). Structural nodes read:

- ``Linear`` / ``Affine``: ``weight`` (n_out, n_in) on the flattened sample.
- ``Conv2d``: ``weight`` (C_out, C_in / groups, kh, kw), ``bias`` (C_out,), ``stride``,
  ``padding`` (integers, "valid", or "same" when it is symmetric), ``dilation``, ``groups``
  exactly as NIR states them; ``input_shape`` may be missing (snntorch, Norse write None).
- ``SumPool2d`` / ``AvgPool2d`` after a neuron: windows of k×k with stride k and no padding
  (the only pooling a bioplaus layer runs); ``SumPool2d`` then ``Threshold`` θ ∈ [0, 1) is
  bioplaus's max-pool of spikes (max of 0/1 values = H(Σ − θ)). Between a ``Conv2d`` of
  stride 1 and its neuron (snntorch's Conv → AvgPool → Leaky) the pool is linear and is
  folded into the convolution: kernel W ⊛ 1_{k×k} (÷ k² for the average), stride k.
- ``Flatten`` before a ``Linear`` / ``Affine``: it must flatten the whole sample, in either
  convention peers write: NIR's unbatched ``start_dim = 0`` or torch's ``start_dim = 1``
  that counts a batch dimension (snntorch subtracts one, nirtorch does not); the Input may
  declare a leading batch dimension of 1 (Norse, snntorch). Bioplaus always keeps the batch.

Anything else raises `NIRFileError` naming the node (one line).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bioplaus.errors import NIRFileError

# Most neurons one layer may have, and most weights one synapse may hold (a graph beyond
# these is a mistake or an attack, not a net to simulate).
MAX_UNITS = 1 << 26
MAX_WEIGHTS = 1 << 28
STRUCTURE = ("Flatten, Linear, Affine, Conv2d, SumPool2d, AvgPool2d, Threshold after SumPool2d")


@dataclass
class Conv:
    """A Conv2d synapse as torch builds it (pre-pool already folded in)."""

    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


@dataclass
class Block:
    """Synapse → neuron → pool, with the sample shapes around it (no batch dimension)."""

    syn: str
    neuron: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]  # the neuron's shape
    weight: np.ndarray
    bias: np.ndarray | None  # None: a Linear node
    conv: Conv | None = None
    pool: int = 1
    pool_kind: str = "max"
    nodes: list[str] = field(default_factory=list)  # every node of the block, in order

    @property
    def y_shape(self) -> tuple[int, ...]:
        """Shape after the pool."""
        if self.pool == 1:
            return self.out_shape
        c, h, w = self.out_shape
        return (c, h // self.pool, w // self.pool)


def _types() -> tuple[Any, ...]:
    import nir

    return (nir.Flatten, nir.Linear, nir.Affine, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d, nir.Threshold)


def is_structural(node: Any) -> bool:
    """A node this module reads (anything else between the input and output is a neuron slot)."""
    return isinstance(node, _types())


def _float(src: str, name: str, node: Any, attr: str) -> np.ndarray:
    value = getattr(node, attr, None)
    if value is None:
        raise NIRFileError(f"{src}: node {name!r}: no {attr}")
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - untrusted attribute
        raise NIRFileError(f"{src}: node {name!r}: {attr} is not an array") from None
    if arr.dtype.kind not in "biuf":
        raise NIRFileError(f"{src}: node {name!r}: {attr} is not numeric (dtype {arr.dtype.str})")
    if arr.size > MAX_WEIGHTS:
        raise NIRFileError(f"{src}: node {name!r}: {attr} holds {arr.size} values (at most {MAX_WEIGHTS})")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise NIRFileError(f"{src}: node {name!r}: {attr} holds NaN or inf")
    return arr


def _pair(src: str, name: str, attr: str, value: Any, low: int) -> tuple[int, int]:
    """An int or 1-2 ints (NIR allows both), each >= ``low``."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    arr = np.asarray(value) if not isinstance(value, str) else np.zeros(0, dtype=np.float64)
    if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iub" or arr.ndim > 1 or arr.size not in (1, 2):
        raise NIRFileError(f"{src}: node {name!r}: {attr}={value!r}: expected one or two integers")
    vals = [int(v) for v in arr.ravel()]
    if any(v < low or v > 1 << 20 for v in vals):
        raise NIRFileError(f"{src}: node {name!r}: {attr}={vals}: expected integers >= {low}")
    return (vals[0], vals[-1])


def _conv_len(n: int, k: int, p: int, s: int, d: int) -> int:
    """⌊(n + 2p − d(k − 1) − 1) / s⌋ + 1, torch's and NIR's output length."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _conv(src: str, name: str, node: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, Conv, tuple[int, ...]]:
    if len(shape) != 3:
        raise NIRFileError(f"{src}: node {name!r}: Conv2d needs a (C, H, W) input, gets shape {shape}")
    w = _float(src, name, node, "weight")
    groups = getattr(node, "groups", 1)
    g = np.asarray(groups)
    if g.dtype.kind not in "iu" or g.size != 1 or not 1 <= int(g.reshape(())) <= 1 << 20:
        raise NIRFileError(f"{src}: node {name!r}: groups={groups!r}: expected a positive integer")
    groups = int(g.reshape(()))
    c_in = shape[0]
    if (w.ndim != 4 or w.shape[0] == 0 or w.shape[2] == 0 or w.shape[3] == 0 or c_in % groups
            or w.shape[0] % groups or w.shape[1] * groups != c_in):
        raise NIRFileError(f"{src}: node {name!r}: weight has shape {w.shape}, expected "
                           f"(C_out, {c_in // groups if c_in % groups == 0 else c_in}, kh, kw) for "
                           f"{c_in} input channels in {groups} group(s)")
    kh, kw = w.shape[2:]
    stride = _pair(src, name, "stride", getattr(node, "stride", 1), 1)
    dilation = _pair(src, name, "dilation", getattr(node, "dilation", 1), 1)
    raw_pad = getattr(node, "padding", 0)
    if isinstance(raw_pad, bytes | np.bytes_):
        raw_pad = raw_pad.decode(errors="replace")
    if isinstance(raw_pad, np.ndarray) and raw_pad.dtype.kind in "SUO" and raw_pad.size == 1:
        raw_pad = raw_pad.reshape(()).item()
        raw_pad = raw_pad.decode(errors="replace") if isinstance(raw_pad, bytes) else raw_pad
    if isinstance(raw_pad, str):
        if raw_pad == "valid":
            padding = (0, 0)
        elif raw_pad == "same" and stride == (1, 1) and not (dilation[0] * (kh - 1)) % 2 and not (dilation[1] * (kw - 1)) % 2:
            padding = (dilation[0] * (kh - 1) // 2, dilation[1] * (kw - 1) // 2)
        else:
            raise NIRFileError(f"{src}: node {name!r}: padding={raw_pad!r}: bioplaus runs 'valid', integers, "
                               "and 'same' when it pads both sides equally (stride 1)")
    else:
        padding = _pair(src, name, "padding", raw_pad, 0)
    for axis, (n, k, p, d) in enumerate(zip(shape[1:], (kh, kw), padding, dilation)):
        span = d * (k - 1) + 1
        if span > n + 2 * p:
            raise NIRFileError(f"{src}: node {name!r}: kernel spans {span} > input {n} + 2×padding {p} "
                               f"along axis {axis + 1}")
        if p >= span:
            raise NIRFileError(f"{src}: node {name!r}: padding {p} >= kernel span {span} along axis {axis + 1}")
    in_hw = getattr(node, "input_shape", None)
    if in_hw is not None:
        hw = np.asarray(in_hw).ravel()
        if hw.dtype.kind not in "iuf" or hw.size != 2 or tuple(int(v) for v in hw) != tuple(shape[1:]):
            raise NIRFileError(f"{src}: node {name!r}: input_shape {in_hw!r} does not match the "
                               f"incoming {tuple(shape[1:])}")
    b = _float(src, name, node, "bias") if getattr(node, "bias", None) is not None else np.zeros(w.shape[0])
    if b.size == 1 and w.shape[0] != 1:
        b = np.full(w.shape[0], b.reshape(()).item())
    if b.shape != (w.shape[0],):
        raise NIRFileError(f"{src}: node {name!r}: bias has shape {b.shape}, expected ({w.shape[0]},)")
    out = (int(w.shape[0]), *(_conv_len(n, k, p, s, d) for n, k, p, s, d in
                              zip(shape[1:], (kh, kw), padding, stride, dilation)))
    return w, b, Conv(stride, padding, dilation, groups), out


def _pool_size(src: str, name: str, node: Any, shape: tuple[int, ...]) -> int:
    """k of a k×k pool of stride k without padding (the only pooling bioplaus runs)."""
    if len(shape) != 3:
        raise NIRFileError(f"{src}: node {name!r}: {type(node).__name__} needs a (C, H, W) input, gets shape {shape}")
    k = _pair(src, name, "kernel_size", getattr(node, "kernel_size", None), 1)
    raw_stride = getattr(node, "stride", None)
    s = k if raw_stride is None else _pair(src, name, "stride", raw_stride, 1)
    p = _pair(src, name, "padding", getattr(node, "padding", 0), 0)
    if k[0] != k[1] or s != k or p != (0, 0):
        raise NIRFileError(f"{src}: node {name!r}: {type(node).__name__} kernel {k}, stride {s}, padding {p}: "
                           "bioplaus pools square windows with stride = kernel and no padding")
    if k[0] > min(shape[1:]):
        raise NIRFileError(f"{src}: node {name!r}: pool window {k[0]} exceeds the input {shape[1:]}")
    return k[0]


def _fold_pool(src: str, name: str, w: np.ndarray, b: np.ndarray, conv: Conv, k: int, kind: str,
               out: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, Conv, tuple[int, ...]]:
    """pool_k(conv(x)) as one convolution: kernel W ⊛ 1_{k×k} (÷ k² for avg), stride k."""
    if conv.stride != (1, 1) or conv.dilation != (1, 1):
        raise NIRFileError(f"{src}: node {name!r}: a pool between a Conv2d and its neuron is read only after "
                           "a convolution of stride 1 and dilation 1")
    kh, kw = w.shape[2:]
    folded = np.zeros((*w.shape[:2], kh + k - 1, kw + k - 1))
    for a in range(k):
        for c in range(k):
            folded[:, :, a:a + kh, c:c + kw] += w
    if kind == "avg":
        folded /= k * k
    else:
        b = b * (k * k)
    return folded, b, Conv((k, k), conv.padding, (1, 1), conv.groups), (out[0], out[1] // k, out[2] // k)


def _flatten_ok(node: Any, nd: int) -> bool:
    """Whether ``node`` flattens a whole sample of ``nd`` dims, with or without a batch dim."""
    start, end = getattr(node, "start_dim", 1), getattr(node, "end_dim", -1)
    try:
        start, end = int(np.asarray(start).reshape(())), int(np.asarray(end).reshape(()))
    except (TypeError, ValueError):
        return False
    for batch in (0, 1):
        n = nd + batch
        s = start + n if start < 0 else start
        e = end + n if end < 0 else end
        if s == batch and e == n - 1:
            return True
    return False


def blocks(graph: Any, inner: list[str], in_shape: tuple[int, ...], src: str) -> list[Block]:
    """Cut the nodes between input and output into `Block` s (see module docstring).

    ``in_shape`` is the sample shape the Input declares, without a batch dimension.
    """
    import nir

    nodes = graph.nodes
    out: list[Block] = []
    shape = tuple(in_shape)
    i = 0
    n = len(inner)

    def at(j: int) -> Any:
        return nodes[inner[j]] if j < n else None

    while i < n:
        names: list[str] = []
        if isinstance(at(i), nir.Flatten):
            name = inner[i]
            if not isinstance(at(i + 1), nir.Linear | nir.Affine):
                raise NIRFileError(f"{src}: node {name!r}: a Flatten must come right before a Linear/Affine synapse")
            if len(shape) > 1 and not _flatten_ok(at(i), len(shape)):
                raise NIRFileError(f"{src}: node {name!r}: Flatten(start_dim={getattr(at(i), 'start_dim', None)}, "
                                   f"end_dim={getattr(at(i), 'end_dim', None)}) does not flatten the whole "
                                   f"sample {shape}; bioplaus reads only that")
            names.append(name)
            shape = (math.prod(shape),)
            i += 1
        node, syn = at(i), inner[i]
        conv: Conv | None = None
        if isinstance(node, nir.Linear | nir.Affine):
            w = _float(src, syn, node, "weight")
            n_in = math.prod(shape)
            if w.ndim != 2 or w.shape[1] != n_in or w.shape[0] == 0:
                raise NIRFileError(f"{src}: node {syn!r}: weight has shape {w.shape}, expected (n_out, {n_in})")
            b = None
            if isinstance(node, nir.Affine):
                b = _float(src, syn, node, "bias")
                if b.shape != (w.shape[0],):
                    raise NIRFileError(f"{src}: node {syn!r}: bias has shape {b.shape}, expected ({w.shape[0]},)")
            neuron_shape: tuple[int, ...] = (int(w.shape[0]),)
        elif isinstance(node, nir.Conv2d):
            w, b, conv, neuron_shape = _conv(src, syn, node, shape)
            pre = at(i + 1)
            if isinstance(pre, nir.SumPool2d | nir.AvgPool2d):  # Conv → pool → neuron: fold the pool
                names.append(syn)
                i += 1
                k = _pool_size(src, inner[i], pre, neuron_shape)
                kind = "avg" if isinstance(pre, nir.AvgPool2d) else "sum"
                w, b, conv, neuron_shape = _fold_pool(src, inner[i], w, b, conv, k, kind, neuron_shape)
        else:
            raise NIRFileError(f"{src}: node {syn!r}: {type(node).__name__} where a synapse "
                               f"(Linear, Affine, Conv2d) was expected")
        names.append(inner[i])
        if math.prod(neuron_shape) > MAX_UNITS:
            raise NIRFileError(f"{src}: node {syn!r}: {math.prod(neuron_shape)} neurons (at most {MAX_UNITS})")
        i += 1
        if i >= n or is_structural(at(i)):
            where = inner[i] if i < n else "the output"
            raise NIRFileError(f"{src}: node {where!r}: expected a neuron after synapse {syn!r}")
        neuron = inner[i]
        names.append(neuron)
        i += 1
        block = Block(syn, neuron, shape, neuron_shape, w, b, conv, nodes=names)
        post = at(i)
        if isinstance(post, nir.SumPool2d | nir.AvgPool2d):
            block.pool = _pool_size(src, inner[i], post, neuron_shape)
            names.append(inner[i])
            block.pool_kind = "avg" if isinstance(post, nir.AvgPool2d) else "sum"
            i += 1
            thr_node = at(i)
            if isinstance(thr_node, nir.Threshold):
                if block.pool_kind != "sum":
                    raise NIRFileError(f"{src}: node {inner[i]!r}: a Threshold is read only after a SumPool2d "
                                       "(max-pool of spikes)")
                thr = _float(src, inner[i], thr_node, "threshold")
                if thr.size and not (thr.size == 1 or thr.shape == block.y_shape):
                    raise NIRFileError(f"{src}: node {inner[i]!r}: threshold has shape {thr.shape}, "
                                       f"expected {block.y_shape}")
                if thr.size == 0 or not ((thr >= 0) & (thr < 1)).all() or not np.all(thr == thr.ravel()[0]):
                    raise NIRFileError(f"{src}: node {inner[i]!r}: a SumPool2d → Threshold is read as max-pool "
                                       "of spikes only with one threshold in [0, 1)")
                block.pool_kind = "max"
                names.append(inner[i])
                i += 1
        elif isinstance(post, nir.Threshold):
            raise NIRFileError(f"{src}: node {inner[i]!r}: a Threshold is read only after a SumPool2d "
                               "(max-pool of spikes)")
        out.append(block)
        shape = block.y_shape
    return out


def conv_net(blocks: list[Block], in_shape: tuple[int, ...], spiking: Any, backend: str,
             neuron: dict[str, Any] | None = None) -> Any:
    """A `Net` with the layers ``blocks`` describe (any stride, padding, dilation, groups,
    pooling), on the neuron model ``backend``; its config names the channels, the first
    kernel and pool, and the widths (``arch = "cnn"``), which `build_net` alone could not;
    ``neuron``: its ``[network.neuron]`` options."""
    from torch import nn

    from bioplaus.config import NetworkConfig
    from bioplaus.nets import Layer, Net, init_weights
    from bioplaus.neurons.base import neuron_model

    model = neuron_model(backend)
    convs = [b for b in blocks if b.conv is not None]
    cfg = NetworkConfig(backend=backend, arch="cnn", channels=[b.out_shape[0] for b in convs],
                        kernel=int(convs[0].weight.shape[2]), pool=convs[0].pool,
                        hidden=[b.out_shape[0] for b in blocks[len(convs):-1]],
                        bias=any(b.bias is not None for b in blocks), spiking=spiking,
                        neuron=dict(neuron or {}))
    hidden, output = model.params_from(cfg, False), model.params_from(cfg, True)
    layers = []
    for i, b in enumerate(blocks):
        if b.conv is not None:
            c = b.conv
            syn: nn.Module = nn.Conv2d(b.in_shape[0], b.out_shape[0], tuple(b.weight.shape[2:]), stride=c.stride,
                                       padding=c.padding, dilation=c.dilation, groups=c.groups, bias=b.bias is not None)
        else:
            syn = nn.Linear(int(b.weight.shape[1]), b.out_shape[0], bias=b.bias is not None)
        init_weights(syn, "default")
        is_out = i == len(blocks) - 1
        layers.append(Layer(syn, model.population(output if is_out else hidden), pool=b.pool,
                            pool_kind=b.pool_kind, index=i, is_output=is_out))
    return Net(layers, backend=backend, input_shape=in_shape, n_classes=blocks[-1].out_shape[0], cfg=cfg)
