"""Unknown keys and names: every valid key of the table (common ones included) and a "did you mean".

One helper (`bioplaus.errors.did_you_mean`, difflib) phrases the suggestion for config
keys, rules, plugins, kinds, neuron models (``network.backend``), data sets and choices.
"""

from __future__ import annotations

import re

import pytest

from bioplaus.cli import main
from bioplaus.config import RuleConfig, load_config, table_keys
from bioplaus.errors import ConfigError, close_names, did_you_mean

BASE = {"data": {"dataset": "digits"}, "network": {"backend": "rate", "hidden": [8]}, "train": {"epochs": 1}}


def _error(overrides: list[str], base: dict | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(base or BASE, overrides)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def _listed(msg: str) -> list[str]:
    """The names after 'valid keys in [...]: ' / 'valid: ', before a '(did you mean'."""
    m = re.search(r"valid(?: keys in \[.*?\])?: (.*?)(?: \(did you mean '[^']*'\?\))?$", msg)
    assert m, msg
    return m.group(1).split(", ")


def test_did_you_mean_phrasing() -> None:
    assert did_you_mean("lrr", ["lr", "momentum", "name"]) == " (did you mean 'lr'?)"
    assert did_you_mean("zzzz", ["lr", "momentum"]) == ""
    assert close_names("quikstart", ["quickstart", "quickstart_rate", "hopfield"], n=4, cutoff=0.5) == [
        "quickstart", "quickstart_rate"]


def test_rule_unknown_key_lists_common_and_own_keys() -> None:
    msg = _error(["rule.lrr=0.05"])
    assert msg.startswith("rule.lrr: unknown key; valid keys in [rule]: ")
    assert msg.endswith("(did you mean 'lr'?)")
    keys = _listed(msg)
    assert keys[: len(table_keys(RuleConfig))] == table_keys(RuleConfig)  # name, optimizer, lr, momentum, ...
    assert "lr" in keys and "momentum" in keys
    # backprop has no options of its own: the list was empty before (issue 23)
    assert keys == table_keys(RuleConfig)


def test_rule_with_options_lists_both() -> None:
    msg = _error(["rule.name=ccl", "rule.momentun=0.9"])
    keys = _listed(msg)
    from bioplaus.registry import RULES

    own = table_keys(RULES.get("ccl").Options)
    assert own and keys == table_keys(RuleConfig) + own
    assert msg.endswith("(did you mean 'momentum'?)")


def test_plugin_unknown_key_lists_name_and_options() -> None:
    base = {**BASE, "plugins": [{"name": "ewc", "lamda": 10.0}]}
    msg = _error([], base)
    from bioplaus.registry import PLUGINS

    assert _listed(msg) == ["name", *table_keys(PLUGINS.get("ewc").Options)]
    assert msg.startswith("plugins[0].lamda: unknown key; valid keys in [plugins[0]]: name, lam")
    assert msg.endswith("(did you mean 'lam'?)")


def test_generic_table_and_top_level_keys() -> None:
    msg = _error(["data.batchsize=3"])
    assert msg.startswith("data.batchsize: unknown key; valid keys in [data]: ")
    assert msg.endswith("(did you mean 'batch_size'?)")
    msg = _error(["sede=3"])
    assert msg.startswith("sede: unknown key; valid keys in [top level] of kind 'supervised': ")
    assert msg.endswith("(did you mean 'seed'?)")


@pytest.mark.parametrize("key,value,field,meant", [
    ("data.dataset", "digts", "data.dataset", "digits"),
    ("rule.name", "backprob", "rule.name", "backprop"),
    ("network.backend", "spikng", "network.backend", "spiking"),
    ("kind", "contniual", "kind", "continual"),
    ("rule.optimizer", "adan", "rule.optimizer", "adam"),
])
def test_names_did_you_mean(key: str, value: str, field: str, meant: str) -> None:
    msg = _error([f"{key}={value!r}".replace("'", '"')])
    assert msg.startswith(f"{field}: unknown value '{value}'"), msg
    assert meant in _listed(msg)
    assert msg.endswith(f"(did you mean '{meant}'?)"), msg


def test_plugin_name_did_you_mean() -> None:
    msg = _error([], {**BASE, "plugins": [{"name": "hlopp"}]})
    assert msg.startswith("plugins[0].name: unknown value 'hlopp'"), msg
    assert msg.endswith("(did you mean 'hlop'?)")


def test_cli_exit_2_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "quickstart", "--set", "rule.lrr=0.05", "--quiet", "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "momentum" in err and "(did you mean 'lr'?)" in err
