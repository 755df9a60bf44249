"""Fixtures shared by the test modules."""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import settings as hypothesis_settings

# The property-based tests run the same examples on every machine and in CI (a random draw
# that finds a new failure would turn an unrelated CI run red); BIOPLAUS_FUZZ_RANDOM=1 (with
# BIOPLAUS_FUZZ_EXAMPLES=N) explores new examples.
hypothesis_settings.register_profile("bioplaus", derandomize=not os.environ.get("BIOPLAUS_FUZZ_RANDOM"))
hypothesis_settings.load_profile("bioplaus")

ROOT = Path(__file__).resolve().parents[1]

# A small supervised experiment on sklearn's digits: seconds on one core.
TINY: dict[str, Any] = {
    "name": "tiny",
    "data": {"dataset": "digits", "batch_size": 128, "limit_train": 512},
    "network": {"backend": "rate", "hidden": [16]},
    "rule": {"name": "backprop", "lr": 0.1},
    "train": {"epochs": 2, "report": False, "progress": False},
}


def with_tables(base: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """A copy of ``base`` with whole tables replaced or ``table__field`` set (``rule__lr=0.5``)."""
    d = copy.deepcopy(base)
    for key, value in sections.items():
        table, _, field = key.partition("__")
        if field:
            d.setdefault(table, {})[field] = value
        else:
            d[table] = value
    return d


def tiny_config(**sections: Any) -> dict[str, Any]:
    """`TINY` with ``sections`` applied as in `with_tables`."""
    return with_tables(TINY, **sections)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small tensors: a second thread only adds spin-waiting on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def isolated_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the machine's data dirs or cache unless it asks for them."""
    import neuro_data.datasets as ds_mod

    monkeypatch.delenv("BIOPLAUS_DATA", raising=False)
    monkeypatch.setattr(ds_mod, "SYSTEM_DATA_ROOT", tmp_path / "no-system-datasets")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ds_mod.clear_cache()


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``mount_tmpfs(size, read_only=False)``: a small file system, or skip where mounting is
    not permitted (needs root / CAP_SYS_ADMIN)."""
    mounted: list[Path] = []

    def make(size: str, read_only: bool = False) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        d = tmp_path / f"fs{len(mounted)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(d)
        if read_only:
            r = subprocess.run(["mount", "-o", "remount,ro", str(d)], capture_output=True, text=True)
            if r.returncode != 0:
                pytest.skip(f"cannot remount a tmpfs read-only here: {r.stderr.strip()}")
        return d

    yield make
    for d in reversed(mounted):
        subprocess.run(["umount", "-l", str(d)], capture_output=True)
