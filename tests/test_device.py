"""The ``[train] device`` setting: validation, resolution, run metadata, kernel dispatch.

This machine has no GPU: the CUDA paths are checked through the seams (a mocked
``cuda_available``, tensors on the ``meta`` device for the scan's dispatch).
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from bioplaus import device as dev
from bioplaus.cli import main
from bioplaus.config import load_config
from bioplaus.context import RunContext
from bioplaus.errors import ConfigError
from bioplaus.experiments import run_experiment
from bioplaus.record import open_run


def _cfg(device: str, **train: object) -> object:
    return load_config({
        "seed": 0,
        "data": {"dataset": "digits", "batch_size": 64, "val_fraction": 0.0, "limit_train": 256, "limit_test": 64},
        "network": {"hidden": [16]},
        "rule": {"name": "backprop", "lr": 0.1},
        "train": {"epochs": 1, "report": False, "progress": False, "threads": 1, "device": device, **train},
        "record": {"weights_every": 0, "save_model": False},
    })


def test_resolution_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "cuda_available", lambda: False)
    assert dev.resolve_device("cpu") == torch.device("cpu")
    assert dev.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^train.device: 'cuda' asked for but torch .* use 'cpu' or 'auto'$"):
        dev.resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"^train.device: unknown value 'gpu'; valid: auto, cpu, cuda$"):
        dev.resolve_device("gpu")


def test_auto_picks_cuda_when_a_gpu_is_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "cuda_available", lambda: True)
    assert dev.resolve_device("auto") == torch.device("cuda")
    assert dev.resolve_device("cuda") == torch.device("cuda")
    cfg = _cfg("auto")
    assert dev.run_device(cfg) == torch.device("cuda")
    hop = types.SimpleNamespace(kind="hopfield", train=types.SimpleNamespace(device="auto"))
    assert dev.run_device(hop) == torch.device("cpu")  # a CPU-only kind under "auto"
    hop.train.device = "cuda"
    with pytest.raises(ConfigError, match="train.device: the 'hopfield' kind runs on the CPU only"):
        dev.run_device(hop)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
@pytest.mark.parametrize("value,msg", [("cuda", "train.device: 'cuda' asked for"), ("tpu", "train.device: unknown value 'tpu'")])
def test_cli_refuses_in_one_line_exit_2(tmp_path: Path, value: str, msg: str, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[data]\ndataset = 'digits'\n[train]\ndevice = '{value}'\n")
    out = tmp_path / "r.h5"
    assert main(["run", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("value", ["cpu", "auto"])
def test_cpu_and_auto_runs_record_the_device_and_agree(tmp_path: Path, value: str) -> None:
    res = run_experiment(_cfg(value), out=tmp_path / f"{value}.h5")
    with open_run(res.path) as run:
        assert run.attrs["device"] == ("cuda" if torch.cuda.is_available() and value == "auto" else "cpu")
    if value == "auto" and not torch.cuda.is_available():
        ref = run_experiment(_cfg("cpu"), out=tmp_path / "ref.h5")
        assert ref.metrics["test_acc"] == res.metrics["test_acc"]
    assert torch.get_default_device() == torch.device("cpu")  # restored after the run


def test_run_context_sets_and_restores_the_default_device() -> None:
    with RunContext(None, device="meta"):
        assert torch.get_default_device() == torch.device("meta")
        assert torch.zeros(2).device.type == "meta"  # rule / plugin state follows the run
        assert dev.generator(1).device.type == "cpu"  # no generator on meta: skeletons draw on the CPU
    assert torch.get_default_device() == torch.device("cpu")


def test_generators_on_cpu_draw_what_they_drew_before() -> None:
    a = torch.randn(5, generator=dev.generator(3))
    b = torch.randn(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_lif_scan_dispatch_uses_the_cpu_kernel_only_for_cpu_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    from bioplaus.neurons import lif

    sentinel = object()
    monkeypatch.setattr(lif, "kernel", lambda: sentinel)
    assert lif._use_kernel(torch.zeros(2, 3)) is sentinel
    gpu_like = types.SimpleNamespace(dtype=torch.float32, device=torch.device("cuda"))
    assert lif._use_kernel(gpu_like) is None
    assert lif._use_kernel(torch.zeros(2, 3, dtype=torch.float64)) is None
    # A tensor off the CPU runs the pure-torch scan and stays where it is.
    cur = torch.zeros(4, 2, 3, device="meta")
    spk, mem = lif._LIFScan.apply(cur, 0.9, 1.0, True, "fast_sigmoid", 25.0)
    assert spk.device.type == "meta" and mem.device.type == "meta"


def test_the_kind_declares_its_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_device asks the kind (`Experiment.devices`), not a list of kind names."""
    from bioplaus.experiments.base import Experiment
    from bioplaus.registry import EXPERIMENTS

    class GpuKind(Experiment):
        devices = ("cpu", "cuda")

    EXPERIMENTS.register("gpu_kind_test", GpuKind)
    try:
        monkeypatch.setattr(dev, "cuda_available", lambda: True)
        for kind, want in (("gpu_kind_test", "cuda"), ("simulate", "cpu"), ("supervised", "cuda")):
            cfg = types.SimpleNamespace(kind=kind, train=types.SimpleNamespace(device="auto"))
            assert dev.run_device(cfg) == torch.device(want), kind
        with pytest.raises(ConfigError, match="train.device: the 'simulate' kind runs on the CPU only"):
            dev.run_device(types.SimpleNamespace(kind="simulate", train=types.SimpleNamespace(device="cuda")))
    finally:
        EXPERIMENTS.unregister("gpu_kind_test")
