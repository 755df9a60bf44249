"""Never lose a file: overwrite rules, unwritable paths, disk full, divergence, early signals."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import pytest
import torch

import bioplaus
from bioplaus.cli import main
from bioplaus.config import load_config
from bioplaus.errors import OutputError, RunError
from bioplaus.experiments import run_experiment
from bioplaus.experiments.supervised import Supervised
from bioplaus.record import Recorder
from bioplaus.record.writer import check_out_path, is_run_file

ROOT = Path(__file__).resolve().parents[2]
QUICK = ROOT / "sims" / "quickstart.toml"

# A rate net on a quarter of digits: about a second per run.
TINY = """
name = "tiny"
[data]
dataset = "digits"
batch_size = 128
limit_train = 256
[network]
backend = "rate"
hidden = [16]
[train]
epochs = 1
threads = 1
report = false
progress = false
"""


def _cfg(tmp: Path, text: str = TINY, name: str = "tiny.toml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["run", *args, "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


# ------------------------------------------------------------------ overwrite rules


def test_existing_out_is_refused_and_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.h5"
    assert _run([str(_cfg(tmp_path)), "--out", str(out)], capsys)[0] == 0
    before = _md5(out)
    code, _, err = _run([str(_cfg(tmp_path)), "--out", str(out)], capsys)
    assert code == 2
    assert err == f"bioplaus: error: {out}: exists; pass --overwrite (record.overwrite = true) to replace it\n"
    assert _md5(out) == before
    with pytest.raises(OutputError, match="exists"):
        bioplaus.run(_cfg(tmp_path), out=out)
    assert _md5(out) == before


def test_overwrite_replaces_a_run_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.h5"
    assert _run([str(_cfg(tmp_path)), "--out", str(out)], capsys)[0] == 0
    for extra in (["--overwrite"], ["--set", "record.overwrite=true"]):
        code, stdout, _ = _run([str(_cfg(tmp_path)), "--out", str(out), "--set", "seed=5", *extra], capsys)
        assert code == 0 and stdout.startswith("done:") and str(out) in stdout
        with bioplaus.open_run(out) as run:
            assert run.status == "done" and run.seed == 5
    res = bioplaus.run(_cfg(tmp_path), {"seed": 6}, out=out, overwrite=True)
    assert res.path == out
    with bioplaus.open_run(out) as run:
        assert run.seed == 6
    assert not list(tmp_path.glob(".r.h5*"))  # no temporary file left


def test_overwrite_never_replaces_other_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = [1, 2, 3]
    for target in (notes, other):
        before = _md5(target)
        code, _, err = _run([str(_cfg(tmp_path)), "--out", str(target)], capsys)
        assert code == 2 and err.count("\n") == 1 and "exists; pass --overwrite" in err
        code, _, err = _run([str(_cfg(tmp_path)), "--out", str(target), "--overwrite"], capsys)
        assert code == 2
        assert err == f"bioplaus: error: {target}: exists and is not a bioplaus run file; refusing to overwrite it\n"
        assert _md5(target) == before
    assert not is_run_file(notes) and not is_run_file(other)


def test_failed_build_never_touches_an_overwritten_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.h5"
    assert _run([str(_cfg(tmp_path)), "--out", str(out)], capsys)[0] == 0
    before = _md5(out)
    monkeypatch.setenv("BIOPLAUS_DATA", str(tmp_path / "empty"))
    code, _, err = _run([str(_cfg(tmp_path)), "--out", str(out), "--overwrite", "--set", "data.dataset=cifar10"], capsys)
    assert code == 2 and "cifar10" in err and err.count("\n") == 1
    assert _md5(out) == before


def test_default_out_takes_the_next_free_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = str(_cfg(tmp_path))
    written = []
    for _ in range(3):
        code, stdout, _ = _run([cfg], capsys)
        assert code == 0
        written.append(stdout.rsplit("-> ", 1)[1].strip())
    assert written == ["runs/tiny.h5", "runs/tiny-1.h5", "runs/tiny-2.h5"]
    for name in written:
        with bioplaus.open_run(name) as run:
            assert run.status == "done"
    # --overwrite without --out replaces runs/<name>.h5 itself
    before = _md5(Path("runs/tiny.h5"))
    code, stdout, _ = _run([cfg, "--overwrite", "--set", "seed=9"], capsys)
    assert code == 0 and stdout.rstrip().endswith("-> runs/tiny.h5")
    assert _md5(Path("runs/tiny.h5")) != before
    assert not Path("runs/tiny-3.h5").exists()


def test_recorder_refuses_numbers_or_replaces(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    Recorder(path, {"name": "a"}, seed=0).close()
    with pytest.raises(OutputError, match="exists"):
        Recorder(path, {"name": "b"}, seed=0)
    rec = Recorder(path, {"name": "c"}, seed=0, on_exists="number")
    assert rec.path == tmp_path / "r-1.h5"
    rec.close()
    Recorder(path, {"name": "d"}, seed=0, on_exists="overwrite").close()
    with bioplaus.open_run(path) as run:
        assert run.config["name"] == "d"
    assert check_out_path(path, "number") == tmp_path / "r-2.h5"


# ------------------------------------------------------------------ unwritable paths


@pytest.mark.parametrize("case", ["directory", "device", "under_a_file"])
def test_unwritable_out_one_line_exit_2(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    out, msg = {
        "directory": (tmp_path, "is a directory"),
        "device": (Path("/dev/full"), "is a character device; a run file must be a regular file"),
        "under_a_file": (plain / "r.h5", "is not a directory"),
    }[case]
    if case == "device" and not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    for extra in ([], ["--overwrite"]):
        code, _, err = _run([str(_cfg(tmp_path)), "--out", str(out), *extra], capsys)
        assert code == 2
        assert err.startswith(f"bioplaus: error: {out}: ") and msg in err and err.count("\n") == 1
    assert plain.read_text() == "x"


def test_read_only_file_system(mount_tmpfs: Callable[..., Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    ro = mount_tmpfs("100k", read_only=True)
    for out in (ro / "r.h5", ro / "sub" / "r.h5"):
        code, _, err = _run([str(_cfg(tmp_path)), "--out", str(out)], capsys)
        assert code == 2
        assert err == f"bioplaus: error: {out}: cannot create the run file: Read-only file system\n"


def test_disk_full_fails_the_run_with_a_status(mount_tmpfs: Callable[..., Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    fs = mount_tmpfs("300k")
    out = fs / "q.h5"
    code, _, err = _run([str(QUICK), "--out", str(out), "--no-report", "--set", "train.threads=1"], capsys)
    assert code == 2
    assert err.startswith(f"bioplaus: error: {out}: disk full") and err.count("\n") == 1
    with bioplaus.open_run(out) as run:
        assert run.status == "failed"
        assert "disk full" in run.attrs["error"]


WRITER = """
import sys
import numpy as np
import bioplaus.record.writer as w
from bioplaus.errors import OutputError
from bioplaus.record import Recorder

