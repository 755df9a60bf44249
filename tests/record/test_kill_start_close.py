"""A run file stays readable after a SIGKILL at any instant, start and close included (issue 26,
class 3), and a truncated file whose SWMR writer was killed is refused at once (no retry loop).

Each writer is a child process that writes a run with a large model and stops at one instant
(a patched method prints READY and sleeps): inside the first lazy flush, inside `start_swmr`
before SWMR mode is on, inside the writes of `close`, while placing the first version, and
mid-training under SWMR. The test then kills it with SIGKILL and reads the file in another
process with a timeout. Before the fix the lazy, start and close kills left the file flagged
"already open for write" (every reader refused it), and a cut copy of an SWMR file hung the
reader in HDF5's retry loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import ROOT

from bioplaus.errors import RunFileError
from bioplaus.record import open_run
from bioplaus.record._superblock import lookup3, read_superblock

BOUND_S = 20.0  # the goal is well under a second; the machine is shared and loaded
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + str(ROOT / "tests"), "OMP_NUM_THREADS": "1"}

_WRITER = r"""
import sys, time
import numpy as np
from bioplaus.record import writer as w

path, instant = sys.argv[1], sys.argv[2]
calls = {"n": 0}
WRITES = {"lazy": 1, "start": 2, "close": 3}  # the n-th write outside SWMR

def pause():
    print("READY", flush=True)
    time.sleep(300)

write_all, place = w.Recorder._write_all, w.Recorder._place

def hooked_write_all(self, f):
    write_all(self, f)
    calls["n"] += 1
    if WRITES.get(instant) == calls["n"]:
        pause()  # written, not yet closed: HDF5's metadata is only partly on disk

def hooked_place(tmp, target, on_exists):
    if instant == "create":
        pause()
    return place(tmp, target, on_exists)

w.Recorder._write_all = hooked_write_all
w.Recorder._place = staticmethod(hooked_place)
big = np.random.default_rng(0).standard_normal((500, 800)).astype(np.float32)
rec = w.Recorder(path, {"x": 1}, seed=0, meta={"kind": "test"})
rec.declare_metrics("loss")
rec.log_weights("w0", 0, big)
rec.log_metrics(0, loss=1.0)
rec.flush()
rec.start_swmr()
for e in range(1, 4):
    rec.log_metrics(e, loss=1.0 / e)
    rec.flush()
    if instant == "epoch" and e == 2:
        pause()
rec.log_array("model/w0", big)
rec.close("done", final_loss=0.25)
"""

_READ = r"""
import json, sys
from bioplaus.errors import RunFileError
from bioplaus.record import open_run
out = {}
for p in sys.argv[1:]:
    try:
        with open_run(p) as run:
            out[p] = {"status": run.status, "note": run.note, "gone": run.writer_gone,
                      "steps": run.summary()["last_step"], "weights": run.layers_with_weights}
    except RunFileError as exc:
        out[p] = {"error": str(exc)}
