"""Run files and NIR files are untrusted: every hostile file gives one line and exit 2.

Each case starts from a valid file (a run written by `Recorder`, a NIR graph written by
`export_nir`), corrupts it with h5py, and checks `bioplaus inspect | report | export`,
`open_run` and `from_nir`. A case lists the commands that must fail; the others must
succeed (harmless oddities are read, not refused).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import bioplaus.experiments.continual  # noqa: F401 - registers the task_curves figure
from bioplaus.cli import main
from bioplaus.config import NetworkConfig, SpikingConfig, load_config
from bioplaus.errors import NIRFileError, RunFileError
from bioplaus.nets import build_net
from bioplaus.record import Recorder, open_run

nir = pytest.importorskip("nir")

from bioplaus.export.nir import export_nir, from_nir, to_nir  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ALL = frozenset({"open", "inspect", "report", "export"})


# ---------------------------------------------------------------------- a valid run


def _write_run(path: Path) -> None:
    cfg = load_config({
        "name": "hostile", "data": {"dataset": "digits"},
        "network": {"backend": "spiking", "hidden": [6], "spiking": {"T": 4}},
    })
    net = build_net(cfg.network, (1, 8, 8), 10, seed=cfg.seed)
    rng = np.random.default_rng(0)
    meta = {"input_shape": [1, 8, 8], "n_classes": 10}
    with Recorder(path, cfg.to_dict(), cfg.seed, meta=meta) as rec:
        for step in range(3):
            rec.log_metrics(step, train_loss=1.0 / (step + 1), train_acc=0.5 + 0.1 * step)
            rec.log_spikes("hidden", step, rng.random((4, 2, 6)) < 0.4, dt=1e-3)
            rec.log_trace("hidden.mem", step, rng.random((4, 2, 6)), unit="1", dt=1e-3,
                          every=1, dims="time,sample,neuron")
            rec.log_weights("hidden", step, rng.normal(size=(6, 64)))
        rec.log_array("/continual/acc_matrix", np.array([[90.0, np.nan], [80.0, 85.0]]), ACC=82.5)
        for k, v in net.state_dict().items():
            rec.log_array(f"/model/net/{k}", v.numpy())


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("base") / "base.h5"
    _write_run(path)
    return path


# ---------------------------------------------------------------------- corruptions

Edit = Callable[[h5py.File, Path], None]


def _replace(f: h5py.File, name: str, **kwargs: object) -> None:
    if name in f:
        del f[name]
    f.create_dataset(name, **kwargs)  # type: ignore[arg-type]


def _attr(name: str, value: object, obj: str = "/") -> Edit:
    def edit(f: h5py.File, _: Path) -> None:
        f[obj].attrs[name] = value
    return edit


def _del_attr(name: str, obj: str) -> Edit:
    def edit(f: h5py.File, _: Path) -> None:
        del f[obj].attrs[name]
    return edit


def _data(name: str, **kwargs: object) -> Edit:
    return lambda f, _: _replace(f, name, **kwargs)


def _delete(name: str) -> Edit:
    def edit(f: h5py.File, _: Path) -> None:
        del f[name]
    return edit


def _lean(keep: str, edit: Edit) -> Edit:
    """``edit`` after dropping the figure data other than ``keep`` (comma-separated
    groups): a report that must fail then does not draw the other figures first."""
    def lean(f: h5py.File, path: Path) -> None:
        for group in ("metrics", "spikes", "traces", "weights", "continual"):
            if group not in keep.split(","):
                del f[group]
        edit(f, path)
    return lean


def _series(name: str, values: np.ndarray) -> Edit:
    """A new dataset with its ``_step`` companion, without the other figures' data."""
    def edit(f: h5py.File, _: Path) -> None:
        f.create_dataset(name, data=values)
        f.create_dataset(name + "_step", data=np.arange(len(values)))
    return _lean(name.split("/")[0], edit)


