"""NWB export on a full disk ends in one line, exit 2, nothing at the target, the run untouched
(issue 26, class 5). Before the fix a disk filling up during HDF5's last metadata writes made
the export crash (exit 139), and any failed write left a partial file at the target.

A full disk without root: the child process's file size limit (RLIMIT_FSIZE, SIGXFSZ ignored,
so a write past it fails with EFBIG). With root also a small tmpfs, both when the up-front
estimate already says the file cannot fit and when the space check is bypassed so that the
write itself meets ENOSPC.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

pytest.importorskip("pynwb")

from bioplaus.record.writer import Recorder  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

_CHILD = r"""
import resource, signal, sys
limit, bypass = int(sys.argv[1]), sys.argv[2] == "1"
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
if bypass:  # as if the file system reported no size: the write itself meets the full disk
    import bioplaus.record.writer as w
    w._free_bytes = lambda path: None
from bioplaus.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def spike_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with 200 neurons' spikes and a membrane trace: an NWB file of about 1.4 MB."""
    path = tmp_path_factory.mktemp("nwbfull") / "spk.h5"
    rng = np.random.default_rng(0)
    with Recorder(path, {"x": 1}, seed=0, meta={"kind": "simulate"}) as rec:
        for step in range(4):
            rec.log_spikes("layer0", step, rng.random((20, 16, 200)) < 0.1, dt=1e-3)
            rec.log_trace("layer0.mem", step, rng.standard_normal((20, 16, 200)), unit="V", dt=1e-3,
                          every=1, dims="time,sample,neuron")
    return path


def _export(run: Path, out: Path, limit: int = 0, bypass: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _CHILD, str(limit), "1" if bypass else "0",
                           "export", str(run), "--nwb", str(out)],
                          capture_output=True, text=True, timeout=120, env=ENV, cwd=ROOT)


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _assert_refused(proc: subprocess.CompletedProcess[str], out: Path, *words: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bioplaus: error: {out}:"), proc.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []


def test_file_size_limit(spike_run: Path, tmp_path: Path) -> None:
    before = _digest(spike_run)
    out = tmp_path / "o.nwb"
    _assert_refused(_export(spike_run, out, limit=300_000), out, "cannot write the NWB file", "nothing was written")
    assert _digest(spike_run) == before


def test_full_tmpfs(spike_run: Path, mount_tmpfs: Callable[..., Path]) -> None:
    before = _digest(spike_run)
    fs = mount_tmpfs("1012k")  # the NWB file needs ~1.4 MB: before the fix, exit 139
    out = fs / "o.nwb"
    _assert_refused(_export(spike_run, out), out, "disk full", "needs about")
    _assert_refused(_export(spike_run, out, bypass=True), out, "disk full", "nothing was written")
    assert _digest(spike_run) == before
