"""Experiment kind ``simulate``: run an exported graph in a simulator on test samples.

``[simulate]`` names the NIR graph, the simulator (``backend``, `bioplaus.registry.SIMULATORS`;
the contract is `bioplaus.simulators.base.Simulator`), its ``mode``, and the data set whose
first ``samples`` test samples go in (default: the one the graph's metadata names, normalised
as the graph's training run was). ``bioplaus simulate GRAPH ...`` builds this config and runs
it through the one run driver (`bioplaus.experiments.base.run_experiment`).

The run file (docs/run-file.md): ``/spikes/<layer>`` events, ``/traces/<output layer>.mem``
[1, T, S, n], ``/metrics/test_acc`` and ``wall_seconds``, and ``/simulate/{input, labels,
logits, predicted, seconds}``; root attributes name the simulator, mode, graph and data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bioplaus.config import ExperimentConfig, bounded, check_choice
from bioplaus.errors import ConfigError
from bioplaus.experiments.base import Experiment
from bioplaus.metrics import Metric
from bioplaus.registry import SIMULATORS, register_experiment
from bioplaus.resources import check_bytes


@dataclass
class SimulateConfig:
    """``[simulate]``: which graph runs where, on which samples."""

    graph: str = ""  # NIR file (e.g. from bioplaus export RUN --nir OUT.nir)
    backend: str = "brian2"  # simulator (bioplaus list: simulators)
    mode: str = "runtime"  # the simulator's mode (brian2: runtime | numpy | standalone)
    data: str = ""  # data set whose test samples run; "" = the one the graph names
    samples: int = bounded(100, ge=1)  # the first N test samples
    dt: float = bounded(0.0, ge=0)  # s; 0 = the graph's metadata dt (else 1 ms)
    integration: str = ""  # exact | euler; "" = the graph's metadata rule
    reading: str = "graph"  # brian2: graph (the nodes as the NIR spec states them) | bioplaus (its replay)


def default_out(graph: str | Path, backend: str) -> Path:
    """``<graph>_<backend>.h5`` beside the graph (`bioplaus simulate` without --out)."""
    return Path(graph).with_name(Path(graph).stem + f"_{backend}.h5")


@register_experiment("simulate")
class Simulate(Experiment):
    """A NIR graph in a registered simulator, recorded like any run (see module docstring)."""

    Config = SimulateConfig

    @classmethod
    def example_config(cls, workdir: Path) -> dict[str, Any]:
        """An untrained spiking 64-7-10 graph on digits in the reference simulator
        (bioplaus.conformance); the graph is written to ``workdir``."""
        import nir

        from bioplaus.config import NetworkConfig, SpikingConfig
        from bioplaus.export.nir import to_nir
        from bioplaus.nets import build_net

        net = build_net(NetworkConfig(backend="spiking", hidden=[7], spiking=SpikingConfig(T=5)), (1, 8, 8), 10, seed=2)
        graph = to_nir(net)
        graph.metadata["dataset"] = "digits"
        path = Path(workdir) / "example.nir"
        nir.write(path, graph)
        return {"simulate": {"graph": str(path), "backend": "bioplaus", "samples": 8}}

    @classmethod
    def validate(cls, cfg: ExperimentConfig) -> None:
        o = cfg.section("simulate")
        if not o.graph:
            raise ConfigError("simulate.graph: name the NIR file to run")
        check_choice(o.mode, SIMULATORS.get(o.backend, "simulate.backend").modes, "simulate.mode")
        if o.integration:
            check_choice(o.integration, ["exact", "euler"], "simulate.integration")
        check_choice(o.reading, ["graph", "bioplaus"], "simulate.reading")

    @classmethod
    def declared_metrics(cls, cfg: ExperimentConfig) -> list[Metric]:
        return [
            Metric("test_acc", "max", headline=True, summary=True, description="argmax of the simulated readout = label"),
            Metric("wall_seconds", "none", unit="s", summary=True, description="wall-clock time of the simulation"),
        ]

    def build(self) -> None:
        import nir  # noqa: F401 - a clear ImportError before anything is written

        from bioplaus.export.nir import from_nir, read_nir
        from bioplaus.export.samples import test_samples

        o = self.options
        self.simulator = SIMULATORS.get(o.backend, "simulate.backend")
        graph = read_nir(o.graph)
        self.sim_options: dict[str, Any] = {"reading": o.reading}
        if o.dt > 0:
            self.sim_options["dt"] = o.dt
        if o.integration:
            self.sim_options["integration"] = o.integration
        # validates the graph (one line naming the node otherwise)
        self.net = from_nir(graph, dt=self.sim_options.get("dt"), integration=self.sim_options.get("integration"))
        self.note = ""
        meta = graph.metadata if isinstance(graph.metadata, dict) else {}
        self.dataset = o.data or _text(meta.get("dataset"))
        if not self.dataset:
            raise ConfigError("simulate.data: the graph names no data set; give one (e.g. --data fashion_mnist)")
        self.normalize = _text(meta.get("normalize")) or "unit"
        self.x, self.y = test_samples(self.dataset, o.samples, self.normalize)
        if int(np.prod(self.x.shape[1:])) != int(np.prod(self.net.input_shape)):
            raise ConfigError(f"simulate.data: {self.dataset} samples have shape {tuple(self.x.shape[1:])}, "
                              f"the graph takes {tuple(self.net.input_shape)}")
        self.check_size(len(self.x))

    def check_size(self, samples: int) -> None:
        """Refuse a simulation whose [T, samples, neurons] arrays exceed the memory (before
        the run file exists): a simulator holds per step, sample and neuron the input current
        and its copy, the spike raster and the membrane trace (float64 each, 32 B)."""
        from bioplaus.nets import plan_net

        net = self.net
        T = int(net.T) if net.temporal else 1
        units = plan_net(net.cfg, tuple(net.input_shape), int(net.n_classes)).units + int(np.prod(net.input_shape))
        check_bytes(32 * T * samples * units, f"simulate.graph {self.options.graph} (T={T}) x simulate.samples={samples}",
                    f"a simulation of T x samples x neurons = {T} x {samples} x {units}")

    def meta(self) -> dict[str, Any]:
        o = self.options
        return {"simulator": o.backend, "mode": o.mode, "graph": o.graph, "dataset": self.dataset,
                "normalize": self.normalize, "input_shape": list(self.net.input_shape),
                "n_classes": int(self.net.n_classes), "versions_simulator": self.simulator.versions()}

    def run(self) -> dict[str, float]:
        o, ctx, x, y = self.options, self.ctx, self.x, self.y
        ctx.check_stop()
        t0 = time.perf_counter()
        res = self.simulator(o.graph, x, mode=o.mode, **self.sim_options)
        self.note = res.note
        wall = time.perf_counter() - t0
        ctx.check_stop()  # a signal during the simulation: the file ends "interrupted", nothing recorded
        acc = float((res.predicted == y).mean())
        for name, spk in res.spikes.items():
            ctx.log_spikes(name, spk, dt=res.dt)
        ctx.log_trace(f"{res.out_name}.mem", res.mem_out.astype(np.float32), unit="1", dt=res.dt, every=1,
                      dims="time,sample,neuron")
        ctx.log(test_acc=acc, wall_seconds=wall)
        ctx.log_array("/simulate/input", x.numpy(), encoder=self.net.encoder, dt=res.dt, T=res.T)
        ctx.log_array("/simulate/labels", np.asarray(y, dtype=np.int64))
        ctx.log_array("/simulate/logits", np.asarray(res.logits, dtype=np.float64), note=res.note)
        ctx.log_array("/simulate/predicted", np.asarray(res.predicted, dtype=np.int64))
        ctx.log_array("/simulate/seconds", np.array([res.seconds.get("build", 0.0), res.seconds.get("run", 0.0)]),
                      columns="build,run")
        return {"test_acc": acc, "wall_seconds": wall}


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.item()
    return str(v)
