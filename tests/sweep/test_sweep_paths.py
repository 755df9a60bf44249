"""Sweep and compare output paths as untrusted state: a file in the way, /proc, /sys, a lock or
index of the wrong type, an unwritable target: one line naming the path, exit 2, nothing
lost (issue 26, class 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bioplaus.cli import main
from bioplaus.errors import OutputError
from bioplaus.record import Recorder
from bioplaus.sweep.index import write_index

TOML = 'name = "tiny"\n[data]\ndataset = "digits"\nlimit_train = 64\n[rule]\nname = "backprop"\n[train]\nepochs = 1\n'


def _one_line(argv: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bioplaus: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def _sweep_argv(tmp_path: Path, out: str | Path) -> list[str]:
    toml = tmp_path / "tiny.toml"
    toml.write_text(TOML)
    return ["sweep", str(toml), "--grid", "rule.lr=0.1", "--out", str(out), "--workers", "1"]


def test_sweep_out_under_a_regular_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "afile"
    f.write_text("keep\n")
    _one_line(_sweep_argv(tmp_path, f / "sub"), capsys, str(f / "sub"))
    _one_line(_sweep_argv(tmp_path, f), capsys, str(f), "not a directory")
    assert f.read_text() == "keep\n"


@pytest.mark.parametrize("where", ["/proc/bioplaus_sweep_test/x", "/sys/bioplaus_sweep_test"])
def test_sweep_out_under_proc_or_sys(tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    top = "/" + where.split("/")[1]
    if not Path(top).is_dir():
        pytest.skip(f"{top} is not mounted here")
    try:
        Path(where).mkdir(parents=True)
    except OSError:
        pass  # as described: the OS refuses a directory there
    else:
        Path(where).rmdir()
        pytest.skip(f"{where} can be created on this machine")
    _one_line(_sweep_argv(tmp_path, where), capsys, where, "cannot create the sweep directory")


@pytest.mark.parametrize("name", [".sweep.lock", "index.csv", "index.h5"])
def test_sweep_lock_or_index_not_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    out = tmp_path / "sw"
    (out / name).mkdir(parents=True)
    (out / name / "keep.txt").write_text("keep\n")
    _one_line(_sweep_argv(tmp_path, out), capsys, str(out / name), "not a regular file")
    assert (out / name / "keep.txt").read_text() == "keep\n"
    assert not list(out.glob("tiny*.h5"))  # no run started


def test_write_index_failure_is_one_error_and_keeps_the_old_index(tmp_path: Path) -> None:
    write_index(tmp_path, [{"file": "a.h5", "status": "done"}], [])
    old_h5 = (tmp_path / "index.h5").read_bytes()
    (tmp_path / "index.csv").unlink()
    (tmp_path / "index.csv").mkdir()  # os.replace cannot put a file there
    with pytest.raises(OutputError, match="index.csv"):
        write_index(tmp_path, [{"file": "b.h5", "status": "done"}], [])
    assert (tmp_path / "index.csv").is_dir() and (tmp_path / "index.h5").read_bytes() == old_h5
    assert not list(tmp_path.glob(".index.*.tmp"))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    d = tmp_path / "runs"
    d.mkdir()
    declared = json.dumps([{"name": "test_acc", "direction": "max", "headline": True}])
    for seed, acc in ((0, 0.5), (1, 0.7)):
        cfg = {"name": "fake", "seed": seed, "rule": {"name": "backprop", "lr": 0.1}, "train": {"epochs": 1}}
        rec = Recorder(d / f"fake__seed={seed}.h5", cfg, seed=seed, meta={"kind": "supervised", "declared_metrics": declared})
        rec.close("done", final_test_acc=acc, final_test_loss=1 - acc)
    return d


def test_compare_out_an_existing_file(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "report.txt"
    f.write_text("keep\n")
    _one_line(["compare", str(runs), "--out", str(f)], capsys, str(f), "not a directory")
    assert f.read_text() == "keep\n"
    _one_line(["compare", str(runs), "--out", str(f / "sub")], capsys, str(f / "sub"))


def test_compare_out_dev_full(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    _one_line(["compare", str(runs), "--out", "/dev/full"], capsys, "/dev/full")


def test_compare_table_path_a_directory(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "cmp"
    (dest / "compare_test_acc.csv").mkdir(parents=True)
    _one_line(["compare", str(runs), "--out", str(dest)], capsys, "compare_test_acc.csv", "not a regular file")
    assert (dest / "compare_test_acc.csv").is_dir()
    assert main(["compare", str(runs), "--out", str(tmp_path / "ok")]) == 0  # a usable --out still works
    assert (tmp_path / "ok" / "compare_test_acc.csv").is_file()
