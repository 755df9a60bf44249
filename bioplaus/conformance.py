"""One contract for every registered component: the checks a rule, plugin, neuron model or
experiment kind must pass, as ``(component, check)`` pairs for pytest.

scikit-learn's ``parametrize_with_checks`` is the model: a new component is tested the
moment it registers, by the same checks as the built-ins, and a third-party package runs
them on its own components::

    from bioplaus.conformance import parametrize_with_checks

    @parametrize_with_checks(groups=("neurons",), names=("my_alif",))
    def test_my_component(component, check, tmp_path):
        check(component, tmp_path)

A component says what a tiny run of it needs with a classmethod ``example_config()`` (or
``example_config(workdir)`` when it must write a file first, as the simulate kind its graph)
returning config tables merged over the group's tiny base (e.g. NoProp's block sizes, the
hopfield kind's N); without one the base is used as it is. Every check raises
``AssertionError`` (or the component's own error) with a message naming the component.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A supervised run on sklearn's digits that takes about a second on one core.
TINY: dict[str, Any] = {
    "name": "conformance",
    "seed": 3,
    "data": {"dataset": "digits", "batch_size": 64, "limit_train": 256, "limit_test": 128,
             "val_fraction": 0.0},
    "network": {"backend": "rate", "hidden": [16], "spiking": {"T": 4}},
    "rule": {"name": "backprop", "lr": 0.05},
    "train": {"epochs": 1, "report": False, "progress": False, "threads": 1, "log_every": 1},
    "record": {"weights_every": 0},
}
# Two tasks of split digits: what a plugin's hooks are run on.
TINY_STREAM: dict[str, Any] = {
    **TINY,
    "continual": {"stream": "split", "n_tasks": 2, "epochs_per_task": 1},
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, table by table (lists and values replaced)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def example(cls: Any, workdir: Path | None = None) -> dict[str, Any]:
    """The component's ``example_config()`` (empty when it has none)."""
    fn = getattr(cls, "example_config", None)
    if not callable(fn):
        return {}
    if inspect.signature(fn).parameters:
        return dict(fn(workdir if workdir is not None else Path.cwd()))
    return dict(fn())


# ----------------------------------------------------------------------------- helpers


def _run(config: dict[str, Any], out: Path) -> Any:
    from bioplaus.api import run

    return run(config, out=out, progress=False, report=False, overwrite=True)


def _finals(path: Path) -> dict[str, float]:
    from bioplaus.record import open_run

    with open_run(path) as rf:
        return {k: float(v) for k, v in rf.attrs.items() if k.startswith("final_")}


def _one_line_config_error(fn: Callable[[], Any], field: str, who: str) -> None:
    from bioplaus.errors import ConfigError

    try:
        fn()
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg, f"{who}: a config error must be one line, got {msg!r}"
        assert field in msg, f"{who}: the error should name {field!r}, got {msg!r}"
        return
    raise AssertionError(f"{who}: a bad value was accepted (expected a ConfigError naming {field!r})")


def _model_arrays(path: Path) -> dict[str, Any]:
    import h5py

    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        if "model" in f:
            f["model"].visititems(lambda n, o: out.__setitem__(n, o[()]) if hasattr(o, "shape") else None)
    return out


def check_figures_registered(cls: Any, tmp: Path) -> None:
    """Every figure a rule, plugin or kind names is a registered `FigureSpec`."""
    from bioplaus.registry import FIGURES, FigureSpec

    for fig in cls.figures:
        assert isinstance(FIGURES.get(fig), FigureSpec), (cls.name, fig)


# ----------------------------------------------------------------------------- rules


def rule_config(cls: Any) -> dict[str, Any]:
    return merge(merge(TINY, {"rule": {"name": cls.name}}), example(cls))


