"""`export --overwrite` replaces only an output of the same kind, never the run being read,
another run file or a foreign file; unusable output names end in one line (issue 26, 4 and 7)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from bioplaus.cli import main
from bioplaus.config import NetworkConfig, SpikingConfig
from bioplaus.export.nir import export_nir
from bioplaus.nets import build_net


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained spiking run (NIR export), a simulated run (NWB export), one NIR graph."""
    d = tmp_path_factory.mktemp("exp")
    cfg = d / "e.toml"
    cfg.write_text(
        "name='e'\n[data]\ndataset='digits'\nlimit_train=64\nlimit_test=32\n[network]\nbackend='spiking'\n"
        "hidden=[8]\n[network.spiking]\nT=4\n[rule]\nname='backprop'\nlr=0.05\n[train]\nepochs=1\nreport=false\n"
    )
    trained = d / "trained.h5"
    assert main(["run", str(cfg), "--out", str(trained), "--quiet"]) == 0
    net = build_net(NetworkConfig(backend="spiking", hidden=[10], spiking=SpikingConfig(T=8)), (1, 8, 8), 10, seed=1)
    with torch.no_grad():
        net.layers[0].synapse.weight.mul_(4)
    graph = export_nir(net, d / "g.nir", extra_metadata={"dataset": "digits"})
    sim = d / "sim.h5"
    assert main(["simulate", str(graph), "--mode", "numpy", "--samples", "3", "--out", str(sim)]) == 0
    return {"trained": trained, "sim": sim, "graph": graph}


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bioplaus: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize("flag,src", [("--nir", "trained"), ("--nwb", "sim")])
def test_overwrite_never_replaces_the_input(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, src: str
) -> None:
    if flag == "--nwb":
        pytest.importorskip("pynwb")
    run = runs[src]
    before = _digest(run)
    hard = tmp_path / "hard.h5"
    os.link(run, hard)
    sym = tmp_path / "sym.h5"
    sym.symlink_to(run)
    dotted = Path(str(run.parent) + "/./" + run.name)
    for target in (run, hard, sym, dotted):
        _refused(["export", str(run), flag, str(target), "--overwrite"], capsys, str(target), "being exported")
        assert _digest(run) == before
    # the input reached through a hard link is refused as well
    _refused(["export", str(hard), flag, str(run), "--overwrite"], capsys, "being exported")
    assert _digest(run) == before


@pytest.mark.parametrize("flag,src", [("--nir", "trained"), ("--nwb", "sim")])
def test_overwrite_never_replaces_a_run_or_foreign_file(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, src: str
) -> None:
    if flag == "--nwb":
        pytest.importorskip("pynwb")
    other_run = tmp_path / "other.h5"
    other_run.write_bytes((runs["sim"] if src == "trained" else runs["trained"]).read_bytes())
    text = tmp_path / "notes.txt"
    text.write_text("my notes\n")
    import h5py

    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["node"] = [1, 2]  # HDF5, but neither a NIR nor an NWB file
    wrong_kind = tmp_path / "wrong"
    if flag == "--nwb":
        wrong_kind.write_bytes(runs["graph"].read_bytes())  # a NIR file is not an NWB file
    else:
        assert main(["export", str(runs["sim"]), "--nwb", str(tmp_path / "x.nwb")]) == 0 if _has_pynwb() else True
        src_nwb = tmp_path / "x.nwb"
        if not src_nwb.exists():
            pytest.skip("pynwb missing: no NWB file to refuse as a NIR target")
        wrong_kind.write_bytes(src_nwb.read_bytes())
    for target, why in ((other_run, "run file"), (text, "not a"), (plain, "not a"), (wrong_kind, "not a")):
        before = _digest(target)
        _refused(["export", str(runs[src]), flag, str(target), "--overwrite"], capsys, str(target), why)
        assert _digest(target) == before


def _has_pynwb() -> bool:
    try:
        import pynwb  # noqa: F401
    except ImportError:
        return False
    return True


def test_legitimate_overwrite_still_works(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.nir"
    assert main(["export", str(runs["trained"]), "--nir", str(out)]) == 0
    _refused(["export", str(runs["trained"]), "--nir", str(out)], capsys, "pass --overwrite")
    out.write_bytes(runs["graph"].read_bytes())  # another NIR graph, replaced with --overwrite
    assert main(["export", str(runs["trained"]), "--nir", str(out), "--overwrite"]) == 0
    assert _digest(out) != _digest(runs["graph"])
    if _has_pynwb():
        nwb = tmp_path / "s.nwb"
        assert main(["export", str(runs["sim"]), "--nwb", str(nwb)]) == 0
        _refused(["export", str(runs["sim"]), "--nwb", str(nwb)], capsys, "pass --overwrite")
        assert main(["export", str(runs["sim"]), "--nwb", str(nwb), "--overwrite"]) == 0


@pytest.mark.parametrize("flag,src", [("--nir", "trained"), ("--nwb", "sim")])
def test_unusable_output_names_one_line(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, src: str
) -> None:
    if flag == "--nwb":
        pytest.importorskip("pynwb")
    long = tmp_path / ("n" * 300 + ".out")
    _refused(["export", str(runs[src]), flag, str(long)], capsys, "too long")
    _refused(["export", str(runs[src]), flag, "/dev/null", "--overwrite"], capsys, "/dev/null")
    under_file = runs["graph"] / "x.out"
    _refused(["export", str(runs[src]), flag, str(under_file)], capsys, "Not a directory")