def _external_storage(f: h5py.File, _: Path) -> None:
    _replace(f, "metrics/train_loss", shape=(3,), dtype="f8",
             external=[("/etc/passwd", 0, 24)])


def _external_link(f: h5py.File, path: Path) -> None:
    other = path.with_name("other.h5")
    with h5py.File(other, "w") as g:
        g["x"] = np.arange(3.0)
    del f["metrics/train_loss"]
    f["metrics/train_loss"] = h5py.ExternalLink(str(other), "/x")


def _soft_link(f: h5py.File, _: Path) -> None:
    del f["metrics/train_loss"]
    f["metrics/train_loss"] = h5py.SoftLink("/metrics/train_acc")


def _virtual(f: h5py.File, path: Path) -> None:
    other = path.with_name("source.h5")
    with h5py.File(other, "w") as g:
        g["w"] = np.zeros((3, 6, 64), dtype="f4")
    layout = h5py.VirtualLayout(shape=(3, 6, 64), dtype="f4")
    layout[...] = h5py.VirtualSource(str(other), "w", shape=(3, 6, 64))
    del f["weights/hidden"]
    f.create_virtual_dataset("weights/hidden", layout)


def _cycle(f: h5py.File, _: Path) -> None:
    f["metrics/again"] = f["metrics"]


def _deep_groups(f: h5py.File, _: Path) -> None:
    f.create_group("/".join(["extra"] * 100))


def _sparse_trace(f: h5py.File, _: Path) -> None:
    # 10 GB declared, nothing written.
    _replace(f, "traces/hidden.mem", shape=(2500, 1000, 1000), dtype="f4", chunks=(1, 100, 1000))


def _huge_chunk(f: h5py.File, _: Path) -> None:
    _replace(f, "model/extra", shape=(4,), maxshape=(None,), chunks=(1 << 29,), dtype="f4")


def _status_surrogates(f: h5py.File, _: Path) -> None:
    f.attrs.create("status", np.array(b"\xff\xfe", dtype=h5py.string_dtype("utf-8")))


def _status_dataset(f: h5py.File, _: Path) -> None:
    f.attrs["status"] = "running"
    _replace(f, "status", data=np.arange(3.0))


def _lengths(f: h5py.File, _: Path) -> None:
    _replace(f, "metrics/train_loss", data=np.arange(5.0))


def _name_not_utf8(f: h5py.File, _: Path) -> None:
    f.create_dataset(b"metrics/\xff\xfe", data=np.arange(3.0))


def _corrupt_chunk(f: h5py.File, path: Path) -> None:
    info = f["weights/hidden"].id.get_chunk_info(0)
    offset, size = info.byte_offset, info.size
    f.close()
    with open(path, "r+b") as fh:
        fh.seek(offset + 2)
        fh.write(bytes(size - 4))


def _running_row_ahead(f: h5py.File, _: Path) -> None:
    # A killed writer: status running, one dataset a flush ahead of its steps.
    f.attrs["status"] = "running"
    f["status"][()] = np.bytes_(b"running")
    _replace(f, "metrics/train_loss", data=np.array([1.0, 0.5, 0.3, 0.25]))


def _bad_weight_shape(f: h5py.File, _: Path) -> None:
    _replace(f, "model/net/layers.0.synapse.weight", data=np.zeros((5, 64), dtype="f4"))


def _model_nan(f: h5py.File, _: Path) -> None:
    w = f["model/net/layers.1.synapse.weight"][()]
    w[0, 0] = np.nan
    f["model/net/layers.1.synapse.weight"][...] = w


def _huge_hidden(f: h5py.File, _: Path) -> None:
    cfg = f.attrs["config"].replace('"hidden": [6]', '"hidden": [1000000000]')
    assert "1000000000" in cfg
    f.attrs["config"] = cfg


def _spike_index(f: h5py.File, _: Path) -> None:
    f["spikes/hidden"].attrs["n_neurons"] = 2  # events name neurons up to 5


