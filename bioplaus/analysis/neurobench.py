"""NeuroBench metrics of a trained net on its run's test data, computed by ``neurobench``.

The net saved in a run file (`bioplaus.export.nir.load_net`) runs the first ``samples``
test samples of its data set through NeuroBench 2.3's ``Benchmark`` (a ``TorchModel``
around the net, its hooks on every ``nn.Linear`` / ``nn.Conv2d`` synapse and on each
layer's neuron output). The definitions are NeuroBench's (Yik et al., "The NeuroBench
framework for benchmarking neuromorphic computing algorithms and systems", Nature
Communications 16, 1545 (2025); ``neurobench.metrics``):

- synaptic operations per sample, summed over the T steps of a presentation: for a
  synapse W fed the input x (``[T·B, n_in]``),

      dense     = Σ_rows Σ_i Σ_o 1                       (every weight, every step)
      effective = Σ_rows Σ_i [x_i ≠ 0] · #{o : W_oi ≠ 0}  (only non-zero inputs × non-zero weights)

  divided by the number of samples B; the effective count is an AC (accumulate) when every
  input of the call is 0 or ±1 (spikes) and a MAC otherwise (the analog pixels a direct
  encoder feeds the first layer). Biases are not counted.
- activation sparsity: the fraction of zero neuron outputs (spikes) over all neurons,
  steps and samples (per layer, and over all layers);
- connection sparsity: the fraction of zero weights (per layer, and over all synapses);
- footprint: bytes of the parameters and buffers (per layer, and of the whole net).

A direct (constant) encoding is materialised over T first, so that the first layer's
MACs count every step as NeuroBench's per-step models do (bioplaus itself computes W·x once
and broadcasts it). Per-layer operations come from NeuroBench's own ``single_layer_MACs``
(the function its ``SynapticOperations`` sums); their total is checked against it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bioplaus.errors import BioplausError, ConfigError, RunFileError

# Most samples one call runs: the test sets bioplaus ships are smaller, and a hostile
# config must not ask for more than memory holds.
MAX_SAMPLES = 100_000
INSTALL = ("NeuroBench metrics need the neurobench package: pip install 'bioplaus[neurobench]' "
           "&& pip install --no-deps neurobench==2.3 (its metadata pulls torchaudio, tonic and librosa)")


def _import_neurobench() -> Any:
    """The ``neurobench`` package, or one BioplausError line naming the extra."""
    try:
        import neurobench
        from neurobench.benchmarks import Benchmark  # noqa: F401 - imports snntorch, tqdm
    except ImportError as exc:
        raise BioplausError(f"{INSTALL} ({exc})") from None
    return neurobench


class SpikeOutput(nn.Module):
    """Identity on a layer's neuron output, so NeuroBench's activation hook sees it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class BenchNet(nn.Module):
    """A bioplaus `Net` as NeuroBench sees it: hookable synapses and neuron outputs.

    ``forward(x) -> logits`` runs the same layers; each synapse is called as a module (not
    through the spike fast path, which has the same value) so that forward pre-hooks fire,
    and each layer's output goes through a `SpikeOutput` named after the layer.
    """

    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net
        self.outputs = nn.ModuleDict({layer.name: SpikeOutput() for layer in net.layers})
        for layer in net.layers:
            layer.synapse_fn = layer.synapse  # a module call: NeuroBench's pre-hook fires
            layer.neuron.register_forward_hook(self._observer(layer.name))

    def _observer(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self.outputs[name](output[0])
        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net.encode(x)
        if self.net.temporal and h.stride(0) == 0:
            h = h.contiguous()  # direct encoding: the synapse runs on every step (see module doc)
        for layer in self.net.layers:
            h = layer(h)
        return self.net.readout()


def _by_layer_metric(names: dict[int, str]) -> type:
    """A NeuroBench accumulated metric: `SynapticOperations` split by connection layer."""
    from neurobench.metrics.abstract.workload_metric import AccumulatedMetric
    from neurobench.metrics.utils.layers import single_layer_MACs

    class SynapticOperationsByLayer(AccumulatedMetric):
        """`neurobench.metrics.workload.SynapticOperations`, kept per connection layer."""

        def __init__(self) -> None:
            super().__init__(requires_hooks=True)
            self.reset()

        def reset(self) -> None:
            self.ops: dict[str, dict[str, int]] = {}
            self.samples = 0

        def __call__(self, model: Any, preds: Any, data: Any) -> dict[str, dict[str, float]]:
            for hook in model.connection_hooks:
                row = self.ops.setdefault(names[id(hook.layer)], {"MAC": 0, "AC": 0, "dense": 0})
                for spikes in hook.inputs:
                    if len(spikes) == 1:
                        spikes = spikes[0]
                    # as in SynapticOperations: the binary copy must not carry the hook
                    hook.hook.remove()
                    ops, spiking = single_layer_MACs(spikes, hook.layer)
                    dense, _ = single_layer_MACs(spikes, hook.layer, total=True)
                    hook.register_hook()
                    row["AC" if spiking else "MAC"] += ops
                    row["dense"] += dense
            self.samples += data[0].size(0)
            return self.compute()

        def compute(self) -> dict[str, dict[str, float]]:
            n = max(self.samples, 1)
            return {k: {o: v / n for o, v in row.items()} for k, row in self.ops.items()}

    return SynapticOperationsByLayer


def _run_inputs(run_path: str | Path, samples: int) -> tuple[Any, torch.Tensor, np.ndarray, str]:
    """(net, first ``samples`` test inputs, labels, data set name) of a run file."""
    from bioplaus.config import load_config
    from bioplaus.export.nir import load_net
    from bioplaus.export.samples import test_samples
    from bioplaus.record import open_run

    net = load_net(run_path)  # checks the config, the saved arrays and their shapes
    with open_run(run_path) as run:
        cfg = load_config(run.config)
    x, y = test_samples(cfg.data.dataset, samples, cfg.data.normalize, cfg)
    if tuple(x.shape[1:]) != tuple(net.input_shape) and math.prod(x.shape[1:]) != math.prod(net.input_shape):
        raise RunFileError(f"{run_path}: /: attribute input_shape={list(net.input_shape)}, but the "
                           f"data set {cfg.data.dataset!r} gives samples of shape {list(x.shape[1:])}")
    return net, x.reshape(len(x), *net.input_shape), y, cfg.data.dataset


def neurobench_metrics(run_path: str | Path, *, samples: int = 100, batch_size: int = 50) -> dict[str, Any]:
    """NeuroBench metrics of the net in ``run_path`` on its first ``samples`` test samples.

    Returns ``{"run", "net", "dataset", "samples", "T", "neurobench", "layers": [...],
    "total": {...}}``; each layer (and the total) has ``dense``, ``effective_macs``,
    ``effective_acs`` (operations per sample, over all T steps), ``activation_sparsity``,
    ``connection_sparsity``, ``footprint`` (bytes) and ``params``; the total also has
    NeuroBench's ``accuracy`` (%) on these samples. Definitions: the module docstring.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        raise ConfigError(f"samples={samples!r}: expected an integer in [1, {MAX_SAMPLES}]")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}: expected a positive integer")
    nb = _import_neurobench()
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint, ParameterCount
    from neurobench.metrics.workload import (
        ActivationSparsity,
        ActivationSparsityByLayer,
        ClassificationAccuracy,
        SynapticOperations,
    )
    from neurobench.models import TorchModel

    net, x, y, dataset = _run_inputs(run_path, samples)
    with torch.no_grad():
        # Loads (or compiles) the fused LIF kernel now: inside Benchmark.run(quiet=True)
        # stdout is None, and the kernel's loader would fail to print and fall back.
        net(x[:1])
    bench_net = BenchNet(net)
    model = TorchModel(bench_net)
    model.add_activation_module(SpikeOutput)
    names = {id(layer.synapse): layer.name for layer in net.layers}
    by_layer = _by_layer_metric(names)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.as_tensor(y, dtype=torch.long)), batch_size=batch_size)
    bench = Benchmark(model, loader, [], [lambda logits: logits.argmax(-1)], [
        [Footprint, ConnectionSparsity, ParameterCount],
        [SynapticOperations, ActivationSparsity, ActivationSparsityByLayer, ClassificationAccuracy, by_layer],
    ])
    with torch.no_grad():
        res = bench.run(quiet=True)
    model.cleanup_hooks()
    ops = res.get(by_layer.__name__)
    synops = res.get("SynapticOperations")
    if not isinstance(ops, dict) or not isinstance(synops, dict) or set(ops) != set(names.values()):
        # NeuroBench prints a metric's exception and stores 0.0 instead; quiet hides the print
        raise BioplausError(f"{run_path}: NeuroBench could not count the synaptic operations of "
                            f"{net.describe()}")
    layers = []
    for layer in net.layers:
        one = TorchModel(nn.ModuleDict({layer.name: layer}))
        row = ops[layer.name]
        layers.append({
            "name": layer.name,
            "synapse": _describe_synapse(layer.synapse),
            "dense": row["dense"], "effective_macs": row["MAC"], "effective_acs": row["AC"],
            "activation_sparsity": res["ActivationSparsityByLayer"][layer.name],
            "connection_sparsity": ConnectionSparsity()(one),
            "footprint": Footprint()(one),
            "params": ParameterCount()(one),
        })
    total = {"dense": synops["Dense"], "effective_macs": synops["Effective_MACs"],
             "effective_acs": synops["Effective_ACs"],
             "activation_sparsity": res["ActivationSparsity"],
             "connection_sparsity": res["ConnectionSparsity"], "footprint": res["Footprint"],
             "params": res["ParameterCount"], "accuracy": 100.0 * res["ClassificationAccuracy"]}
    for key, nb_key in (("dense", "dense"), ("effective_macs", "MAC"), ("effective_acs", "AC")):
        if not math.isclose(sum(r[nb_key] for r in ops.values()), total[key], rel_tol=1e-9, abs_tol=1e-9):
            raise BioplausError(f"{run_path}: per-layer {key} do not add up to NeuroBench's total")
    return {"run": str(run_path), "net": net.describe(), "dataset": dataset, "samples": len(x),
            "T": net.T if net.temporal else 1, "neurobench": getattr(nb, "__version__", "?"),
            "layers": layers, "total": total}


def _describe_synapse(syn: nn.Module) -> str:
    if isinstance(syn, nn.Conv2d):
        return f"Conv2d {syn.in_channels}->{syn.out_channels} k{syn.kernel_size[0]}"
    return f"Linear {syn.in_features}->{syn.out_features}"


def neurobench_table(m: dict[str, Any]) -> str:
    """`neurobench_metrics`'s result as a plain-text table (operations per sample)."""
    head = (f"NeuroBench {m['neurobench']} metrics: {m['net']}, {m['samples']} {m['dataset']} test "
            f"samples (operations per sample over T={m['T']} steps; accuracy {m['total']['accuracy']:.2f} %)")
    cols = ("layer", "synapse", "dense", "eff. MACs", "eff. ACs", "act. sparsity", "conn. sparsity",
            "footprint B", "params")
    rows = [
        (r["name"], r["synapse"], f"{r['dense']:,.0f}", f"{r['effective_macs']:,.1f}",
         f"{r['effective_acs']:,.1f}", f"{r['activation_sparsity']:.4f}", f"{r['connection_sparsity']:.4f}",
         f"{r['footprint']:,}", f"{r['params']:,}")
        for r in [*m["layers"], {**m["total"], "name": "total", "synapse": ""}]
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [head, fmt.format(*cols)] + [fmt.format(*r) for r in rows]
    return "\n".join(lines)
