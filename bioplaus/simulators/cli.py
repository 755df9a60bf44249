"""``bioplaus simulate GRAPH.nir --backend brian2 --data DATASET --samples N --out RUN.h5``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from bioplaus.errors import BioplausError, ConfigError


def simulate_to_run(graph_path: str | Path, out: str | Path, *, backend: str = "brian2",
                    dataset: str | None = None, samples: int = 100, mode: str = "runtime",
                    overwrite: bool = False) -> dict[str, Any]:
    """Simulate a NIR graph on the first ``samples`` test samples and record a run file.

    The run file has the usual layout (docs/run-file.md): ``/spikes/<layer>`` events,
    ``/traces/<output layer>.mem`` [1, T, S, n], ``/metrics/test_acc``, and
    ``/simulate/{input, labels, logits, predicted}``; root attributes ``kind = "simulate"``,
    the simulator, mode and graph. Returns a summary dict.
    """
    import nir  # noqa: F401 - a clear ImportError before anything is written

    from bioplaus.export.nir import from_nir, read_nir
    from bioplaus.export.samples import test_samples
    from bioplaus.record.writer import Recorder
    from bioplaus.registry import SIMULATORS

    fn = SIMULATORS.get(backend, "--backend")
    if samples < 1:
        raise ConfigError(f"--samples: expected a positive number, got {samples}")
    if mode not in ("runtime", "standalone", "numpy"):
        raise ConfigError(f"--mode: unknown value {mode!r}; valid: runtime, standalone, numpy")
    graph = read_nir(graph_path)
    net = from_nir(graph)  # validates the graph (one line naming the node otherwise)
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    ds_name = dataset or _text(meta.get("dataset"))
    if not ds_name:
        raise ConfigError("--data: the graph names no data set; give one (e.g. --data fashion_mnist)")
    normalize = _text(meta.get("normalize")) or "unit"
    x, y = test_samples(ds_name, samples, normalize)
    if int(np.prod(x.shape[1:])) != int(np.prod(net.input_shape)):
        raise ConfigError(f"--data: {ds_name} samples have shape {tuple(x.shape[1:])}, the graph takes "
                          f"{tuple(net.input_shape)}")
    t0 = time.perf_counter()
    res = fn(str(graph_path), x, mode=mode)
    wall = time.perf_counter() - t0
    acc = float((res.predicted == y).mean())
    config = {"simulate": {"graph": str(graph_path), "backend": backend, "mode": mode,
                           "data": ds_name, "samples": int(len(y)), "normalize": normalize}}
    run_meta = {"kind": "simulate", "simulator": backend, "mode": mode, "graph": str(graph_path),
                "input_shape": list(net.input_shape), "n_classes": int(net.n_classes),
                "versions_simulator": _versions()}
    with Recorder(out, config, seed=0, meta=run_meta, on_exists="overwrite" if overwrite else "refuse") as rec:
        rec.declare_metrics("test_acc", "wall_seconds")
        for name, spk in res.spikes.items():
            rec.log_spikes(name, 0, spk, dt=res.dt)
        rec.log_trace(f"{res.out_name}.mem", 0, res.mem_out.astype(np.float32), unit="1", dt=res.dt, every=1,
                      dims="time,sample,neuron")
        rec.log_metrics(0, test_acc=acc, wall_seconds=wall)
        rec.log_array("/simulate/input", x.numpy(), encoder=net.encoder, dt=res.dt, T=res.T)
        rec.log_array("/simulate/labels", np.asarray(y, dtype=np.int64))
        rec.log_array("/simulate/logits", np.asarray(res.logits, dtype=np.float64))
        rec.log_array("/simulate/predicted", np.asarray(res.predicted, dtype=np.int64))
        rec.log_array("/simulate/seconds", np.array([res.seconds.get("build", 0.0), res.seconds.get("run", 0.0)]),
                      columns="build,run")
    return {"path": str(out), "acc": acc, "samples": len(y), "seconds": wall, **res.seconds}


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.item()
    return str(v)


def _versions() -> str:
    try:
        import brian2

        return f"brian2 {brian2.__version__}"
    except ImportError:  # pragma: no cover
        return ""


def _cmd_simulate(args: argparse.Namespace) -> int:
    if not Path(args.graph).is_file():
        raise BioplausError(f"{args.graph}: no such NIR file")
    out = Path(args.out) if args.out else Path(args.graph).with_name(Path(args.graph).stem + f"_{args.backend}.h5")
    s = simulate_to_run(args.graph, out, backend=args.backend, dataset=args.data, samples=args.samples,
                        mode=args.mode, overwrite=args.overwrite)
    print(f"{s['path']}: {args.backend} ({args.mode}) on {s['samples']} samples, test_acc={s['acc']:.4f}, "
          f"{s['seconds']:.1f} s")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run a NIR graph in a simulator (brian2) and record a run file")
    p.add_argument("graph", help="NIR file (e.g. from bioplaus export RUN --nir OUT.nir)")
    p.add_argument("--backend", default="brian2", help="simulator: brian2 (default) | bioplaus")
    p.add_argument("--data", help="data set whose test samples to run (default: the one in the graph)")
    p.add_argument("--samples", type=int, default=100, help="first N test samples (default 100)")
    p.add_argument("--mode", default="runtime", help="brian2: runtime (Cython) | standalone (C++) | numpy")
    p.add_argument("--out", help="run file (default <graph>_<backend>.h5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run file")
    p.set_defaults(func=_cmd_simulate)

