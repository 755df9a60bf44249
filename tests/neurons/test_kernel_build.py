"""The LIF kernel's build: announced with elapsed time, cached by source and torch version,
kept out of the run's training seconds, and done ahead by ``bioplaus build-kernel``.

torch's ``load`` is replaced by a stand-in that sleeps (a "compile") and returns the real,
already built kernel, under a temporary ``TORCH_EXTENSIONS_DIR``: nothing is compiled here.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import h5py
import pytest
import torch.utils.cpp_extension as ce

import bioplaus
from bioplaus.cli import main
from bioplaus.neurons import kernel as K


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """kernel() starts afresh; ``load`` sleeps ``state["sleep"]`` s and returns the real kernel."""
    real = K.kernel()
    if real is None:
        pytest.skip("no compiled LIF kernel on this machine")
    state: dict[str, Any] = {"sleep": 0.4, "calls": []}

    def load(**kw: Any) -> Any:
        state["calls"].append(kw["name"])
        time.sleep(state["sleep"])
        return real

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.delenv("BIOPLAUS_LIF_KERNEL", raising=False)
    monkeypatch.setattr(ce, "load", load)
    monkeypatch.setattr(K, "_KERNEL", None)
    monkeypatch.setattr(K, "_KERNEL_TRIED", False)
    monkeypatch.setattr(K, "_INFO", {"seconds": 0.0, "compiled": False, "dir": None})
    monkeypatch.setattr(K, "PROGRESS_S", 0.1)
    state["ext"] = tmp_path / "ext"
    return state


def test_compile_is_announced_with_elapsed_time(fake_build: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert K.kernel() is not None
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("bioplaus: compiling the fused LIF kernel (once per user, torch ")
    assert str(fake_build["ext"]) in err[0]
    ticks = [ln for ln in err if ln.startswith("bioplaus: compiling the LIF kernel ... ")]
    assert len(ticks) >= 2  # a line every PROGRESS_S (0.1 s here) while the 0.4 s "compile" runs
    assert err[-1].startswith("bioplaus: LIF kernel compiled in ") and "not counted as training time" in err[-1]
    info = K.load_info()
    assert info["compiled"] and info["seconds"] >= 0.4
    assert info["dir"] == str(fake_build["ext"] / fake_build["calls"][0])


def test_cached_build_loads_silently(fake_build: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    src = Path(K.__file__).resolve().with_name("lif_kernel.cpp")
    name = K._kernel_build_name(src) + "_omp"
    (fake_build["ext"] / name).mkdir(parents=True)
    (fake_build["ext"] / name / f"{name}.so").touch()  # what a finished build leaves
    fake_build["sleep"] = 0.0
    assert K.kernel() is not None
    assert fake_build["calls"] == [name]
    assert capsys.readouterr().err == ""
    assert not K.load_info()["compiled"]


def test_cache_key_has_source_text_and_torch_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    src = tmp_path / "lif_kernel.cpp"
    src.write_text("int a;\n")
    a = K._kernel_build_name(src)
    assert a == K._kernel_build_name(src)
    src.write_text("int b;\n")  # an edited kernel gets its own build
    b = K._kernel_build_name(src)
    assert b != a
    monkeypatch.setattr(K.torch, "__version__", "9.9.9")  # so does another torch
    assert K._kernel_build_name(src) not in (a, b)


def test_run_seconds_leave_out_the_compile(fake_build: dict[str, Any], tmp_path: Path) -> None:
    fake_build["sleep"] = 1.5
    out = tmp_path / "r.h5"
    t0 = time.perf_counter()
    result = bioplaus.run(
        {"data": {"dataset": "digits", "limit_train": 64, "limit_test": 32},
         "network": {"backend": "spiking", "hidden": [16], "spiking": {"T": 4}},
         "train": {"epochs": 1, "max_steps": 2, "report": False, "progress": False, "threads": 1}},
        out=str(out),
    )
    wall = time.perf_counter() - t0
    with h5py.File(out, "r") as f:
        kernel_s = float(f.attrs["kernel_seconds"])
        assert float(f.attrs["kernel_compile_seconds"]) == kernel_s
        assert float(f.attrs["seconds"]) == pytest.approx(result.seconds)
    assert kernel_s >= 1.5
    assert result.seconds + kernel_s <= wall  # the compile is counted once, apart


def test_build_kernel_command(fake_build: dict[str, Any], capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["build-kernel"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("LIF kernel compiled in ") and str(fake_build["ext"]) in out
    monkeypatch.setenv("BIOPLAUS_LIF_KERNEL", "torch")
    assert main(["build-kernel"]) == 2
    assert capsys.readouterr().err.startswith("bioplaus: error: BIOPLAUS_LIF_KERNEL=torch")