def check_rule_options(cls: Any, tmp: Path) -> None:
    """The example's options parse; an unknown option is a one-line error naming ``rule``."""
    from bioplaus.config import load_config

    cfg = rule_config(cls)
    load_config(cfg)
    bad = merge(cfg, {"rule": {"no_such_option_xyz": 1}})
    _one_line_config_error(lambda: load_config(bad), "rule", f"rule {cls.name!r}")


def check_rule_metrics_declared(cls: Any, tmp: Path) -> None:
    """A rule declares its step metrics: unique names, known directions, one headline."""
    from bioplaus.metrics import DIRECTIONS

    names = [m.name for m in cls.metrics]
    assert names, f"rule {cls.name!r} declares no metrics"
    assert len(set(names)) == len(names), f"rule {cls.name!r}: duplicate metric names {names}"
    assert all(m.direction in DIRECTIONS for m in cls.metrics), f"rule {cls.name!r}: bad direction"
    assert sum(m.headline for m in cls.metrics) == 1, f"rule {cls.name!r}: exactly one headline metric"


def check_rule_tiny_run(cls: Any, tmp: Path) -> None:
    """A tiny run ends "done" with finite final values, the headline among them, and a
    saved model for every module the rule names."""
    from bioplaus.record import open_run

    res = _run(rule_config(cls), tmp / "a.h5")
    assert res.status == "done"
    assert res.headline is not None, f"rule {cls.name!r}: the run reported no headline metric"
    bad = {k: v for k, v in res.metrics.items() if not math.isfinite(v)}
    assert not bad, f"rule {cls.name!r}: non-finite final metrics {bad}"
    with open_run(res.path) as rf:
        assert rf.status == "done"
    rule = res.experiment.rule
    arrays = _model_arrays(res.path)
    for name in rule.modules():
        assert any(k.startswith(f"{name}/") for k in arrays), f"rule {cls.name!r}: /model/{name} not saved"


def check_rule_same_seed_same_numbers(cls: Any, tmp: Path) -> None:
    """Two runs of one config and seed write the same metrics and the same model, bit for bit."""
    import numpy as np

    cfg = rule_config(cls)
    a, b = _run(cfg, tmp / "a.h5"), _run(cfg, tmp / "b.h5")
    assert a.metrics == b.metrics, f"rule {cls.name!r}: same seed, other metrics"
    ma, mb = _model_arrays(a.path), _model_arrays(b.path)
    assert ma.keys() == mb.keys()
    for k in ma:
        np.testing.assert_array_equal(ma[k], mb[k], err_msg=f"rule {cls.name!r}: /model/{k}")


def check_rule_layers(cls: Any, tmp: Path) -> None:
    """What plugins and probes act on: layers with a weight, a unique name, flags and a
    state holding the presynaptic input after a forward pass."""
    import torch

    res = _run(rule_config(cls), tmp / "a.h5")
    rule = res.experiment.rule
    layers = rule.protected_layers()
    names = [la.name for la in layers]
    assert len(set(names)) == len(names), f"rule {cls.name!r}: layer names repeat: {names}"
    for la in layers:
        assert isinstance(la.weight, torch.Tensor) and la.weight.dim() >= 2, f"{cls.name}: {la.name}.weight"
        assert isinstance(la.is_conv, bool) and isinstance(la.is_output, bool), f"{cls.name}: {la.name} flags"
        assert hasattr(la, "state"), f"rule {cls.name!r}: layer {la.name} has no state"
    for la in rule.probe_points():
        assert la.name, f"rule {cls.name!r}: a probe point without a name"


def check_rule_needs_met(cls: Any, tmp: Path) -> None:
    """A rule needs known neuron capabilities, and some registered model has them all."""
    from bioplaus.neurons import CAPABILITIES, models_with

    assert cls.needs <= set(CAPABILITIES), cls.name
    assert models_with(cls.needs), f"{cls.name}: no registered neuron model has {sorted(cls.needs)}"


RULE_CHECKS = (check_rule_options, check_rule_metrics_declared, check_rule_needs_met, check_rule_tiny_run,
               check_rule_same_seed_same_numbers, check_rule_layers, check_figures_registered)


