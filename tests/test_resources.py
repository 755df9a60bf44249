"""bioplaus.resources: the one "would need X, have Y" check of sizes and workers (issue 26)."""

from __future__ import annotations

import pytest

import bioplaus.resources as res
from bioplaus.errors import ConfigError


def test_size_text() -> None:
    assert res.size_text(512) == "512 B"
    assert res.size_text(1536) == "1.5 KiB"
    assert res.size_text(3 << 30) == "3.0 GiB"
    assert res.size_text(7 << 50) == "7.0 PiB"
    assert res.size_text(2**70) == f"{2**70 / 2**50:.1f} PiB"


def test_check_bytes_names_the_field_and_both_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(res, "physical_memory", lambda: 4 << 30)
    res.check_bytes(4 << 30, "a.b", "x")  # exactly the memory: accepted
    with pytest.raises(ConfigError, match=r"^a\.b: 3 things would need about 5\.0 GiB, more than this "
                                          r"machine's memory \(4\.0 GiB\)$"):
        res.check_bytes(5 << 30, "a.b", "3 things")
    with pytest.raises(ConfigError, match=r"more than half of this machine's memory \(4\.0 GiB\)"):
        res.check_bytes(3 << 30, "a.b", "x", share=0.5)
    monkeypatch.setattr(res, "physical_memory", lambda: 0)  # unknown memory: nothing refused
    res.check_bytes(1 << 60, "a.b", "x")


def test_check_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(res, "cpu_count", lambda: 3)
    monkeypatch.setattr(res, "physical_memory", lambda: 10 << 30)
    res.check_workers(12, "--workers", 100 << 20)
    with pytest.raises(ConfigError, match=r"^--workers: 13 worker processes on 3 CPUs \(at most 4 per CPU, 12\)$"):
        res.check_workers(13, "--workers", 100 << 20)
    with pytest.raises(ConfigError, match=r"^--workers: 11 worker processes of ~1\.0 GiB each would need about 11\.0 GiB"):
        res.check_workers(11, "--workers", 1 << 30)
