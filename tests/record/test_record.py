"""Run files: writer/reader round trips, spike conservation, SWMR, killed and live writers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from bioplaus.record import FORMAT, Recorder, SpikeEvents, open_run

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {"name": "unit", "network": {"hidden": [32, 16]}, "train": {"epochs": 2}}


def _recorder(path: Path, **kwargs: object) -> Recorder:
    return Recorder(path, CONFIG, seed=7, **kwargs)  # type: ignore[arg-type]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _spawn(tmp_path: Path, source: str, *args: str) -> subprocess.Popen[str]:
    script = tmp_path / "writer_script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def _wait_line(proc: subprocess.Popen[str], expected: str, timeout: float = 60.0) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == expected:
            return
        if not line and proc.poll() is not None:
            break
    err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
    raise AssertionError(f"writer never printed {expected!r}; stderr:\n{err}")


# ---------------------------------------------------------------------- round trips


def test_root_attributes_and_status(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "run.h5"
    rec = _recorder(path, meta={"tags": ["a", "b"], "note": "hello", "n": 3, "none": None})
    with open_run(path) as run:
        assert run.status == "running"
        assert run.config == CONFIG
        assert run.seed == 7
        attrs = run.attrs
        assert attrs["format"] == FORMAT and attrs["format_version"] == 1
        assert attrs["tags"] == ["a", "b"] and attrs["note"] == "hello" and attrs["n"] == 3
        assert attrs["none"] is None
        assert set(attrs["versions"]) >= {"python", "torch", "numpy", "h5py", "bioplaus"}
        assert "created" in attrs and "finished" not in attrs
    rec.close(wall_time_s=1.5)
    with open_run(path) as run:
        assert run.status == "done"
        assert run.attrs["wall_time_s"] == 1.5
        assert "finished" in run.attrs
        assert run.name == "unit"


def test_metrics_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    with _recorder(path) as rec:
        for step in range(1000):  # several in-memory chunks of 256
            rec.log_metrics(step, train_loss=1.0 / (step + 1), lr=np.float32(0.5))
            if step % 100 == 0:
                rec.log_metrics(step, val_acc=step / 1000, **{"layer0/loss": float(step)})
            if step == 10:
                rec.start_swmr()
    with open_run(path) as run:
        assert set(run.metrics) == {"train_loss", "lr", "val_acc", "layer0/loss"}
        np.testing.assert_array_equal(run.metric_steps("train_loss"), np.arange(1000))
        np.testing.assert_allclose(run.metric("train_loss"), 1.0 / (np.arange(1000) + 1))
        assert run.metric("lr").dtype == np.float64
        np.testing.assert_array_equal(run.metric_steps("val_acc"), np.arange(0, 1000, 100))
        np.testing.assert_array_equal(run.metric("layer0/loss"), np.arange(0, 1000, 100))
        with pytest.raises(KeyError, match="no metric 'nope'"):
            run.metric("nope")


def test_metric_name_checks(tmp_path: Path) -> None:
    with _recorder(tmp_path / "m.h5") as rec:
        rec.log_metrics(0, loss=1.0)
        with pytest.raises(ValueError, match="collides"):
            rec.log_metrics(0, loss_step=1.0)
        with pytest.raises(TypeError, match="metric 'bad'"):
            rec.log_metrics(0, bad="x")  # type: ignore[arg-type]


def test_trace_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    rng = np.random.default_rng(0)
    records = [rng.normal(size=(20, 3, 5)) for _ in range(4)]
    with _recorder(path) as rec:
        for i, arr in enumerate(records):
            rec.log_trace(
                "h1.mem", 10 * i, arr, unit="mV", dt=1e-3, every=10, dims="time,sample,neuron"
            )
        rec.log_trace("rate", 0, np.ones(4), unit="Hz", dt=None, every=1, dims=["record", "unit"])
        with pytest.raises(ValueError, match="differs"):
            rec.log_trace("rate", 1, np.ones(5), unit="Hz", dt=None, every=1, dims="unit")
        with pytest.raises(ValueError, match="dims"):
            rec.log_trace("x", 1, np.ones((2, 2)), unit="", dt=None, every=1, dims="a")
    with open_run(path) as run:
        assert run.traces == ["h1.mem", "rate"]
        data = run.trace("h1.mem")
        assert data.dtype == np.float32 and data.shape == (4, 20, 3, 5)
        np.testing.assert_allclose(data, np.stack(records), rtol=1e-6)
        info = run.trace_info("h1.mem")
        assert info["unit"] == "mV" and info["dt"] == 1e-3 and info["every"] == 10
        assert info["dims"] == "record,time,sample,neuron"
        np.testing.assert_array_equal(info["steps"], [0, 10, 20, 30])
        assert "dt" not in run.trace_info("rate")
        ds = h5py.File(path, "r")["traces/h1.mem"]
        assert ds.compression in ("gzip", "lzf") and ds.maxshape[0] is None


def test_weights_round_trip_with_torch(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "w.h5"
    snaps = [torch.randn(8, 4, dtype=torch.float64) for _ in range(3)]
    with _recorder(path) as rec:
        for i, w in enumerate(snaps):
            rec.log_weights("fc1", 100 * i, w)
        rec.log_weights("conv0", 0, np.zeros((2, 1, 3, 3)))
        with pytest.raises(ValueError, match="fc1"):
            rec.log_weights("fc1", 300, np.zeros((4, 8)))
    with open_run(path) as run:
        assert run.layers_with_weights == ["conv0", "fc1"]
        steps, data = run.weights("fc1")
        np.testing.assert_array_equal(steps, [0, 100, 200])
        assert data.dtype == np.float32
        np.testing.assert_allclose(data, torch.stack(snaps).numpy(), rtol=1e-6)
        assert run.weights("conv0")[1].shape == (1, 2, 1, 3, 3)


def test_log_array_and_set_attrs(tmp_path: Path) -> None:
    path = tmp_path / "a.h5"
    with _recorder(path) as rec:
        rec.log_array("/continual/acc_matrix", np.zeros((2, 2)), ACC=0.0)
        rec.log_array("model/fc1.weight", np.ones((3, 2), dtype=np.float32))
        rec.log_array("/model/nir", b"\x00\x01graph")
        rec.log_array("/model/note", "text")
        rec.set_attrs("/model", kind="mlp", layers=["fc1"])
        rec.flush()
        rec.start_swmr()
        # Same shape: rewritten in place during SWMR; the attribute follows at close.
        rec.log_array("/continual/acc_matrix", np.eye(2), ACC=0.9, BWT=-0.05)
        with open_run(path) as run:
            np.testing.assert_array_equal(run.array("/continual/acc_matrix"), np.eye(2))
            assert run.attrs_of("/continual/acc_matrix") == {"ACC": 0.0}
        # New shape: written at close.
        rec.log_array("/continual/acc_matrix", np.full((3, 3), 0.5), ACC=0.5, BWT=-0.1)
    with open_run(path) as run:
        np.testing.assert_array_equal(run.array("/continual/acc_matrix"), np.full((3, 3), 0.5))
        assert run.attrs_of("/continual/acc_matrix") == {"ACC": 0.5, "BWT": -0.1}
        np.testing.assert_array_equal(run.array("model/fc1.weight"), np.ones((3, 2)))
        assert run.array("/model/nir").tobytes() == b"\x00\x01graph"
        assert str(run.array("/model/note")) == "text"
        assert run.attrs_of("/model") == {"kind": "mlp", "layers": ["fc1"]}
        summary = run.summary()
        assert summary["arrays"]["/continual/acc_matrix"] == [3, 3]
        assert "model" in summary["groups"]
        json.dumps(summary)  # JSON-friendly for `bioplaus inspect --json`


# ---------------------------------------------------------------------- spikes


def test_spike_conservation(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    rng = np.random.default_rng(1)
    calls = []  # (step, offset, array)
    with _recorder(path) as rec:
        written = 0
        for step in (0, 50, 100):
            for offset in (0, 4):
                p = rng.uniform(0.0, 0.3)
                spikes = rng.random((25, 4, 30)) < p
                calls.append((step, offset, spikes))
                written += rec.log_spikes("hidden", step, spikes, dt=5e-4, sample_offset=offset)
            if step == 0:
                rec.start_swmr()
        silent = np.zeros((25, 2, 30), dtype=bool)
        assert rec.log_spikes("hidden", 150, silent, dt=5e-4) == 0
        out = rng.random((25, 4, 2, 3)) < 0.2  # neuron axes [C, W] flattened
        assert rec.log_spikes("out", 0, out.astype(np.float32), dt=5e-4) == out.sum()
    total = sum(int(a.sum()) for _, _, a in calls)
    assert written == total
    with open_run(path) as run:
        assert run.populations == ["hidden", "out"]
        ev = run.spikes("hidden")
        assert isinstance(ev, SpikeEvents)
        assert ev.count == total and ev.n_neurons == 30 and ev.dt == 5e-4 and ev.n_time == 25
        assert ev.step.dtype == np.int64 and ev.t.dtype == np.int32
        assert ev.neuron.dtype == np.uint32 and ev.sample.dtype == np.uint32
        np.testing.assert_allclose(ev.times, ev.t * 5e-4)
        np.testing.assert_array_equal(ev.steps, [0, 50, 100, 150])
        for step in (0, 50, 100):
            expected = np.concatenate([a for s, _, a in calls if s == step], axis=1)
            np.testing.assert_array_equal(ev.to_dense(step), expected)
        last = ev.to_dense()
        assert last.shape == (25, 2, 30) and not last.any()
        with pytest.raises(KeyError, match="step 7"):
            ev.to_dense(7)
        np.testing.assert_array_equal(run.spikes("out").to_dense(0), out.reshape(25, 4, 6))
        assert run.summary()["populations"] == {"hidden": total, "out": int(out.sum())}
    with pytest.raises(ValueError, match="hidden"):
        with _recorder(tmp_path / "bad.h5") as rec:
            rec.log_spikes("hidden", 0, np.zeros((5, 1, 3)), dt=1e-3)
            rec.log_spikes("hidden", 1, np.zeros((5, 1, 4)), dt=1e-3)


# ---------------------------------------------------------------------- SWMR and status


def test_new_names_during_swmr_are_written_at_close(tmp_path: Path) -> None:
    path = tmp_path / "swmr.h5"
    rec = _recorder(path)
    rec.log_metrics(0, train_loss=1.0)
    rec.start_swmr()
    assert rec.swmr
    rec.log_metrics(1, train_loss=0.5, late_metric=3.0)
    rec.log_trace("late.mem", 1, np.ones((4, 2)), unit="mV", dt=1e-3, every=1, dims="time,neuron")
    n = rec.log_spikes("late_pop", 1, np.ones((4, 1, 2)), dt=1e-3)
    rec.log_weights("late_layer", 1, np.ones((2, 2)))
    rec.log_array("/continual/acc_matrix", np.eye(2), ACC=1.0)
    rec.set_attrs("/", best_acc=0.9)
    rec.flush()
    with open_run(path) as run:
        assert run.status == "running"
        np.testing.assert_array_equal(run.metric("train_loss"), [1.0, 0.5])
        assert "late_metric" not in run.metrics and run.traces == [] and run.populations == []
    rec.close()
    rec.close()  # idempotent
    with open_run(path) as run:
        assert run.status == "done"
        assert run.metric("late_metric").tolist() == [3.0]
        assert run.trace("late.mem").shape == (1, 4, 2)
        assert run.spikes("late_pop").count == n == 8
        assert run.weights("late_layer")[1].shape == (1, 2, 2)
        assert run.attrs_of("/continual/acc_matrix")["ACC"] == 1.0
        assert run.attrs["best_acc"] == 0.9


def test_status_values(tmp_path: Path) -> None:
    rec = _recorder(tmp_path / "s.h5")
    with pytest.raises(ValueError, match="status"):
        rec.close("finished")
    rec.close("interrupted")
    with open_run(tmp_path / "s.h5") as run:
        assert run.status == "interrupted"
    with pytest.raises(RuntimeError, match="closed"):
        rec.log_metrics(0, x=1.0)


def test_status_dataset_wins_over_running_attr(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    _recorder(path).close("done")
    with h5py.File(path, "a") as f:  # as a writer killed after its SWMR status update
        f.attrs["status"] = "running"
        f["status"][()] = np.bytes_(b"interrupted")
    with open_run(path) as run:
        assert run.status == "interrupted"


def test_context_manager_failed_and_interrupted(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="NaN loss"):
        with _recorder(tmp_path / "f.h5") as rec:
            rec.log_metrics(0, train_loss=1.0)
            rec.start_swmr()
            raise RuntimeError("NaN loss at step 3")
    with open_run(tmp_path / "f.h5") as run:
        assert run.status == "failed"
        assert run.attrs["error"] == "NaN loss at step 3"
        assert run.metric("train_loss").tolist() == [1.0]
        assert run.summary()["error"] == "NaN loss at step 3"
    with pytest.raises(KeyboardInterrupt):
        with _recorder(tmp_path / "k.h5"):
            raise KeyboardInterrupt
    with open_run(tmp_path / "k.h5") as run:
        assert run.status == "interrupted"


def test_close_during_a_write_is_deferred(tmp_path: Path) -> None:
    # What a SIGTERM handler calling close() in the middle of a log call amounts to.
    rec = _recorder(tmp_path / "d.h5")
    rec.start_swmr()
    with rec._op():
        rec.log_metrics(0, x=1.0)
        rec.close("interrupted")
        assert not rec.closed
    assert rec.closed
    with open_run(tmp_path / "d.h5") as run:
        assert run.status == "interrupted" and run.metric("x").tolist() == [1.0]


def test_auto_flush(tmp_path: Path) -> None:
    path = tmp_path / "af.h5"
    rec = _recorder(path, flush_every_s=0.0)
    rec.log_metrics(0, x=1.0)
    rec.start_swmr()
    rec.log_metrics(1, x=2.0)
    with open_run(path) as run:
        assert run.metric("x").tolist() == [1.0, 2.0]
    rec.close()


# ---------------------------------------------------------------------- reader errors


def test_open_run_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        open_run(tmp_path / "missing.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "something.else"
    with pytest.raises(ValueError, match=r"other\.h5 is not a bioplaus run"):
        open_run(other)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="text.h5"):
        open_run(text)


def test_reader_falls_back_for_files_without_swmr_support(tmp_path: Path) -> None:
    path = tmp_path / "old.h5"
    with h5py.File(path, "w", libver="earliest") as f:
        f.attrs.update(format=FORMAT, format_version=1, status="done", config="{}", seed=1)
        f.create_dataset("metrics/x", data=[1.0, 2.0])
        f.create_dataset("metrics/x_step", data=[0, 1])
    with open_run(path) as run:
        assert run.status == "done" and run.metric("x").tolist() == [1.0, 2.0]


# ---------------------------------------------------------------------- other processes

_KILLED_WRITER = """
import sys, time
import numpy as np
from bioplaus.record import Recorder

