"""NoProp-DT blocks trained in worker processes, each holding only its own blocks.

The workers are started once (`bioplaus.procs`: spawn, SIGINT ignored, gone when the main
process dies) with the rule's options, the indices of their blocks and copies of the run's
plugins (not yet set up). Each worker builds its blocks as `BlockUnit`s, binds the plugin
copies to them (`BlockUnit.bind_plugins`: HLOP's subspaces of a block live where the block
trains) and waits for commands:

- ``data``: the training arrays of a (new) task, in shared memory;
- ``epoch``: draw the epoch's batch order from the loader's generator state sent along (the
  state the main process draws its order from), train each block over the epoch with
  `block_update` (the in-process update, with the block's plugin hooks), stream (block, L2,
  accuracy) per step, then send the blocks' state dicts and the plugins' logs;
- ``hook``: a task or epoch hook of the block plugins (``before_task``, ``after_task``,
  ``after_epoch``), answered with the plugins' logs, which the main process writes;
- ``reset``: fresh optimiser state (task streams); ``stop``.

Each command carries the main process's view of what the blocks depend on besides their
own state: the loader's generator state, the task's active classes and the BatchNorm
layers a stream froze. Nothing else passes between processes: block t's loss never reaches
another block, in any process.
"""

from __future__ import annotations

import os
import queue
import traceback
from dataclasses import asdict, replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from bioplaus.errors import RunError
from bioplaus.procs import spawn_context, start_worker
from bioplaus.rules.noprop.blocks import BlockUnit, block_update, epoch_batches, replay, spiking_of
from bioplaus.rules.noprop.model import NoPropModel

POLL_S = 2.0
STEPS_PER_MESSAGE = 20


def split_blocks(T: int, workers: int) -> list[list[int]]:
    """Blocks 1..T in ``workers`` contiguous, near-equal groups (no empty group)."""
    w = max(1, min(int(workers), T))
    edges = np.linspace(0, T, w + 1).round().astype(int)
    return [list(range(edges[i] + 1, edges[i + 1] + 1)) for i in range(w)]


def _parts(loader: Any) -> tuple[Any, Any]:
    """(the ArrayLoader, a task's pixel permutation or None) of ``loader``, a ``neuro_data``
    ArrayLoader or a stream's `TaskLoader` around one; (None, None) for other loaders."""
    from bioplaus.experiments.continual import TaskLoader
    from neuro_data.loader import ArrayLoader

    if isinstance(loader, TaskLoader):
        return (loader.inner, loader.perm) if isinstance(loader.inner, ArrayLoader) else (None, None)
    return (loader, None) if isinstance(loader, ArrayLoader) else (None, None)


def _rebuild(data: dict[str, Any]) -> Any:
    """The loader `_data` describes, with a fresh generator (its state comes with each command)."""
    from bioplaus.experiments.continual import TaskLoader
    from neuro_data.loader import ArrayLoader

    inner = ArrayLoader(data["x"], data["y"], data["batch_size"], shuffle=data["shuffle"], seed=data["seed"],
                        drop_last=data["drop_last"])
    return inner if data["perm"] is None else TaskLoader(inner, data["perm"])


def _data(loader: Any) -> dict[str, Any]:
    inner, perm = _parts(loader)
    return {"x": inner.x, "y": inner.y, "batch_size": inner.batch_size, "seed": inner.seed,
            "shuffle": inner.shuffle, "drop_last": inner.drop_last,
            "perm": None if perm is None else perm.cpu().numpy()}


def loader_copy(loader: Any) -> Any:
    """The same batches with a copy of the generator's state (drawing from the copy leaves
    ``loader`` alone); a loader that is not array-backed is returned as it is."""
    inner, _ = _parts(loader)
    if inner is None:
        return loader
    out = _rebuild(_data(loader))
    _parts(out)[0].generator.set_state(inner.generator.get_state())
    return out


def _apply(model: Any, loader: Any, sync: dict[str, Any]) -> None:
    """The main process's loader state, active classes and frozen BatchNorm layers."""
    from bioplaus.experiments.continual import freeze_batchnorm

    _parts(loader)[0].generator.set_state(sync["loader_state"])
    model.active_classes = sync["active"]
    for t, names in sync["frozen"].items():
        block = model.blocks[t - 1]
        if not isinstance(block, torch.nn.Identity):
            for name in names:
                freeze_batchnorm(block.get_submodule(name))


