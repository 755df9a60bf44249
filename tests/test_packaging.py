"""Packaging: --version, sims run by name, what the wheel carries, the kernel build's ninja."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import types
import zipfile
from pathlib import Path

import h5py
import pytest

import bioplaus
from bioplaus import sims
from bioplaus.cli import main
from bioplaus.neurons import kernel as kmod

ROOT = Path(__file__).resolve().parents[1]
SIMS = sorted(p.stem for p in (ROOT / "sims").glob("*.toml"))


def _build_wheel(tmp_path: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the sources (an in-tree build/ could go stale)."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
    for name in ("bioplaus", "neuro_data", "sims"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--no-index", "-q", "-w", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    return wheel


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"bioplaus {bioplaus.__version__}\n"


def test_version_has_one_source() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bioplaus.__version__"}


def test_run_packaged_sim_by_name_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert sims.resolve_config("quickstart") == str(ROOT / "sims" / "quickstart.toml")
    assert sims.resolve_config("quickstart.toml") == str(ROOT / "sims" / "quickstart.toml")
    argv = ["run", "quickstart", "--set", "train.epochs=1", "--no-report", "--quiet",
            "--out", "tmp/q.h5"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("done: test_acc=")
    with h5py.File(tmp_path / "tmp" / "q.h5", "r") as f:
        assert f.attrs["status"] == "done"


def test_existing_file_wins_over_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart").write_text("name = 'mine'\n")
    assert sims.resolve_config("quickstart") == "quickstart"
    assert sims.resolve_config(str(tmp_path / "quickstart")) == str(tmp_path / "quickstart")


@pytest.mark.parametrize("arg, expect", [
    ("quikstart", "did you mean quickstart?"),
    ("zzzzzzzz", "`bioplaus list` names them all"),
    ("sims/quickstart.toml", "config file not found; the packaged sim of that name runs with "
                             "`bioplaus run quickstart`"),
    ("nope/nope.toml", "nope/nope.toml: config file not found"),
])
def test_unknown_name_is_one_line_exit_2(
    arg: str, expect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", arg]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bioplaus: error: ") and err.count("\n") == 1, err
    assert expect in err
    assert not (tmp_path / "runs").exists()


def test_list_names_the_sims(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("sims:"))
    assert all(name in line for name in SIMS)


def test_no_sims_from_a_stray_site_packages_dir(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a checkout, a top-level ``sims/`` beside the package is not ours."""
    (tmp_path / "bioplaus").mkdir()
    (tmp_path / "sims").mkdir()
    (tmp_path / "sims" / "evil.toml").write_text("")
    monkeypatch.setattr(sims, "_PKG", tmp_path / "bioplaus")
    assert sims.sim_names() == []
    (tmp_path / "bioplaus" / "_sims").mkdir()
    (tmp_path / "bioplaus" / "_sims" / "quickstart.toml").write_text("")
    assert sims.sim_names() == ["quickstart"]


def test_wheel_carries_kernel_source_sims_and_every_module(tmp_path: Path) -> None:
    """Built with the installed setuptools, offline (a few seconds)."""
    wheel = _build_wheel(tmp_path)
    assert wheel.name.startswith(f"bioplaus-{bioplaus.__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "bioplaus/neurons/lif_kernel.cpp" in names
    assert "bioplaus/record/schema.md" in names
    assert {f"bioplaus/_sims/{s}.toml" for s in SIMS} <= names
    modules = {str(p.relative_to(ROOT)) for pkg in ("bioplaus", "neuro_data")
               for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= names
    meta = zipfile.ZipFile(wheel).read(
        f"bioplaus-{bioplaus.__version__}.dist-info/METADATA").decode()
    core = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist:") and "extra ==" not in ln]
    assert any("ninja" in ln for ln in core)
    assert not any("snntorch" in ln for ln in core)
    # PEP 561 marker, the license text, SPDX expression and project URLs (issue 23)
    assert "bioplaus/py.typed" in names
    assert f"bioplaus-{bioplaus.__version__}.dist-info/licenses/LICENSE" in names
    assert "License-Expression: MIT" in meta
    urls = {ln.split(": ", 1)[1].split(", ")[0]: ln.split(", ")[1] for ln in meta.splitlines()
            if ln.startswith("Project-URL:")}
    assert set(urls) >= {"Documentation", "Source", "Issues"}
    assert all(u.startswith("https://github.com/bioplaus/bioplaus") for u in urls.values())


def test_ninja_wheel_binary_put_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin")
    monkeypatch.setattr(kmod.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "ninja", types.SimpleNamespace(BIN_DIR="/venv/bin"))
    kmod._ninja_on_path()
    assert kmod.os.environ["PATH"].split(kmod.os.pathsep) == ["/venv/bin", "/usr/bin"]


def test_ninja_on_path_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin")
    monkeypatch.setattr(kmod.shutil, "which", lambda name: "/usr/bin/ninja")
    kmod._ninja_on_path()
    assert kmod.os.environ["PATH"] == "/usr/bin"


def test_kernel_build_dir_per_install() -> None:
    a = kmod._kernel_build_name(Path("/a/bioplaus/neurons/lif_kernel.cpp"))
    assert a == kmod._kernel_build_name(Path("/a/bioplaus/neurons/lif_kernel.cpp"))
    assert a != kmod._kernel_build_name(Path("/b/bioplaus/neurons/lif_kernel.cpp"))
    assert a.startswith("bioplaus_lif_kernel_") and a.isidentifier()


@pytest.mark.slow
def test_wheel_install_runs_quickstart_by_name(tmp_path: Path) -> None:
    """Wheel into a venv (third-party packages from the system site), run from an empty dir;
    the LIF kernel compiles from the wheel's copy of its source (about a minute)."""
    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                    "--ignore-installed", str(wheel)], check=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # the kernel must build from the wheel's source, in a cache of the test's own
    env.update(BIOPLAUS_LIF_KERNEL="cpp", TORCH_EXTENSIONS_DIR=str(tmp_path / "ext"))
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import bioplaus; print(bioplaus.__file__)"], cwd=empty, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert Path(out.strip()).is_relative_to(venv)
    r = subprocess.run([str(venv / "bin" / "bioplaus"), "run", "quickstart", "--set",
                        "train.epochs=1", "--no-report", "--quiet"], cwd=empty, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (empty / "runs" / "quickstart.h5").is_file()