# ----------------------------------------------------------------------------- plugins


def plugin_config(cls: Any) -> dict[str, Any]:
    over = example(cls)
    entry = {"name": cls.name, **over.pop("plugin", {})}
    return merge(merge(TINY_STREAM, over), {"plugins": [entry]})


def check_plugin_options(cls: Any, tmp: Path) -> None:
    """The example's options parse; an unknown option is a one-line error naming the plugin."""
    from bioplaus.config import load_config

    cfg = plugin_config(cls)
    load_config(cfg)
    bad = copy.deepcopy(cfg)
    bad["plugins"][0]["no_such_option_xyz"] = 1
    _one_line_config_error(lambda: load_config(bad), "plugins", f"plugin {cls.name!r}")


def check_plugin_hook_shapes(cls: Any, tmp: Path) -> None:
    """Every hook a plugin overrides keeps the base hook's parameters (one shape, rule first)."""
    from bioplaus.training.hooks import HOOKS, Plugin

    for hook in HOOKS:
        mine = getattr(cls, hook, None)
        if mine is None or mine is getattr(Plugin, hook):
            continue
        want = list(inspect.signature(getattr(Plugin, hook)).parameters)
        got = list(inspect.signature(mine).parameters)
        assert got == want, f"plugin {cls.name!r}.{hook}{tuple(got)}: the hook takes {tuple(want)}"


def check_plugin_stream_run(cls: Any, tmp: Path) -> None:
    """Two tasks with the plugin on backprop end "done" with the accuracy matrix, and every
    metric the plugin emits is declared by it."""
    from bioplaus.metrics import find_metric
    from bioplaus.record import open_run

    res = _run(plugin_config(cls), tmp / "p.h5")
    assert res.status == "done"
    with open_run(res.path) as rf:
        assert rf.status == "done"
        emitted = [k for k in rf.metrics if k.startswith(f"{cls.name}/")]
    for k in emitted:
        assert find_metric(cls.metrics, k) is not None, f"plugin {cls.name!r} emits {k!r} without declaring it"


PLUGIN_CHECKS = (check_plugin_options, check_plugin_hook_shapes, check_plugin_stream_run,
                 check_figures_registered)


# ----------------------------------------------------------------------------- kinds


def kind_config(cls: Any, workdir: Path) -> dict[str, Any]:
    owned = set(cls.sections()) | {"name", "seed", "train", "record"}
    base = {k: v for k, v in TINY.items() if k in owned}
    return merge(merge(base, {"kind": cls.name}), example(cls, workdir))


def check_kind_declares(cls: Any, tmp: Path) -> None:
    """A kind declares its metrics (one headline) and its devices (cpu among them)."""
    from bioplaus.config import load_config

    cfg = load_config(kind_config(cls, tmp))
    declared = cls.declared_metrics(cfg)
    assert sum(m.headline for m in declared) == 1, f"kind {cls.name!r}: exactly one headline metric"
    assert "cpu" in cls.devices, f"kind {cls.name!r}: every kind runs on the CPU"


def check_kind_tiny_run(cls: Any, tmp: Path) -> None:
    """A tiny run ends "done"; the run file's outcome has the headline and a config that
    holds only the kind's own tables and the generic ones."""
    from bioplaus.config import load_config
    from bioplaus.record import open_run

    raw = kind_config(cls, tmp)
    res = _run(raw, tmp / "k.h5")
    assert res.status == "done" and res.headline is not None, f"kind {cls.name!r}: {res.summary()}"
    with open_run(res.path) as rf:
        out = rf.outcome()
        assert out.status == "done" and out.headline is not None
        tables = {k for k, v in rf.config.items() if isinstance(v, dict | list)}
    own = set(load_config(raw).to_dict()) - {"name", "seed", "description", "kind"}
    assert tables <= own, f"kind {cls.name!r} records tables it does not own: {sorted(tables - own)}"