def worker_main(spec: dict[str, Any], wid: int, held: list[int], cmd_q: Any, out_q: Any) -> None:
    """The loop of one worker process (see the module docstring)."""
    start_worker(spec["parent"])
    try:
        torch.set_num_threads(int(spec["threads"]))
        model = NoPropModel(spec["opts"], spec["in_shape"], spec["n_classes"], spec["seed"], spec["spiking"], set(held))
        units = [BlockUnit(spec["rule_cfg"], model, t, spec["seed"]) for t in held]
        logs: list[Any] = []
        for u in units:
            u.bind_plugins(spec["plugins"], spec["ctx"], spec["offsets"][u.t], logs)
        loader = None
        while True:
            cmd, arg = cmd_q.get()
            if cmd == "stop":
                return
            if cmd == "data":
                loader = _rebuild(arg)
                continue
            if cmd == "reset":
                for u in units:
                    u.reset_optimizer()
                continue
            _apply(model, loader, arg["sync"])
            if cmd == "hook":
                hook, first, second = arg["hook"]
                for u in units:
                    getattr(u.plugins, hook)(u, first, loader_copy(loader) if second is None else second)
                out_q.put(("hooked", wid, logs[:]))
                logs.clear()
                continue
            batches = epoch_batches(loader)
            buf: list[tuple[int, float, float]] = []
            for u in units:
                for x, y in batches:
                    buf.append((u.t, *block_update(u, x, y, u)))
                    if len(buf) >= STEPS_PER_MESSAGE:
                        out_q.put(("steps", wid, buf))
                        buf = []
            out_q.put(("steps", wid, buf))
            states = {u.t: {k: v.detach().cpu().numpy().copy() for k, v in u.block.state_dict().items()} for u in units}
            out_q.put(("done", wid, (states, logs[:])))
            logs.clear()
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        out_q.put(("error", wid, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"))


class BlockPool:
    """The worker processes of a ``parallel`` NoProp-DT rule (see the module docstring)."""

    def __init__(self, rule: Any, loader: Any, plugins: list[Any]) -> None:
        if _parts(loader)[0] is None:
            raise RunError("rule.mode = 'parallel' needs an in-memory training loader (ArrayLoader)")
        o = rule.opts
        self.groups = split_blocks(o.T, o.workers)
        spec = {
            "parent": os.getpid(),
            "rule_cfg": rule.cfg,
            "opts": SimpleNamespace(**asdict(o)),
            "in_shape": tuple(rule.net.in_shape),
            "n_classes": rule.net.n_classes,
            "seed": rule.ctx.seed,
            "spiking": spiking_of(rule.ctx.network),
            "plugins": plugins,
            "ctx": replace(rule.ctx, run=None),
            "offsets": {t: rule.layer_offset(t) for t in range(1, o.T + 1)},
            "threads": 1,
        }
        ctx = spawn_context()
        self.out_q = ctx.Queue()
        self.cmd_qs = [ctx.Queue() for _ in self.groups]
        self.procs = [
            ctx.Process(target=worker_main, args=(spec, w, g, self.cmd_qs[w], self.out_q), daemon=True)
            for w, g in enumerate(self.groups)
        ]
        for p in self.procs:
            p.start()
        self.rule = rule
        self.loader: Any = None
        self.states: dict[int, dict[str, np.ndarray]] = {}
        self.logs: dict[int, list[Any]] = {}
        self.done: set[int] = set()
        self.use(loader)

    def _send(self, cmd: str, arg: Any = None) -> None:
        for q in self.cmd_qs:
            q.put((cmd, arg))

    def use(self, loader: Any) -> None:
        """Train on ``loader``'s arrays from now on (sent once per loader)."""
        if loader is not self.loader:
            self.loader = loader
            self._send("data", _data(loader))

    def _sync(self) -> dict[str, Any]:
        net = self.rule.net
        frozen = {t: [n for n, m in b.named_modules() if getattr(m, "_bioplaus_frozen", False)]
                  for t, b in enumerate(net.blocks, start=1)}
        return {"loader_state": _parts(self.loader)[0].generator.get_state(), "active": net.active_classes, "frozen": frozen}

    def start_epoch(self, loader: Any) -> None:
        """Start an epoch on ``loader`` (before the main process draws its batch order)."""
        self.use(loader)
        self.states = {}
        self.logs = {}
        self.done = set()
        self._send("epoch", {"sync": self._sync()})

    def reset_optimizers(self) -> None:
        self._send("reset")

    def hook(self, hook: str, first: Any, second: Any) -> None:
        """Run a block plugins' hook in every worker; write their logs in block order.

        ``second`` None stands for the current loader (each worker passes a copy of its own)."""
        self._send("hook", {"sync": self._sync(), "hook": (hook, first, second)})
        got: dict[int, list[Any]] = {}
        while len(got) < len(self.procs):
            kind, wid, payload = self._next()
            if kind == "hooked":
                got[wid] = payload
        for wid in sorted(got):
            replay(self.rule.ctx.run, got[wid])

    def _next(self) -> tuple[str, int, Any]:
        """The next message of a worker; `RunError` if one failed or exited."""
        while True:
            try:
                kind, wid, payload = self.out_q.get(timeout=POLL_S)
            except queue.Empty:
                dead = [w for w, p in enumerate(self.procs) if not p.is_alive()]
                if dead:
                    raise RunError(f"NoProp worker {dead[0]} exited (code {self.procs[dead[0]].exitcode})") from None
                continue
            if kind == "error":
                raise RunError(f"NoProp worker {wid} failed: {payload.splitlines()[0]}")
            return kind, wid, payload

    def steps(self) -> Any:
        """(block, L2, accuracy) of each step as the workers report them, until all are done."""
        done = self.done  # on the pool: a second call (draining) continues where the first stopped
        while len(done) < len(self.procs):
            kind, wid, payload = self._next()
            if kind == "steps":
                yield from payload
            elif kind == "done":
                self.states.update(payload[0])
                self.logs[wid] = payload[1]
                done.add(wid)

    def collect(self) -> None:
        """Load the blocks the workers sent into the main process's model (for evaluation)
        and write their plugins' logs."""
        for t, sd in self.states.items():
            block = self.rule.net.blocks[t - 1]
            block.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
        for wid in sorted(self.logs):
            replay(self.rule.ctx.run, self.logs[wid])
        self.logs = {}

    def close(self) -> None:
        for q in self.cmd_qs:
            try:
                q.put(("stop", None))
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