print(json.dumps(out))
"""


def _kill_at(instants: list[str], d: Path) -> dict[str, Path]:
    """Start one writer per instant (in parallel), SIGKILL each once it is there."""
    procs = {}
    for instant in instants:
        path = d / f"{instant}.h5"
        procs[instant] = (path, subprocess.Popen([sys.executable, "-c", _WRITER, str(path), instant],
                                                 stdout=subprocess.PIPE, text=True, env=ENV, cwd=ROOT))
    for instant, (_, p) in procs.items():
        try:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "READY", f"{instant}: the writer ended before the instant"
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
        assert p.returncode == -signal.SIGKILL
    return {k: v[0] for k, v in procs.items()}


def _read(*paths: Path) -> tuple[dict[str, dict], float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _READ, *map(str, paths)], capture_output=True, text=True,
                          timeout=BOUND_S + 30, env=ENV, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), time.monotonic() - t0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import sys; from bioplaus.cli import main; sys.exit(main(sys.argv[1:]))",
                           *args], capture_output=True, text=True, timeout=BOUND_S + 30, env=ENV, cwd=ROOT)


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _kill_at(["create", "lazy", "start", "close", "epoch"], tmp_path_factory.mktemp("kills"))


def test_kill_at_start_and_close_leaves_a_readable_unfinished_file(killed: dict[str, Path]) -> None:
    # killed while placing the first version: no run file yet, only its temporary version
    assert not killed["create"].exists()
    assert list(killed["create"].parent.glob(".create.h5.*.tmp"))
    files = [killed[k] for k in ("lazy", "start", "close", "epoch")]
    got, took = _read(*files)
    assert took < BOUND_S + 30
    for path in files:
        r = got[str(path)]
        assert "error" not in r, r
        assert r["status"] == "running" and r["gone"] is True
        assert "killed" in r["note"] and str(r["note"]).count("\n") == 0
    # each version holds what was written before the instant: the lazy kill came before the
    # first flush was placed; start: step 0 and the weights; close, epoch: the epochs
    assert got[str(killed["lazy"])]["weights"] == []
    assert got[str(killed["start"])]["steps"] == 0 and got[str(killed["start"])]["weights"] == ["w0"]
    assert got[str(killed["close"])]["steps"] == 3
    assert got[str(killed["epoch"])]["steps"] == 2
    proc = _cli("inspect", str(killed["close"]))
    assert proc.returncode == 0, proc.stderr
    assert "status     running  (its writer (pid" in proc.stdout and "killed" in proc.stdout


def test_next_run_removes_the_temporary_versions_of_a_killed_writer(killed: dict[str, Path]) -> None:
    from bioplaus.record.writer import Recorder

    target = killed["create"]
    with Recorder(target, {}, seed=0) as rec:
        rec.log_metrics(0, loss=1.0)
    assert not list(target.parent.glob(".create.h5.*.tmp"))
    with open_run(target) as run:
        assert run.status == "done" and run.note is None and not run.writer_gone


_FLAG = r"""
import os, sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "a")  # outside SWMR: HDF5 sets the write-access flag
f.create_dataset("model/extra", data=np.arange(100000.0))
f.attrs["status"] = "running"
f["status"][()] = b"running"
f.flush()
os._exit(0)  # dies without closing, like a kill
"""


def test_file_flagged_open_outside_swmr_opens_read_only_unchanged(tmp_path: Path) -> None:
    from bioplaus.record.writer import Recorder

    path = tmp_path / "flagged.h5"
    with Recorder(path, {}, seed=0) as rec:
        rec.log_metrics(0, loss=0.5)
    subprocess.run([sys.executable, "-c", _FLAG, str(path)], check=True, timeout=60)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")  # what every reader met before
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with open_run(path) as run:
        assert run.status == "running" and run.writer_gone
        assert "outside SWMR" in run.note and "unchanged" in run.note
        assert run.metric("loss").tolist() == [0.5]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # the reader changed nothing
    # damaged as well (a hole in its metadata): one line, not a traceback
    data = bytearray(path.read_bytes())
    data[200:4000] = bytes(3800)
    path.write_bytes(bytes(data))
    with pytest.raises(RunFileError, match="cannot open run file|flagged|damaged|invalid|cannot read"):
        with open_run(path) as run:
            run.summary()


def test_truncated_file_of_a_killed_swmr_writer_is_refused_at_once(killed: dict[str, Path], tmp_path: Path) -> None:
    src = killed["epoch"]
    sb = read_superblock(src)
    assert sb is not None and sb.flags == 0x05  # open for write, in SWMR mode: the writer died
    data = src.read_bytes()
    cuts = []
    for percent in (10, 50, 90, 99):
        cuts.append(tmp_path / f"cut{percent}.h5")
        cuts[-1].write_bytes(data[: len(data) * percent // 100])
    got, took = _read(src, *cuts)
    assert took < BOUND_S + 30
    for cut in cuts:
        assert "truncated" in got[str(cut)]["error"] and str(cut) in got[str(cut)]["error"]
    # the whole file of the dead SWMR writer is read without SWMR (no retry loop), and says so
    assert got[str(src)]["status"] == "running" and "killed" in got[str(src)]["note"]
    proc = _cli("inspect", str(cuts[1]))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "truncated" in proc.stderr


def test_lookup3_matches_hdf5_checksums(tmp_path: Path) -> None:
    # golden values of the reference hashlittle (initval 0), and a superblock HDF5 wrote
    assert lookup3(b"") == 0xDEADBEEF
    assert lookup3(b"Four score and seven years ago") == 0x17770551
    path = tmp_path / "x.h5"
    with h5py.File(path, "w", libver=("v110", "latest")) as f:
        f["a"] = np.arange(3)
    raw = path.read_bytes()[:48]
    assert lookup3(raw[:44]) == int.from_bytes(raw[44:48], "little")
    sb = read_superblock(path)
    assert sb is not None and sb.flags == 0 and sb.eof == path.stat().st_size