path, swmr = sys.argv[1], sys.argv[2] == "swmr"
rec = Recorder(path, {"name": "killed"}, seed=3, flush_every_s=3600)
for step in range(300):
    rec.log_metrics(step, train_loss=1.0 / (step + 1))
    rec.log_spikes("hidden", step, np.ones((3, 2, 4)), dt=1e-3)
    if step == 0 and swmr:
        rec.start_swmr()
rec.flush()
print("flushed", flush=True)
step = 300
while True:  # never flushed again: lost on SIGKILL, by design
    if swmr:  # in the lazy phase a flush opens the file; a kill then would need h5clear
        rec.log_metrics(step, train_loss=0.0)
    step += 1
    time.sleep(0.001)
"""


@pytest.mark.parametrize("mode", ["swmr", "lazy"])
def test_sigkilled_writer_leaves_a_readable_file(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "killed.h5"
    proc = _spawn(tmp_path, _KILLED_WRITER, str(path), mode)
    try:
        _wait_line(proc, "flushed")
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with open_run(path) as run:
        assert run.status == "running"
        assert run.config == {"name": "killed"}
        steps = run.metric_steps("train_loss")
        assert len(steps) >= 300
        np.testing.assert_array_equal(steps[:300], np.arange(300))
        np.testing.assert_allclose(run.metric("train_loss")[:300], 1.0 / (np.arange(300) + 1))
        assert run.spikes("hidden").count == 300 * 24


_LIVE_WRITER = """
import sys, time
from pathlib import Path
from bioplaus.record import Recorder