def check_kind_unknown_table(cls: Any, tmp: Path) -> None:
    """A table no part of the kind reads is a one-line error naming it."""
    from bioplaus.config import load_config

    bad = merge(kind_config(cls, tmp), {"no_such_table_xyz": {"a": 1}})
    _one_line_config_error(lambda: load_config(bad), "no_such_table_xyz", f"kind {cls.name!r}")


KIND_CHECKS = (check_kind_declares, check_kind_tiny_run, check_kind_unknown_table, check_figures_registered)


# ----------------------------------------------------------------------------- neuron models


def _neuron_options(model: Any) -> dict[str, Any]:
    """The ``[network.neuron]`` table of a model's example (empty when it has none)."""
    return dict(example(model).get("network", {}).get("neuron", {}))


def check_neuron_contract(model: Any, tmp: Path) -> None:
    """Concrete class, frozen parameters from the config, NamedTuple state, a step that keeps
    the shape, a population that agrees with the scan, time steps per sample."""
    import torch

    from bioplaus.config import NetworkConfig, SpikingConfig
    from bioplaus.neurons import NeuronModel, neuron_model

    name = model.name
    model = neuron_model(name)
    assert issubclass(model, NeuronModel) and not inspect.isabstract(model)
    net = NetworkConfig(backend=name, hidden=[5], spiking=SpikingConfig(T=4), neuron=_neuron_options(model))
    model.check(net)
    for is_output in (False, True):
        params = model.params_from(net, is_output)
        assert dataclasses.is_dataclass(params) and type(params).__dataclass_params__.frozen
        cur = torch.rand(4, 3, 5) * 2
        state = model.initial_state(cur[0], params)
        assert isinstance(state, tuple) and hasattr(state, "_fields")
        out, state = model.step(cur[0], state, params)
        assert out.shape == cur[0].shape
        pop = model.population(params)
        got, mem = pop(cur if model.temporal else cur[0])
        assert got.shape == (cur.shape if model.temporal else cur[0].shape)
        if model.temporal:
            ref, ref_mem = model.scan(cur, params)
            assert torch.equal(got, ref) and (mem is None or torch.equal(mem, ref_mem))
    assert model.steps(net) == (4 if model.temporal else 1)
    assert ("temporal" in model.capabilities()) != ("static" in model.capabilities())


def check_neuron_scan_is_its_steps(model: Any, tmp: Path) -> None:
    """A temporal model's scan (its fast path, if it has one) gives what its pure step gives
    looped over T: the same outputs, membranes to float rounding."""
    import torch

    from bioplaus.config import NetworkConfig, SpikingConfig
    from bioplaus.neurons import NeuronModel

    if not model.temporal:
        return
    net = NetworkConfig(backend=model.name, spiking=SpikingConfig(T=12), neuron=_neuron_options(model))
    p = model.params_from(net, False)
    cur = torch.randn(12, 3, 6, generator=torch.Generator().manual_seed(5)) * 0.8 + 0.5
    out, mem = model.scan(cur, p)
    ref, ref_mem = NeuronModel.scan.__func__(model, cur, p)
    assert torch.equal(out, ref), f"neuron model {model.name!r}: scan and step loop disagree"
    if mem is not None and ref_mem is not None:
        torch.testing.assert_close(mem, ref_mem, rtol=0, atol=1e-5)


def check_neuron_gradient(model: Any, tmp: Path) -> None:
    """A differentiable model passes a finite, non-zero gradient back to its input current."""
    import torch

    from bioplaus.config import NetworkConfig, SpikingConfig

    if not model.differentiable:
        return
    net = NetworkConfig(backend=model.name, spiking=SpikingConfig(T=6), neuron=_neuron_options(model))
    pop = model.population(model.params_from(net, False))
    shape = (6, 4, 5) if model.temporal else (4, 5)
    cur = (torch.randn(shape, generator=torch.Generator().manual_seed(1)) + 0.8).requires_grad_()
    out, mem = pop(cur)
    (out.sum() + (mem.sum() if mem is not None else 0)).backward()
    g = cur.grad
    assert g is not None and bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0, (
        f"neuron model {model.name!r}: no usable gradient reaches the input")


