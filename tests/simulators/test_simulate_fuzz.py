"""Property test (issue 26): ``bioplaus simulate`` of a hostile graph with hostile arguments
exits 0 with a finished run file or 2 with one line; never a traceback, never a hang (a
deadline per example), never a run file left "running".

Input classes (``pytest --hypothesis-show-statistics`` lists them as events): graph
metadata T (0, negative, float, 10^6, 10^12, text), dt (0, negative, NaN, inf, huge),
encoder / readout / reset / integration (unknown text, numbers), dataset (unknown, empty,
another data set's), input_shape and n_classes out of line with the weights; node
parameters NaN, inf or huge, weights of the wrong shape, tau zero or negative; edges
dropped or added; arguments ``--samples`` (0, negative, huge, text), ``--mode`` and
``--backend`` unknown, ``--data`` unknown.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

nir = pytest.importorskip("nir")

from bioplaus.cli import main  # noqa: E402
from bioplaus.config import NetworkConfig, SpikingConfig  # noqa: E402
from bioplaus.export.nir import export_nir  # noqa: E402
from bioplaus.nets import build_net  # noqa: E402
from bioplaus.record import open_run  # noqa: E402


@pytest.fixture(scope="module")
def base_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = build_net(NetworkConfig(backend="spiking", hidden=[6], spiking=SpikingConfig(T=4)), (1, 8, 8), 10, seed=1)
    with torch.no_grad():
        net.layers[0].synapse.weight.mul_(4)
    return export_nir(net, tmp_path_factory.mktemp("simfuzz") / "g.nir", extra_metadata={"dataset": "digits"})


NUMBERS = st.one_of(st.sampled_from([0, -1, 1e-9, 1e6, 10**12, 2**63, float("nan"), float("inf"), -float("inf"), 0.5]),
                    st.integers(-3, 50), st.floats(allow_nan=True, allow_infinity=True))
TEXTS = st.one_of(st.sampled_from(["", "x", "poisson", "latency", "direct", "rate", "fashion_mnist", "digits",
                                   "mem_max", "zero", "none", "\0", "a" * 300]), st.text(max_size=6))
META_KEYS = ["T", "dt", "encoder", "readout", "reset", "integration", "dataset", "input_shape", "n_classes",
             "input_scale", "beta", "output_spikes"]
PARAMS = ["tau", "r", "v_leak", "v_threshold", "v_reset", "weight"]
ARG_VALUES = {
    "--samples": st.sampled_from(["0", "-1", "3", "1000000000", "x", "1e3", "2"]),
    "--mode": st.sampled_from(["numpy", "runtime", "standalone", "gpu", ""]),
    "--backend": st.sampled_from(["bioplaus", "bioplaus", "bioplaus", "nope"]),
    "--data": st.sampled_from(["digits", "fashion_mnist", "nope", "npz", ""]),
}


@settings(max_examples=int(os.environ.get("BIOPLAUS_FUZZ_EXAMPLES", "12")), deadline=timedelta(seconds=60),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
@given(
    meta=st.dictionaries(st.sampled_from(META_KEYS), st.one_of(NUMBERS, TEXTS, st.lists(NUMBERS, max_size=3)), max_size=3),
    param=st.one_of(st.none(), st.tuples(st.sampled_from(PARAMS), st.sampled_from(["nan", "inf", "huge", "zero",
                                                                                     "negative", "shape"]))),
    edges=st.sampled_from(["keep", "drop", "add"]),
    args=st.dictionaries(st.sampled_from(sorted(ARG_VALUES)), st.none(), max_size=2).flatmap(
        lambda d: st.fixed_dictionaries({k: ARG_VALUES[k] for k in d})),
)
def test_simulate_hostile_graphs_and_arguments(base_graph: Path, meta: dict[str, Any], param: Any, edges: str,
                                                args: dict[str, str]) -> None:
    g = nir.read(base_graph)
    for k, v in meta.items():
        g.metadata[k] = v
        event(f"metadata {k}: {type(v).__name__}")
    if param is not None:
        name, how = param
        event(f"node parameter: {how}")
        for node in g.nodes.values():
            if hasattr(node, name):
                a = np.asarray(getattr(node, name), dtype=np.float64)
                a = {"nan": np.full_like(a, np.nan), "inf": np.full_like(a, np.inf), "huge": a * 1e300,
                     "zero": np.zeros_like(a), "negative": -np.abs(a) - 1, "shape": np.ones((3, 5))}[how]
                setattr(node, name, a)
                break
    if edges != "keep":
        event(f"edges: {edges}")
        g.edges = g.edges[1:] if edges == "drop" else [*g.edges, ("output", "input")]
    argv = [x for k, v in args.items() for x in (k, v)]
    event(f"arguments: {' '.join(sorted(args)) or 'none'}")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "g.nir"
        try:
            nir.write(path, g)
        except Exception:  # noqa: BLE001 - nir cannot even write it: nothing to simulate
            event("graph: not writable by nir")
            return
        out = Path(d) / "s.h5"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(["simulate", str(path), *argv, "--out", str(out)])
            except SystemExit as e:  # argparse: an unknown or malformed option
                code = e.code
        lines = err.getvalue().strip().splitlines()
        assert code in (0, 2), err.getvalue()
        event(f"outcome: exit {code}")
        if code == 2:
            assert lines and lines[-1].startswith(("bioplaus: error:", "bioplaus simulate: error:")), err.getvalue()
            assert len([ln for ln in lines if "Traceback" in ln]) == 0
        if out.exists():
            with open_run(out) as run:
                assert run.status == ("done" if code == 0 else "failed"), run.status