path, go = sys.argv[1], Path(sys.argv[2])
with Recorder(path, {"name": "live"}, seed=1, flush_every_s=3600) as rec:
    rec.log_metrics(0, train_loss=1.0)
    rec.start_swmr()
    step = 1
    while not go.exists():
        rec.log_metrics(step, train_loss=1.0 / (step + 1))
        if step % 10 == 0:
            rec.flush()
        if step == 50:
            print("ready", flush=True)
        step += 1
        time.sleep(0.002)
print("closed", flush=True)
print(step, flush=True)  # rows logged: steps 0 .. step - 1
"""


def test_reader_while_writer_writes(tmp_path: Path) -> None:
    path, go = tmp_path / "live.h5", tmp_path / "go"
    proc = _spawn(tmp_path, _LIVE_WRITER, str(path), str(go))
    try:
        _wait_line(proc, "ready")
        with open_run(path) as run:
            assert run.status == "running"
            first = len(run.metric("train_loss"))
            assert first >= 41
            deadline = time.monotonic() + 30
            while len(run.metric("train_loss")) <= first and time.monotonic() < deadline:
                time.sleep(0.05)
            later = run.metric_steps("train_loss")
            assert len(later) > first  # refresh() shows rows appended after opening
            np.testing.assert_array_equal(later, np.arange(len(later)))
            # The writer must close cleanly even though this reader still holds the file.
            go.touch()
            _wait_line(proc, "closed")
            assert proc.stdout is not None
            logged = int(proc.stdout.readline())
            assert proc.wait(timeout=60) == 0
        with open_run(path) as run:
            assert run.status == "done"
            # every row reaches the file, those logged after the last flush at the close
            # (a loaded machine may log no row between the reader's look and the stop)
            assert logged >= len(later)
            np.testing.assert_array_equal(run.metric_steps("train_loss"), np.arange(logged))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_spike_events_are_buffered_until_a_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Thousands of events per record do not make every record a (compressing) write: the
    event table is bounded by bytes, so the records reach the file at the flush, all of them."""
    from bioplaus.record import writer

    writes = []
    real = writer._Table.write
    monkeypatch.setattr(writer._Table, "write", lambda self, f: (writes.append(self.rows), real(self, f)))
    path = tmp_path / "b.h5"
    rng = np.random.default_rng(2)
    total = 0
    with _recorder(path) as rec:
        rec.start_swmr()
        n0 = len(writes)
        for step in range(20):
            total += rec.log_spikes("hidden", step, rng.random((10, 4, 256)) < 0.2, dt=1e-3)
        assert len(writes) == n0  # nothing written while recording
        rec.flush()
    assert total > 20 * 256
    with open_run(path) as run:
        assert len(run.spikes("hidden").neuron) == total
