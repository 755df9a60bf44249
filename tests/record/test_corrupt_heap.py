"""A run file whose global heap HDF5 would parse forever (found by the compare fuzz test: one
flipped bit set a free-space size to 0, and `inspect`, `compare` and `open_run` then spun in
HDF5's heap reader, deaf to SIGTERM) is refused in one line before HDF5 sees it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py

from bioplaus.record._superblock import GCOL, looping_global_heap


def _zero_free_space(path: Path) -> int:
    """Set the size of the free-space object (index 0) of the file's first global heap
    collection to 0; its offset."""
    raw = bytearray(path.read_bytes())
    off = raw.find(GCOL)
    assert off >= 0 and raw[off + 4] == 1
    end = off + int.from_bytes(raw[off + 8 : off + 16], "little")
    p = off + 16
    while p + 16 <= end:
        idx = int.from_bytes(raw[p : p + 2], "little")
        size = int.from_bytes(raw[p + 8 : p + 16], "little")
        if idx == 0:
            raw[p + 8 : p + 16] = bytes(8)
            path.write_bytes(bytes(raw))
            return off
        p += 16 + ((size + 7) & ~7)
    raise AssertionError("no free-space object")


def _file(path: Path) -> Path:
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["format"] = "bioplaus.run"  # a variable-length string: stored in a global heap
        f.attrs["config"] = '{"name": "x"}'
    return path


def test_a_sound_file_has_no_looping_heap(tmp_path: Path) -> None:
    assert looping_global_heap(_file(tmp_path / "ok.h5")) is None


def test_a_heap_hdf5_would_read_forever_is_refused_in_one_line(tmp_path: Path) -> None:
    path = _file(tmp_path / "bad.h5")
    off = _zero_free_space(path)
    assert looping_global_heap(path) == off
    # in a child process, killed if it spins: before the check it never returned
    code = ("import sys\nfrom bioplaus.cli import main\nsys.exit(main())")
    proc = subprocess.run([sys.executable, "-c", code, "inspect", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "corrupt HDF5 file" in lines[0] and f"global heap at byte {off}" in lines[0]


def test_a_nir_file_with_such_a_heap_is_refused(tmp_path: Path) -> None:
    import pytest

    from bioplaus.errors import NIRFileError
    from bioplaus.export.nir import read_nir

    path = _file(tmp_path / "g.nir")
    _zero_free_space(path)
    with pytest.raises(NIRFileError, match="corrupt HDF5"):
        read_nir(path)
