"""Bad configs and ``--set`` strings: one line naming the field, exit 2, nothing created.

Every example of issue 8 (tracebacks, a segfault, runaway runs, silently accepted values)
is a row of `CASES`; the CNN builder's output sizes are checked for several kernels.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import pytest
import torch

from bioplaus.cli import main
from bioplaus.config import MAX_DEPTH, NetworkConfig, check_range, load_config
from bioplaus.errors import ConfigError
from bioplaus.nets import build_net, conv_out, plan_net

BASE = """
name = "base"
seed = 1
[data]
dataset = "digits"
batch_size = 32
limit_train = 64
limit_test = 32
[network]
backend = "rate"
hidden = [8]
[rule]
name = "backprop"
[train]
epochs = 1
max_steps = 1
report = false
progress = false
[[record.probes]]
layers = ["all"]
every = 1
samples = 2
"""

CNN = BASE.replace('hidden = [8]', 'arch = "cnn"\nchannels = [4]\nhidden = [8]')
HLOP = BASE + '\n[[plugins]]\nname = "hlop"\n'
CONTINUAL = BASE + '\n[continual]\nstream = "permuted"\nn_tasks = 2\n'
SPIKING = BASE.replace('backend = "rate"', 'backend = "spiking"')

NESTED_TABLES = "x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n"
NESTED_ARRAYS = "[rule]\nx = " + "[" * 5000 + "]" * 5000 + "\n"
DOTTED = "a" + ".a" * 100_000 + " = 1\n"

# (base file, --set strings or None, extra file text, substring of the one error line)
CASES = [
    (BASE, ["network.hidden.x=1"], "", "network.hidden is a list; 'x' is not an index"),
    (BASE, ["network.hidden.5=3"], "", "network.hidden has 1 entry, no entry 5"),
    (BASE, ["network.hidden.x.y=3"], "", "network.hidden is a list; 'x' is not an index"),
    (BASE, ["network.hidden.-1=3"], "", "'-1' is not an index"),
    (BASE, ["seed.x=1"], "", "seed = 1 is not a table or a list"),
    (BASE, ["train.max_steps.x.y=1"], "", "train.max_steps = 1 is not a table or a list"),
    (BASE, ["a..b=1"], "", "empty key segment"),
    (BASE, [".a=1"], "", "empty key segment"),
    (BASE, ["a.=1"], "", "empty key segment"),
    (BASE, ["=1"], "", "no key before '='"),
    (BASE, ["rule.lr"], "", "expected key=value"),
    (BASE, ["x=" + "[" * 5000 + "]" * 5000], "", "nested more than"),
    (BASE, ["x=" + "{a=" * 5000 + "1" + "}" * 5000], "", "nested more than"),
    (BASE, ["a" + ".a" * 100 + "=1"], "", "more than 32 key segments"),
    (BASE, ["seed=-1"], "", "seed: must be in [0, 4294967295], got -1"),
    (BASE, ["seed=4294967296"], "", "seed: must be in [0, 4294967295]"),
    (BASE, ["seed=99999999999999999999999"], "", "seed: integer out of the 64-bit range"),
    (BASE, ["seed=true"], "", "seed: expected an integer, got True"),
    (BASE, ["train.log_every=0"], "", "train.log_every: must be positive, got 0"),
    (BASE, ["train.eval_every=0"], "", "train.eval_every: must be positive, got 0"),
    (BASE, ["train.threads=100000"], "", "train.threads: must be in [0, 256]"),
    (BASE, ["train.epochs=-1"], "", "train.epochs: must be >= 0"),
    (BASE, ["record.probes.0.layers=[99]"], "", "record.probes[0].layers: layer 99 does not exist"),
    (BASE, ['record.probes.0.layers=["nope"]'], "", "record.probes[0].layers: 'nope' is not a layer"),
    (BASE, ["record.probes.0.layers=[true]"], "", "record.probes[0].layers: True is not a layer"),
    (BASE, ["record.probes.0.every=0"], "", "record.probes[0].every: must be positive"),
    (BASE, ["record.probes.0.samples=-2"], "", "record.probes[0].samples: must be positive"),
    (BASE, ["record.weights_every=-1"], "", "record.weights_every: must be >= 0"),
    (BASE, ["rule.momentum=-1"], "", "rule.momentum: must be in [0, 1), got -1.0"),
    (BASE, ["rule.momentum=1"], "", "rule.momentum: must be in [0, 1), got 1.0"),
    (BASE, ["rule.weight_decay=-0.1"], "", "rule.weight_decay: must be >= 0"),
    (BASE, ["rule.lr=0"], "", "rule.lr: must be positive"),
    (BASE, ["network.hidden=[1000000000]"], "", "network: the network would have"),
    (BASE, ["network.hidden=[100000, 100000]"], "", "network: the network would have"),
    (BASE, ["network.hidden=[0]"], "", "network.hidden: widths must be positive, got 0 at index 0"),
    (BASE, ["network.hidden=[" + ", ".join(["1"] * 1001) + "]"], "", "network.hidden: at most 1000 entries"),
    (CNN, ["network.channels=[0]"], "", "network.channels: widths must be positive"),
    (CNN, ["network.kernel=0"], "", "network.kernel: must be positive"),
    (CNN, ["network.pool=0"], "", "network.pool: must be positive"),
    (CNN, ["network.kernel=100000"], "", "network: the network would have"),
    (SPIKING, ["network.spiking.T=0"], "", "network.spiking.T: must be in [1, 1000000]"),
    (SPIKING, ["network.spiking.T=10000000"], "", "network.spiking.T: must be in [1, 1000000]"),
    (SPIKING, ["network.spiking.T=1000000", "network.hidden=[4096]"], "", "memory"),
    (BASE, ["data.limit_train=-1"], "", "data.limit_train: must be >= 0"),
    (BASE, ["data.limit_test=-1"], "", "data.limit_test: must be >= 0"),
    (BASE, ["data.batch_size=0"], "", "data.batch_size: must be positive"),
    (BASE, ["data.eval_batch_size=-3"], "", "data.eval_batch_size: must be positive"),
    (BASE, ["data.val_fraction=1"], "", "data.val_fraction: must be in [0, 1)"),
    (BASE, ["data.scale=-2"], "", "data.scale: must be positive"),
    (BASE, ["data.split_seed=-1"], "", "data.split_seed: must be in [0, 4294967295]"),
    (CONTINUAL, ["continual.n_tasks=1000000000000"], "", "continual.n_tasks: must be in [1, 1000]"),
    (CONTINUAL, ["continual.n_tasks=1e12"], "", "continual.n_tasks: expected an integer"),
    (CONTINUAL, ["continual.n_tasks=0"], "", "continual.n_tasks: must be in [1, 1000]"),
    (CONTINUAL, ["continual.epochs_per_task=0"], "", "continual.epochs_per_task: must be positive"),
    (HLOP, ["plugins.0.projector=bogus"], "", "plugins[0].projector: unknown value 'bogus'"),
    (HLOP, ["plugins.0.momentum=nan"], "", "plugins[0].momentum: must be a finite number"),
    (HLOP, ["plugins.0.momentum=1"], "", "plugins[0].momentum: must be in [0, 1)"),
    (HLOP, ["plugins.0.lr=[0.1, -1]"], "", "plugins[0].lr: values must be positive, got -1.0 at index 1"),
    (HLOP, ["plugins.0.clip=inf"], "", "plugins[0].clip: must be a finite number"),
    (HLOP, ["plugins.0.every=0"], "", "plugins[0].every: must be positive"),
    (HLOP, ["plugins.0.neurons_first=[-1]"], "", "plugins[0].neurons_first: values must be >= 0"),
    (HLOP, ["plugins.0.name=ewc", "plugins.0.gamma=2"], "", "plugins[0].gamma: must be in [0, 1]"),
    (HLOP, ["plugins.0.name=ewc", "plugins.0.lam=-1"], "", "plugins[0].lam: must be >= 0"),
    (HLOP, ["plugins.0.name=projection", "plugins.0.threshold=0"], "", "plugins[0].threshold: must be in (0, 1]"),
    (HLOP, ["plugins.1.name=ewc"], "", "plugins has 1 entry, no entry 1"),
    (BASE, ["rule.name=ccl", "rule.flooding=1"], "", "rule.flooding: must be in [0, 1)"),
    (BASE, ["rule.name=ccl", "rule.lr_feedback=-1"], "", "rule.lr_feedback: must be positive"),
    (BASE, ["rule.name=ccl", "rule.loss_form=nope"], "", "rule.loss_form: unknown value 'nope'"),
    (BASE, ["rule.name=fa", "rule.feedback_seed=-1"], "", "rule.feedback_seed: must be in [0, 4294967295]"),
    (BASE, ["name=../../x"], "", "name: must be a plain file name"),
    # the file itself
    ("", None, NESTED_TABLES, "nested more than"),
    ("", None, NESTED_ARRAYS, "nested more than"),
    ("", None, DOTTED, "dotted key parts"),
    ("", None, 'description = "' + "x" * (1 << 20) + '"\n', "not a config file"),
    ("", None, "seed = " + "9" * 5000 + "\n", "malformed TOML"),
    ("", None, "seed = 1\n[data\n", "malformed TOML"),
    ("", None, "[network]\nhidden = [8, -5]\n", "network.hidden: widths must be positive, got -5 at index 1"),
    ("", None, "[network]\nhidden = [8.5]\n", "network.hidden[0]: expected an integer"),
    ("", None, "[train]\nlog_every = true\n", "train.log_every: expected an integer, got True"),
    ("", None, "[rule]\nlr = true\n", "rule.lr: expected a number, got True"),
    ("", None, '[rule]\n"a\\nb" = 1\n', "rule.a\\nb: unknown key"),
]

# Float fields that must be finite: nan, inf and -inf are refused everywhere.
FLOATS = [
    ("BASE", "rule.lr"), ("BASE", "rule.momentum"), ("BASE", "rule.clip"), ("BASE", "rule.weight_decay"),
    ("BASE", "network.spiking.threshold"), ("BASE", "network.spiking.tau"), ("BASE", "network.spiking.dt"),
    ("BASE", "network.spiking.slope"), ("BASE", "network.spiking.max_rate"), ("BASE", "network.init_gain"),
    ("BASE", "record.flush_every_s"), ("BASE", "data.val_fraction"), ("BASE", "data.scale"),
    ("BASE", "data.test_fraction"), ("HLOP", "plugins.0.spiking_scale"), ("HLOP", "plugins.0.lr"),
]
for _base, _key in FLOATS:
    for _v in ("nan", "inf", "-inf"):
        _list = _key == "plugins.0.lr"
        _where = _key.replace(".0.", "[0].") + ("[0]" if _list else "")
        CASES.append((globals()[_base], [f"{_key}={f'[{_v}]' if _list else _v}"], "", f"{_where}: must be a finite number"))


def _run(tmp: Path, text: str, sets: list[str] | None, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, Path]:
    cfg = tmp / "exp.toml"
    cfg.write_text(text)
    out = tmp / "out.h5"
    argv = ["run", str(cfg), "--out", str(out), "--quiet", "--no-report"]
    for s in sets or []:
        argv += ["--set", s]
    code = main(argv)
    return code, capsys.readouterr().err, out


@pytest.mark.parametrize("base,sets,extra,msg", CASES, ids=[f"{i}-{(c[1] or [c[2][:24]])[-1][:40]}" for i, c in enumerate(CASES)])
def test_bad_config_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base: str, sets: list[str] | None, extra: str, msg: str
) -> None:
    code, err, out = _run(tmp_path, base + extra, sets, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("bioplaus: error: "), err
    assert msg in err, err
    assert not out.exists()  # refused before anything is created


def test_valid_base_configs_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i, text in enumerate([BASE, CNN, CONTINUAL]):
        code, err, out = _run(tmp_path, text, [f"name=b{i}"], capsys)
        assert code == 0, err
        with h5py.File(out, "r") as f:
            assert f.attrs["status"] == "done"
        out.unlink()


def test_check_range_and_dict_sources() -> None:
    check_range(0.5, "x", ge=0, lt=1)
    with pytest.raises(ConfigError, match="x: must be a finite number, got nan"):
        check_range(math.nan, "x", ge=0)
    with pytest.raises(ConfigError, match=r"x: must be in \(0, 1\], got 2"):
        check_range(2, "x", gt=0, le=1)
    deep: dict = {}
    cur = deep
    for _ in range(5000):
        cur["a"] = {}
        cur = cur["a"]
    with pytest.raises(ConfigError, match=f"nested more than {MAX_DEPTH} deep"):
        load_config({"rule": {"opt": deep}})
    with pytest.raises(ConfigError, match="rule.lr: must be a finite number"):
        load_config({"rule": {"lr": 10**400}})


# ----------------------------------------------------------------------------- CNN sizes


@pytest.mark.parametrize("backend", ["rate", "spiking"])
@pytest.mark.parametrize("hw", [8, 28])
@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
def test_cnn_builds_and_runs_for_any_kernel(backend: str, hw: int, kernel: int) -> None:
    cfg = NetworkConfig(backend=backend, arch="cnn", channels=[3, 4], kernel=kernel, pool=2, hidden=[6])
    cfg.spiking.T = 2
    net = build_net(cfg, (1, hw, hw), 5)
    plan = plan_net(cfg, (1, hw, hw), 5)
    y = net(torch.rand(2, 1, hw, hw))
    assert y.shape == (2, 5)
    # the planned sizes are the real ones, and every parameter is counted
    h = hw
    for cp in plan.convs:
        c = conv_out(h, kernel, kernel // 2)
        assert cp.conv_hw == (c, c) and cp.out_hw == (c // cp.pool, c // cp.pool)
        h = c // cp.pool
    assert plan.params == sum(p.numel() for p in net.parameters())
    assert net.layers[-2].synapse.in_features == plan.linear[0][0]


def test_conv_output_size_rule() -> None:
    assert [conv_out(8, k, k // 2) for k in (1, 2, 3, 4, 5)] == [8, 9, 8, 9, 8]
    # pooling is skipped once the image is smaller than the pool
    cfg = NetworkConfig(arch="cnn", channels=[2, 2, 2, 2], kernel=2, pool=3, hidden=[])
    plan = plan_net(cfg, (1, 8, 8), 3)
    assert [cp.out_hw for cp in plan.convs] == [(3, 3), (1, 1), (2, 2), (1, 1)]
    assert [cp.pool for cp in plan.convs] == [3, 3, 1, 3]
    with pytest.raises(ConfigError, match="no values"):
        plan_net(cfg, (1, 0, 8), 3)


def test_even_kernel_cnn_runs_with_ccl_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = CNN.replace('name = "backprop"', 'name = "ccl"').replace("channels = [4]", "channels = [4, 4]\nkernel = 2")
    code, err, out = _run(tmp_path, text, ["train.max_steps=2"], capsys)
    assert code == 0, err


# issue 26, class 12: a list of floats as long as its field allows is a valid config; the
# raw-text guard counts key dots, not decimal points.
_SCAN_300 = [round(0.001 + i / 400, 6) for i in range(300)]


def test_300_float_values_accepted_from_toml_text(tmp_path: Path) -> None:
    cfg = tmp_path / "hop.toml"
    cfg.write_text('kind = "hopfield"\n[hopfield]\nscan = "d"\nvalues = [' + ", ".join(map(str, _SCAN_300)) + "]\n")
    assert list(load_config(cfg).hopfield.values) == _SCAN_300


def test_300_float_values_accepted_from_set() -> None:
    sets = ['kind="hopfield"', "hopfield.scan=d", "hopfield.values=[" + ", ".join(map(str, _SCAN_300)) + "]"]
    assert list(load_config({}, sets).hopfield.values) == _SCAN_300


def test_401_values_still_refused_by_the_field_bound() -> None:
    with pytest.raises(ConfigError, match="hopfield.values"):
        load_config({}, ['kind="hopfield"', "hopfield.values=[" + ", ".join(["0.5"] * 401) + "]"])


@pytest.mark.parametrize("text", [
    "a" + ".a" * 300 + " = 1\n",  # a long dotted key
    "a" + ".1" * 300 + " = 1\n",  # a long dotted key of digits, not floats
    "x = 1\n[" + "t." * 300 + "t]\n",  # a long dotted table header
    "x = {" + "b." * 300 + "b = 0.5}\n",  # a dotted key in an inline table beside a float
    "x = " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n",  # deep nesting
])
def test_pathological_keys_still_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    code, err, out = _run(tmp_path, text, None, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and ("dotted key parts" in err or "nested more than" in err), err
    assert not out.exists()
