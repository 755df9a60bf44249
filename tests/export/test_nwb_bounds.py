"""NWB export refuses a run file declaring more neurons or samples than the memory holds
(issue 26, class 9): one line naming the file and the size, exit 2, no NWB file."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

pytest.importorskip("pynwb")

from bioplaus.cli import main  # noqa: E402
from bioplaus.config import NetworkConfig, SpikingConfig  # noqa: E402
from bioplaus.export.nir import export_nir  # noqa: E402
from bioplaus.nets import build_net  # noqa: E402


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("nwbb")
    net = build_net(NetworkConfig(backend="spiking", hidden=[10], spiking=SpikingConfig(T=8)), (1, 8, 8), 10, seed=1)
    with torch.no_grad():
        net.layers[0].synapse.weight.mul_(4)
    graph = export_nir(net, d / "g.nir", extra_metadata={"dataset": "digits"})
    run = d / "sim.h5"
    assert main(["simulate", str(graph), "--backend", "bioplaus", "--samples", "3", "--out", str(run)]) == 0
    return run


def _declaring(src: Path, dst: Path, neurons: int | None = None, samples: int | None = None) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        g = f["spikes/layer0"]
        if neurons is not None:
            g.attrs["n_neurons"] = neurons
        if samples is not None:
            for key, v in (("record_step", 0), ("record_sample_offset", 0), ("record_n_samples", samples)):
                if key in g:
                    del g[key]
                g.create_dataset(key, data=np.array([v], dtype=np.int64))
    return dst


@pytest.mark.parametrize(("neurons", "samples", "what"), [
    (2**31, None, r"2147483658 neurons and \d+ recorded samples"),
    (None, 10**12, r"20 neurons and 1000000\d{6} recorded samples"),
])
def test_declared_sizes_are_refused(sim_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    neurons: int | None, samples: int | None, what: str) -> None:
    run = _declaring(sim_run, tmp_path / "big.h5", neurons, samples)
    out = tmp_path / "big.nwb"
    assert main(["export", str(run), "--nwb", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"bioplaus: error: {re.escape(str(run))}: an NWB export of {what} would need about "
                        r"[\d.]+ [GTP]iB, more than this machine's memory \([\d.]+ GiB\)", err), err
    assert not out.exists()


def test_the_true_sizes_export(sim_run: Path, tmp_path: Path) -> None:
    assert main(["export", str(sim_run), "--nwb", str(tmp_path / "ok.nwb")]) == 0
