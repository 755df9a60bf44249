"""The Ray executor: same numbers as the local executors, failure isolation, files come back.

One loopback Ray head for the module (``ray start --head --node-ip-address=127.0.0.1``,
stopped by process group at the end), joined once by this process as the driver, so the
sweeps reuse warm workers (a sweep uses an existing ``ray.init`` connection).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import h5py
import pytest
from conftest import ROOT, tiny_config

from bioplaus.cli import main
from bioplaus.errors import ConfigError
from bioplaus.sweep import sweep
from bioplaus.sweep.index import read_index
from bioplaus.sweep.ray_executor import _task, check_address, connected, loopback_head

# not importorskip: importing ray here would bypass what bioplaus sets before its import
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")

LRS = [0.05, 1e30]  # 1e30: NaN loss at step 2, a run that fails at run time
ONE_THREAD = ["train.threads=1"]  # bit-identical across executors


def small_config() -> dict[str, Any]:
    return tiny_config(train__epochs=1, data__limit_train=256)


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("ray")
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    with loopback_head(num_cpus=2, temp_dir=tmp, env=env) as address, connected(address):
        yield address


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "lr"
    sweep(small_config(), grid={"rule.lr": LRS}, seeds=2, out=out, workers=1, overrides=ONE_THREAD, progress=False)
    return out


def test_ray_sweep_gives_the_local_numbers_isolates_failures_and_brings_files_back(
    ray_head: str, local_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ray"
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('name = "tiny"\n[data]\ndataset = "digits"\nbatch_size = 128\nlimit_train = 256\n'
                   '[network]\nbackend = "rate"\nhidden = [16]\n[rule]\nname = "backprop"\n'
                   '[train]\nepochs = 1\n')
    code = main(["sweep", str(cfg), "--grid", "rule.lr=0.05,1e30", "--seeds", "2", "--set", "train.threads=1",
                 "--out", str(out), "--ray", ray_head, "--quiet"])
    assert code == 1  # two runs failed, the others finished
    text = capsys.readouterr().out
    assert "done 2, failed 2" in text and text.count("loss is nan") == 2

    local = {r["file"]: r for r in rows_of(local_sweep / "index.csv")}
    rows = rows_of(out / "index.csv")
    assert [r["file"] for r in rows] == list(local)
    for r in rows:
        s = local[r["file"]]
        assert r["status"] == s["status"] and r["steps"] == s["steps"] and r["error"] == s["error"]
        for k in (k for k in s if k.startswith("final_") or k == "headline_value"):
            assert r[k] == s[k], k  # the same digits: same seed, same data order, one thread
        with h5py.File(out / r["file"], "r") as f:  # the file came back whole
            assert f.attrs["status"] == r["status"]
        assert float(r["wall_s"]) > 0
    assert [r["status"] for r in rows] == ["done", "done", "failed", "failed"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*local, "index.csv", "index.h5"])
    assert [r["status"] for r in read_index(out / "index.h5")] == [r["status"] for r in rows]


def test_ray_task_returns_the_file_bytes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    # What a worker without the driver's file system does: run into its own temp dir, return bytes.
    from bioplaus.sweep.spec import build_runs

    spec = build_runs(small_config(), {"rule.lr": [0.05]}, overrides=ONE_THREAD, report=True)[0]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        outcome, data = _task(spec.config, spec.file)
    finally:
        os.chdir(cwd)
    assert list(tmp_path.iterdir()) == [] and outcome["status"] == "done"
    figures = outcome.pop("_figures")  # --report: the figures come back with the file
    assert "learning_curves.png" in figures and all(b[:4] == b"\x89PNG" for b in figures.values())
    back = tmp_path / spec.file
    back.write_bytes(data)
    with h5py.File(back, "r") as f:
        assert f.attrs["status"] == "done" and f.attrs["final_test_acc"] == outcome["final_test_acc"]


def test_ctrl_c_cancels_the_ray_tasks(ray_head: str, tmp_path: Path) -> None:
    out = tmp_path / "stop"
    slow = tiny_config(train__epochs=100_000, data__limit_train=512)  # ends only by the Ctrl-C
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        res = sweep(slow, grid={"rule.lr": [0.01, 0.02, 0.03]}, out=out, overrides=ONE_THREAD, ray=ray_head,
                    progress=False)
    finally:
        timer.cancel()
    assert res.interrupted
    statuses = sorted(r["status"] for r in res.rows)
    assert statuses == ["interrupted", "interrupted", "pending"]  # 2 CPUs: two ran, one never started
    for r in res.rows:
        if r["status"] == "interrupted":
            assert "interrupted" in (r.get("error") or "")
            # a task that caught the cancel closes its file "interrupted" and returns it; one
            # cancelled before its run began returns nothing
            if (out / r["file"]).exists():
                with h5py.File(out / r["file"], "r") as f:
                    assert f.attrs["status"] == "interrupted"
    assert [r["status"] for r in rows_of(out / "index.csv")] == [r["status"] for r in res.rows]


def test_unreachable_or_bad_address_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never"
    with socket_free_port() as port:
        assert main(["sweep", "quickstart", "--out", str(out), "--ray", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Ray cluster reachable" in err[0] and not out.exists()
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        check_address("not an address")


def test_ray_not_installed_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    out = tmp_path / "never"
    assert main(["sweep", "quickstart", "--out", str(out), "--ray", "local"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ray is not installed" in err[0] and "bioplaus[ray]" in err[0]
    assert not out.exists()


class socket_free_port:  # noqa: N801 - used as a context manager
    """A loopback port nothing listens on (bound, never listening, while in use)."""

    def __enter__(self) -> int:
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return int(self.s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.s.close()


def test_worked_example_on_ray_prints_what_the_docs_say(ray_head: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # in this process (the driver joined above), so the module's warm workers run it
    import runpy

    from test_sweep import documented_output

    example = ROOT / "examples" / "sweep_grid.py"
    cwd, argv = os.getcwd(), sys.argv
    os.chdir(tmp_path)
    sys.argv = [str(example), "runs", "--ray", ray_head]
    try:
        runpy.run_path(str(example), run_name="__main__")
    finally:
        os.chdir(cwd)
        sys.argv = argv
    lines = [line.rstrip() for line in capsys.readouterr().out.strip().splitlines()]
    assert lines == documented_output()
    assert len(list((tmp_path / "runs" / "lr_hidden").glob("digits_mlp__*.h5"))) == 8


def test_ray_listens_on_loopback_only(ray_head: str) -> None:
    import shutil
    import subprocess

    if shutil.which("ss") is None:
        pytest.skip("no ss on this machine")
    lines = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True, check=True).stdout.splitlines()[1:]
    ray_lines = [ln for ln in lines if any(p in ln for p in ("gcs_server", "raylet", "ray::", "\"ray\""))]
    assert any(ray_head.split(":")[1] in ln for ln in ray_lines)  # the head's GCS is among them
    for ln in ray_lines:
        local = ln.split()[3]
        assert local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")), ln



@pytest.mark.slow
def test_ray_local_starts_and_stops_its_own_instance(tmp_path: Path) -> None:
    # its own process: this module's driver is already joined to the module's head
    import subprocess

    def ray_servers() -> set[str]:
        return {pid for name in ("gcs_server", "raylet")  # pgrep -x: names up to 15 characters
                for pid in subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.split()}

    before = ray_servers()
    out = tmp_path / "local"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)}
    proc = subprocess.run([sys.executable, "-m", "bioplaus.cli", "sweep", "quickstart", "--set", "network.backend=rate",
                           "--set", "train.epochs=1", "--grid", "rule.lr=0.05,1e30", "--out", str(out), "--ray", "local",
                           "--quiet"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]  # one run failed (NaN), the other finished
    assert [r["status"] for r in rows_of(out / "index.csv")] == ["done", "failed"]
    assert ray_servers() <= before  # the instance it started is gone with it