def check_neuron_states_export(model: Any, tmp: Path) -> None:
    """A model tells a NIR exporter its node and a simulator its equations, or says in one
    `NotStatable` line that it cannot."""
    from bioplaus.config import NetworkConfig, SpikingConfig
    from bioplaus.neurons import Brian2Neuron, NIRNeuron, NotStatable

    net = NetworkConfig(backend=model.name, spiking=SpikingConfig(T=4), neuron=_neuron_options(model))
    p = model.params_from(net, False)
    for what, call, kind in (
        ("nir", lambda: model.nir(p, (5,), integration="euler", li_readout=True), NIRNeuron),
        ("brian2", lambda: model.brian2(fires=True, reset="subtract", inputs="I_syn"), Brian2Neuron),
    ):
        try:
            told = call()
        except NotStatable as e:
            assert "\n" not in str(e) and model.name in str(e), f"{model.name}.{what}: {e}"
            continue
        assert isinstance(told, kind), f"neuron model {model.name!r}.{what} returned {type(told).__name__}"


def check_neuron_trains(model: Any, tmp: Path) -> None:
    """Backprop on a tiny layer stack of this model ends "done" with finite numbers, and
    the model's membrane (if it has one) is recorded by a probe."""
    from bioplaus.record import open_run

    cfg = merge(merge(TINY, {"network": {"backend": model.name}}), example(model, tmp))
    if model.temporal:
        cfg = merge(cfg, {"record": {"probes": [{"layers": ["all"], "variables": ["mem"], "every": 2, "samples": 2}]}})
    res = _run(cfg, tmp / "n.h5")
    assert res.status == "done" and all(math.isfinite(v) for v in res.metrics.values()), res.summary()
    if model.temporal:
        with open_run(res.path) as rf:
            assert any(t.endswith(".mem") for t in rf.traces), f"neuron model {model.name!r}: no membrane probe"


NEURON_CHECKS = (check_neuron_contract, check_neuron_scan_is_its_steps, check_neuron_gradient,
                 check_neuron_states_export, check_neuron_trains)


# ----------------------------------------------------------------------------- the suite


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    component: Any
    check: Callable[[Any, Path], None]

    @property
    def id(self) -> str:
        return f"{self.group}:{self.name}-{self.check.__name__.removeprefix('check_')}"


def checks() -> dict[str, tuple[Callable[[Any, Path], None], ...]]:
    """The checks of each registry group."""
    return {"rules": RULE_CHECKS, "plugins": PLUGIN_CHECKS, "neurons": NEURON_CHECKS,
            "experiments": KIND_CHECKS}


def cases(groups: Iterable[str] | None = None, names: Iterable[str] | None = None) -> Iterator[Case]:
    """Every (component, check) pair of the registered components of ``groups``."""
    from bioplaus.registry import GROUPS

    table = checks()
    wanted = set(names) if names is not None else None
    for group in groups or table:
        for name, obj in GROUPS[group].items():
            if wanted is not None and name not in wanted:
                continue
            for check in table[group]:
                yield Case(group, name, obj, check)


def parametrize_with_checks(groups: Iterable[str] | None = None, names: Iterable[str] | None = None) -> Any:
    """A pytest ``parametrize`` over ``(component, check)`` with readable ids."""
    import pytest

    cs = list(cases(groups, names))
    return pytest.mark.parametrize(("component", "check"), [(c.component, c.check) for c in cs],
                                   ids=[c.id for c in cs])


__all__ = ["Case", "cases", "checks", "merge", "parametrize_with_checks", "TINY", "TINY_STREAM"]