def _not_hdf5(path: Path) -> None:
    path.write_text("step,loss\n0,1.0\n")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _nir_as_run(path: Path) -> None:
    export_nir(_nir_net(), path)


def _foreign(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(4)


@dataclass(frozen=True)
class Case:
    id: str
    edit: Edit | None = None  # h5py edit of the valid run
    file: Callable[[Path], None] | None = None  # or: rewrite the whole file
    fails: frozenset[str] = ALL  # commands that must fail
    match: str = ""  # a fragment of the one-line message
    figures: str = ""  # report passes: "-<file>" not written, "+<prefix>" a file written


RUN_CASES = [
    Case("valid", fails=frozenset()),
    Case("not_hdf5", file=_not_hdf5, match="not an HDF5 file"),
    Case("empty_file", file=_empty, match="cannot open run file"),
    Case("truncated", file=_truncated, match="cannot"),
    Case("nir_file_as_run", file=_nir_as_run, match="is not a bioplaus run file"),
    Case("foreign_hdf5", file=_foreign, match="is not a bioplaus run file"),
    Case("format_version_99", _attr("format_version", 99), match="format_version 99"),
    Case("metric_string_dtype", _data("metrics/train_loss", data=np.array([b"1.0", b"0.5", b"0.3"])),
         match="/metrics/train_loss: expected a 1-D numeric dataset, got dtype |S3"),
    Case("metric_missing_step", _delete("metrics/train_loss_step"), match="no /metrics/train_loss_step"),
    Case("metric_2d", _data("metrics/train_loss", data=np.zeros((3, 2))), match="shape (3, 2)"),
    Case("metric_step_float", _data("metrics/train_loss_step", data=np.arange(3.0)),
         match="/metrics/train_loss_step: expected a 1-D integer"),
    Case("metric_length_mismatch", _lengths, match="5 rows but /metrics/train_loss_step has 3"),
    Case("metric_external_storage", _external_storage, match="external storage in /etc/passwd"),
    Case("metric_external_link", _external_link, match="external link"),
    Case("metric_soft_link", _soft_link, match="soft link to /metrics/train_acc"),
    Case("weights_virtual_dataset", _virtual, match="virtual dataset"),
    Case("hard_link_cycle", _cycle, match="hard-link cycle"),
    Case("groups_100_deep", _deep_groups, match="nested deeper"),
    Case("object_name_not_utf8", _name_not_utf8, match="not valid UTF-8"),
    Case("trace_sparse_10GB", _sparse_trace, match="but stores only"),
    Case("chunk_2GiB", _huge_chunk, match="chunks of 2.0 GiB"),
    Case("trace_dt_text", _attr("dt", "fast", "traces/hidden.mem"), match="attribute dt='fast'"),
    Case("spikes_n_neurons_1e12", _attr("n_neurons", 10**12, "spikes/hidden"),
         match="attribute n_neurons=1000000000000"),
    Case("spikes_no_dt", _del_attr("dt", "spikes/hidden"), match="/spikes/hidden: no attribute dt"),
    Case("spikes_float_column", _data("spikes/hidden/t", data=np.zeros(3)), match="/spikes/hidden/t"),
    Case("spikes_member_is_dataset", _data("spikes/stray", data=np.arange(3)), match="/spikes/stray"),
    # The kind's own array: the generic reader accepts it, its figure skips what it cannot draw.
    Case("acc_matrix_strings", _data("continual/acc_matrix", data=np.array([b"a", b"b"])),
         fails=frozenset(), figures="-acc_matrix.png"),
    Case("config_json_100000_deep", _attr("config", "[" * 100_000 + "]" * 100_000),
         match="JSON nested too deeply"),
    Case("config_json_100_deep", _attr("config", '{"a": ' * 100 + "1" + "}" * 100),
         match="nested deeper than 64"),
    Case("config_5000_digit_number", _attr("config", '{"seed": 1' + "0" * 5000 + "}"),
         match="JSON not accepted"),
    Case("config_not_an_object", _attr("config", "[1, 2]"), match="expected a JSON object"),
    Case("meta_attr_deep_json", _attr("classes", "[" * 5000 + "]" * 5000), match="attribute 'classes'"),
    Case("status_non_utf8_bytes", _attr("status", np.bytes_(b"\xff\xfe")), match="invalid status"),
    Case("status_non_utf8_text", _status_surrogates, match="invalid status"),
    Case("status_unknown", _attr("status", "exploded"), match="invalid status 'exploded'"),
    Case("status_dataset_not_text", _status_dataset, match="/status: expected a scalar string"),
    Case("seed_text", _attr("seed", "abc"), match="attribute seed='abc'"),
    # Problems found only when the data is read: inspect and export do not read it.
    Case("weights_corrupt_chunk", _lean("weights", _corrupt_chunk), fails=frozenset({"report"}),
         match="/weights/hidden: cannot be read"),
    Case("spikes_index_beyond_n_neurons", _lean("spikes", _spike_index), fails=frozenset({"report"}),
         match="/spikes/hidden/neuron: values"),
    Case("spikes_n_neurons_2e9", _lean("spikes", _attr("n_neurons", 2**31, "spikes/hidden")),
         fails=frozenset({"report"}), match="more than the 1.0 GiB cap"),
    # Layouts the reader accepts but a figure cannot draw: the figure skips them (or, for a
    # name too long for a file, shortens the file name) and the report exits 0.
    Case("trace_scalar_rows", _series("traces/x.mem", np.arange(3.0)), fails=frozenset(),
         figures="-membrane_x.mem.png"),
    Case("task_metric_empty", _series("metrics/task0/test_acc", np.zeros(0)), fails=frozenset(),
         figures="-task_curves.png"),
    Case("metric_name_5000_digits", _series("metrics/layer" + "1" * 5000 + "/loss", np.arange(3.0)),
         fails=frozenset(), figures="-layer_metrics.png"),
    Case("population_name_300_chars", _lean("spikes", lambda f, _: f.move("spikes/hidden", "spikes/" + "p" * 300)),
         fails=frozenset(), figures="+spikes_ppp"),
    # The saved model: only export reads it against the config.
    Case("model_wrong_shape", _bad_weight_shape, fails=frozenset({"export"}),
         match="/model/net/layers.0.synapse.weight: shape (5, 64)"),
    Case("model_missing_key", _delete("model/net/layers.1.synapse.weight"),
         fails=frozenset({"export"}), match="/model/net: missing layers.1.synapse.weight"),
    Case("model_nan", _model_nan, fails=frozenset({"export"}), match="holds NaN or inf"),
    Case("config_hidden_1e9", _huge_hidden, fails=frozenset({"export"}),
         match="config builds (1000000000, 64)"),
    Case("input_shape_huge", _attr("input_shape", "[1, 100000, 100000]"),
         fails=frozenset({"export"}), match="config builds (6, 10000000000)"),
    # Harmless oddities: read as they are.
    Case("running_row_ahead", _lean("metrics", _running_row_ahead), fails=frozenset()),
    Case("meta_text_non_utf8", _attr("created", np.bytes_(b"\xff\xfe")), fails=frozenset()),
    Case("metric_all_nan", _lean("metrics", _data("metrics/train_acc", data=np.full(3, np.nan))), fails=frozenset()),
    Case("unknown_group", _data("extra/notes", data=np.arange(3)), fails=frozenset()),
]


# Cases on which `bioplaus report` must pass (the others that it passes are like "valid").
REPORT_CONTROLS = {"valid", "running_row_ahead", "metric_all_nan"}


def _build(case: Case, base: Path, tmp_path: Path) -> Path:
    path = tmp_path / "run.h5"
    shutil.copy(base, path)
    if case.file is not None:
        case.file(path)
    if case.edit is not None:
        f = h5py.File(path, "a")
        try:
            case.edit(f, path)
        finally:
            if f.id.valid:
                f.close()
    return path


def _one_line(capsys: pytest.CaptureFixture[str], path: Path, match: str) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("bioplaus: error: ") and str(path) in lines[0], err
    assert match in lines[0], err
    return lines[0]


@pytest.mark.parametrize("case", RUN_CASES, ids=[c.id for c in RUN_CASES])
def test_hostile_run_file(case: Case, base_run: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    path = _build(case, base_run, tmp_path)
    commands = {
        "inspect": ["inspect", str(path)],
        "report": ["report", str(path), "--out", str(tmp_path / "figures")],
        "export": ["export", str(path), "--out", str(tmp_path / "net.nir")],
    }
    if "report" not in case.fails and case.id not in REPORT_CONTROLS and not case.figures:
        # Figures take seconds: a report that must pass runs for the controls only.
        del commands["report"]
    for name, argv in commands.items():
        code = main(argv)
        if name in case.fails:
            assert code == 2, f"{name} returned {code}"
            _one_line(capsys, path, case.match)
        else:
            assert code == 0, f"{name}: {capsys.readouterr().err}"
            capsys.readouterr()
    if case.figures:
        written = [p.name for p in (tmp_path / "figures").iterdir()]
        assert all(len(n) < 255 for n in written), written
        for want in case.figures.split(","):
            if want.startswith("-"):
                assert want[1:] not in written, written
            else:
                assert any(n.startswith(want[1:]) for n in written), written
    if "open" in case.fails:
        with pytest.raises(RunFileError) as info:
            open_run(path)
        assert str(path) in str(info.value) and case.match in str(info.value)
    else:
        with open_run(path) as run:
            run.summary()
            assert run.status in ("running", "done")


@pytest.mark.parametrize("case_id", ["metric_external_storage", "config_json_100000_deep"])
def test_hostile_run_file_in_a_subprocess(case_id: str, base_run: Path, tmp_path: Path) -> None:
    case = next(c for c in RUN_CASES if c.id == case_id)
    path = _build(case, base_run, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "bioplaus.cli", "inspect", str(path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and case.match in lines[0], proc.stderr


def test_external_storage_is_not_read(base_run: Path, tmp_path: Path) -> None:
    """The refusal comes before any read: /etc/passwd never reaches the caller."""
    path = _build(next(c for c in RUN_CASES if c.id == "metric_external_storage"), base_run, tmp_path)
    with pytest.raises(RunFileError, match="refused"):
        with open_run(path) as run:
            run.metric("train_loss")


def test_read_cap(base_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bioplaus.record import reader

    monkeypatch.setattr(reader, "MAX_READ_BYTES", 1000)
    with open_run(base_run) as run:
        assert len(run.metric("train_loss")) == 3
        with pytest.raises(RunFileError, match=r"/weights/hidden: would load 4\.5 KiB at once"):
            run.weights("hidden")


# ---------------------------------------------------------------------- NIR files


def _nir_net() -> torch.nn.Module:
    cfg = NetworkConfig(backend="spiking", hidden=[5], bias=True, spiking=SpikingConfig(T=4))
    return build_net(cfg, (1, 3, 3), 3, seed=1)


GraphEdit = Callable[[object], None]
FileEdit = Callable[[h5py.File, Path], None]


@dataclass(frozen=True)
class NIRCase:
    id: str
    graph: GraphEdit | None = None  # edit of the nir.NIRGraph before writing
    edit: FileEdit | None = None  # h5py edit of the written file
    file: Callable[[Path], None] | None = None  # or: another file altogether
    match: str = ""


def _set(nodes: str, attrs: str, fn: Callable[[np.ndarray], np.ndarray]) -> GraphEdit:
    """Apply ``fn`` to each of the (comma-separated) ``attrs`` of each of ``nodes``."""
    def edit(g: object) -> None:
        for node in nodes.split(","):
            n = g.nodes[node]  # type: ignore[attr-defined]
            for attr in attrs.split(","):
                setattr(n, attr, fn(np.asarray(getattr(n, attr))))
    return edit


def _nir_external(f: h5py.File, _: Path) -> None:
    w = f["node/nodes/syn0/weight"]
    shape, dtype = w.shape, w.dtype
    del f["node/nodes/syn0/weight"]
    f.create_dataset("node/nodes/syn0/weight", shape=shape, dtype=dtype,
                     external=[("/etc/passwd", 0, int(np.prod(shape)) * dtype.itemsize)])


def _nir_link(f: h5py.File, path: Path) -> None:
    other = path.with_name("weights.h5")
    with h5py.File(other, "w") as g:
        g["w"] = np.zeros((5, 9), dtype="f4")
    del f["node/nodes/syn0/weight"]
    f["node/nodes/syn0/weight"] = h5py.ExternalLink(str(other), "/w")


def _nir_sparse(f: h5py.File, _: Path) -> None:
    del f["node/nodes/syn0/weight"]
    f.create_dataset("node/nodes/syn0/weight", shape=(100_000, 100_000), dtype="f4",
                     chunks=(100, 1000))


def _nir_deep(f: h5py.File, _: Path) -> None:
    f.create_group("node/metadata/" + "/".join(["x"] * 200))


def _nir_no_edges(f: h5py.File, _: Path) -> None:
    del f["node/edges"]


def _nir_drop_node(f: h5py.File, _: Path) -> None:
    del f["node/nodes/lif0"]


def _nir_node_type(f: h5py.File, _: Path) -> None:
    del f["node/nodes/lif0/type"]
    f["node/nodes/lif0/type"] = np.bytes_(b"Quantum")


def _edges(*extra: tuple[str, str], drop: tuple[str, str] | None = None) -> GraphEdit:
    def edit(g: object) -> None:
        edges = [e for e in g.edges if tuple(e) != drop]  # type: ignore[attr-defined]
        g.edges = edges + list(extra)  # type: ignore[attr-defined]
    return edit


def _swap_neuron(g: object) -> None:
    old = g.nodes["lif0"]  # type: ignore[attr-defined]
    g.nodes["lif0"] = nir.CubaLIF(  # type: ignore[attr-defined]
        tau_mem=old.tau, tau_syn=old.tau, r=old.r, v_leak=old.v_leak,
        v_threshold=old.v_threshold, v_reset=old.v_reset)


def _mix_synapses(g: object) -> None:
    g.nodes["syn1"] = nir.Linear(weight=g.nodes["syn1"].weight)  # type: ignore[attr-defined]


def _meta(key: str, value: object) -> GraphEdit:
    def edit(g: object) -> None:
        g.metadata[key] = value  # type: ignore[attr-defined]
    return edit


def _run_file_as_nir(path: Path) -> None:
    with Recorder(path, {"name": "r"}, seed=0) as rec:
        rec.log_metrics(0, loss=1.0)


NIR_CASES = [
    NIRCase("not_hdf5", file=lambda p: p.write_text("nir"), match="not a NIR file"),
    NIRCase("run_file_as_nir", file=_run_file_as_nir, match="no /node group"),
    NIRCase("tau_zero", _set("lif0", "tau", np.zeros_like), match="tau must exceed dt"),
    NIRCase("tau_negative", _set("li1", "tau", lambda a: -a), match="node 'li1': tau must exceed dt"),
    NIRCase("tau_below_dt", _set("lif0", "tau", lambda a: np.full_like(a, 5e-4)), match="tau must exceed dt"),
    NIRCase("tau_nan", _set("lif0", "tau", lambda a: np.full_like(a, np.nan)), match="tau holds NaN"),
    NIRCase("tau_not_uniform", _set("lif0", "tau,r", lambda a: a * np.linspace(1, 2, a.size)),
            match="tau differs between neurons"),
    NIRCase("r_negative", _set("lif0", "r", lambda a: -a), match="r must be > 0"),
    NIRCase("params_wrong_shape", _set("lif0", "tau,r,v_leak,v_threshold,v_reset", lambda a: a[:2]),
            match="'lif0': tau has shape (2,), expected (5,)"),
    NIRCase("threshold_inf", _set("lif0", "v_threshold", lambda a: a + np.inf), match="v_threshold holds NaN or inf"),
    NIRCase("threshold_negative", _set("lif0", "v_threshold", lambda a: -a),
            match="threshold: must be > 0"),
    NIRCase("threshold_not_uniform", _set("lif0", "v_threshold", lambda a: a * np.linspace(1, 2, a.size)),
            match="v_threshold differs"),
    NIRCase("weight_nan", _set("syn0", "weight", lambda a: a * np.nan), match="'syn0': weight holds NaN"),
    NIRCase("weight_wrong_shape", _set("syn1", "weight", lambda a: a[:, :2]), match="'syn1': weight has shape (3, 2)"),
    NIRCase("bias_wrong_shape", _set("syn0", "bias", lambda a: a[:1]), match="bias has shape (1,)"),
    NIRCase("edge_to_unknown_node", _edges(("li1", "ghost")), match="unknown node 'ghost'"),
    NIRCase("cycle", _edges(("lif0", "syn0")), match="cycle"),
    NIRCase("branch", _edges(("input", "syn1")), match="branches"),
    NIRCase("disconnected", _edges(drop=("lif0", "syn1")), match="not at the output"),
    NIRCase("no_edges_in_graph", lambda g: setattr(g, "edges", []), match="no edges"),
    NIRCase("unsupported_neuron", _swap_neuron, match="'lif0': unsupported node CubaLIF"),
    NIRCase("mixed_linear_affine", _mix_synapses, match="mixes Linear and Affine"),
    NIRCase("meta_T_negative", _meta("T", -5), match="metadata T=-5"),
    NIRCase("meta_dt_nan", _meta("dt", float("nan")), match="metadata dt=nan"),
    NIRCase("meta_reset_unknown", _meta("reset", "explode"), match="metadata.reset"),
    NIRCase("missing_edges_dataset", edit=_nir_no_edges, match="not a readable NIR graph"),
    NIRCase("missing_node", edit=_nir_drop_node, match="unknown node 'lif0'"),
    NIRCase("unknown_node_type", edit=_nir_node_type, match="not a readable NIR graph"),
    NIRCase("external_storage", edit=_nir_external, match="external storage in /etc/passwd"),
    NIRCase("external_link", edit=_nir_link, match="external link"),
    NIRCase("sparse_40GB_weight", edit=_nir_sparse, match="but stores only"),
    NIRCase("groups_200_deep", edit=_nir_deep, match="nested deeper"),
]


@pytest.mark.parametrize("case", NIR_CASES, ids=[c.id for c in NIR_CASES])
def test_hostile_nir_file(case: NIRCase, tmp_path: Path) -> None:
    path = tmp_path / "net.nir"
    if case.file is not None:
        case.file(path)
    else:
        graph = to_nir(_nir_net())
        if case.graph is not None:
            case.graph(graph)
        nir.write(path, graph)
        if case.edit is not None:
            with h5py.File(path, "a") as f:
                case.edit(f, path)
    with pytest.raises(NIRFileError) as info:
        from_nir(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and case.match in message, message


def test_valid_nir_file_still_reads(tmp_path: Path) -> None:
    net = _nir_net()  # (same spikes after the round trip: tests/export/test_nir.py)
    back = from_nir(export_nir(net, tmp_path / "ok.nir"))
    for a, b in zip(net.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)


def test_hostile_graph_in_memory() -> None:
    graph = to_nir(_nir_net())
    graph.edges.append(("li1", "syn0"))
    with pytest.raises(NIRFileError, match="NIR graph: .*branches|cycle"):
        from_nir(graph)