# Let HDF5 itself hit ENOSPC: no look at the free space before writing.
w._free_bytes = lambda path: None
rec = Recorder(sys.argv[1], {"name": "full"}, seed=0)
rng = np.random.default_rng(0)
rec.log_metrics(0, loss=1.0)
rec.log_spikes("p", 0, rng.random((20, 8, 200)) < 0.3, dt=1e-3)
if sys.argv[2] == "swmr":
    rec.start_swmr()
try:
    for step in range(1, 100000):
        rec.log_metrics(step, loss=float(step))
        rec.log_spikes("p", step, rng.random((20, 8, 200)) < 0.3, dt=1e-3)
        if step % 10 == 0:
            rec.flush()
except OutputError as exc:
    print("stopped:", exc)
rec.close("failed", error="disk full")
print("closed")
"""


@pytest.mark.parametrize("phase", ["lazy", "swmr"])
def test_enospc_inside_hdf5_no_crash(phase: str, mount_tmpfs: Callable[..., Path], tmp_path: Path) -> None:
    """Where HDF5 used to segfault: a write error, then closing the file."""
    fs = mount_tmpfs("1m")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    out = fs / "r.h5"
    proc = subprocess.run([sys.executable, str(script), str(out), phase], capture_output=True,
                          text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == ""
    assert "disk full (No space left on device)" in proc.stdout and "closed" in proc.stdout
    with bioplaus.open_run(out) as run:
        assert run.status == "failed"
        assert len(run.metric("loss")) >= 1
        assert run.spikes("p").count > 0


# ------------------------------------------------------------------ divergence


def test_finite_divergence_fails_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "div.h5"
    code, _, err = _run([str(QUICK), "--out", str(out), "--no-report", "--set", "rule.lr=1e30",
                         "--set", "train.threads=1"], capsys)
    assert code == 2
    assert "train.divergence_factor=10000" in err and "at step 2" in err and err.count("\n") == 1
    with bioplaus.open_run(out) as run:
        assert run.status == "failed"
        assert run.attrs["failed_step"] == 2
        assert "diverged" in run.attrs["error"]


def test_divergence_check_off_and_parameters(tmp_path: Path) -> None:
    # spiking: the loss stays finite however large the steps; only the factor catches it
    cfg = load_config(_cfg(tmp_path), ["network.backend=spiking", "network.spiking.T=4", "rule.lr=1e30",
                                       "train.divergence_factor=0", "train.max_steps=3"])
    res = run_experiment(cfg, out=tmp_path / "off.h5")
    assert res.status == "done"
    exp = res.experiment
    with torch.no_grad():
        next(exp.model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(RunError, match=r"parameter net\..* is not finite at step 7"):
        exp.check_parameters(7)
    with pytest.raises(bioplaus.ConfigError, match="train.divergence_factor"):
        run_experiment(load_config(_cfg(tmp_path), ["train.divergence_factor=0.5"]), out=tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


# ------------------------------------------------------------------ SWMR point


def test_swmr_starts_after_the_first_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, bool]] = []
    step = Supervised.train_step

    def spy(self: Supervised, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        seen.append((self.ctx.step, self.ctx.recorder.swmr))
        return step(self, x, y)

    monkeypatch.setattr(Supervised, "train_step", spy)
    cfg = load_config(_cfg(tmp_path), ["train.epochs=2"])
    res = run_experiment(cfg, out=tmp_path / "s.h5")
    assert seen[0] == (0, False) and all(swmr for _, swmr in seen[1:])
    with bioplaus.open_run(res.path) as run:
        # epoch-level metrics were created empty with the file and streamed under SWMR
        assert len(run.metric("train_loss_epoch")) == 2 and list(run.metric("epoch")) == [1, 2]
        assert all(len(v) for v in run.metrics.values())  # declared but unused: removed


# ------------------------------------------------------------------ signals


def _catches_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as fh:
        mask = next(int(line.split()[1], 16) for line in fh if line.startswith("SigCgt:"))
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def _popen(tmp_path: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bioplaus.cli", "run", str(QUICK), "--out", str(out), "--quiet",
         "--no-report", "--set", "train.threads=1"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to see the handler")
def test_sigterm_at_start_exits_130_writing_nothing(tmp_path: Path) -> None:
    out = tmp_path / "early.h5"
    proc = _popen(tmp_path, out)
    t0 = time.monotonic()
    while not _catches_sigterm(proc.pid):  # the CLI's first statement
        assert proc.poll() is None and time.monotonic() - t0 < 30
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)  # still importing torch
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.startswith("bioplaus: interrupted") and err.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".early*"))


def test_sigterm_once_the_file_exists_closes_it_interrupted(tmp_path: Path) -> None:
    out = tmp_path / "late.h5"
    proc = _popen(tmp_path, out)
    t0 = time.monotonic()
    while not out.exists():
        assert proc.poll() is None and time.monotonic() - t0 < 120
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err == f"bioplaus: interrupted; {out} holds everything up to the last flush (status 'interrupted')\n"
    with bioplaus.open_run(out) as run:
        assert run.status == "interrupted"


def test_interrupt_before_the_file_names_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(self: Supervised) -> None:
        self.ctx.stop_requested = True  # as the handler does on SIGTERM during build

    monkeypatch.setattr(Supervised, "build", stop)
    out = tmp_path / "b.h5"
    code, _, err = _run([str(_cfg(tmp_path)), "--out", str(out)], capsys)
    assert code == 130
    assert err == "bioplaus: interrupted before the run file was created; nothing written\n"
    assert not out.exists()


def test_recorder_declared_metrics(tmp_path: Path) -> None:
    with Recorder(tmp_path / "d.h5", {"name": "d"}, seed=0) as rec:
        rec.declare_metrics("loss", "acc")
        rec.log_metrics(0, loss=1.0)
        rec.flush()
        with h5py.File(tmp_path / "d.h5", "r") as f:  # exist before any value
            assert f["metrics/acc"].shape == (0,)
    with bioplaus.open_run(tmp_path / "d.h5") as run:
        assert sorted(run.metrics) == ["loss"]


def test_message_names_file_for_bad_dir(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"is a directory"):
        Recorder(tmp_path, {"name": "x"}, seed=0)
