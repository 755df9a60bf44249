"""NoProp-DT blocks trained in worker processes, each holding only its own blocks.

The workers are started once (``spawn``: no fork of a threaded parent) with the training
arrays (shared memory), the loader's seed and generator state, the rule's options and the
indices of their blocks. Per epoch the main process sends ``epoch``; each worker draws the
epoch's batch order from its copy of the loader's generator (the same order the main
process draws), trains its blocks one after another, streams (block, L2, accuracy) per
step and finally sends its blocks' state dicts, which the main process loads for
evaluation. Nothing but these messages passes between processes: block t's loss never
reaches another block, in any process.
"""

from __future__ import annotations

import os
import queue
import signal
import traceback
from functools import partial
from typing import Any

import numpy as np
import torch

from bioplaus.errors import RunError
from bioplaus.neurons.base import neuron_model

POLL_S = 2.0


def split_blocks(T: int, workers: int) -> list[list[int]]:
    """Blocks 1..T in ``workers`` contiguous, near-equal groups (no empty group)."""
    w = max(1, min(int(workers), T))
    edges = np.linspace(0, T, w + 1).round().astype(int)
    return [list(range(edges[i] + 1, edges[i + 1] + 1)) for i in range(w)]


def worker_main(spec: dict[str, Any], wid: int, held: list[int], cmd_q: Any, out_q: Any) -> None:
    """The loop of one worker process (see the module docstring)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles signals and stops us
    try:
        torch.set_num_threads(int(spec["threads"]))
        from bioplaus.rules.noprop import BlockUnit, NoProp, NoPropModel, epoch_batches
        from bioplaus.training.optim import clip_grad_norm, make_optimizer
        from neuro_data.loader import ArrayLoader

        rule = NoProp(spec["rule_cfg"])
        model = NoPropModel(rule.opts, spec["in_shape"], spec["n_classes"], spec["seed"], spec["spiking"], set(held))
        units = [BlockUnit(model, t, spec["seed"], partial(make_optimizer, rule.cfg)) for t in held]
        loader = ArrayLoader(spec["x"], spec["y"], spec["batch_size"], shuffle=True, seed=spec["loader_seed"])
        loader.generator.set_state(spec["loader_state"])
        clip = float(spec["rule_cfg"].clip)
        parent = os.getppid()
        while True:
            try:
                cmd = cmd_q.get(timeout=POLL_S)
            except queue.Empty:
                if os.getppid() != parent:
                    return
                continue
            if cmd == "stop":
                return
            batches = epoch_batches(loader)
            buf: list[tuple[int, float, float]] = []
            for u in units:
                for x, y in batches:
                    wl2, l2, logits = u.loss(x, y)
                    if not torch.isfinite(wl2):
                        raise RunError(f"block {u.t}: loss is {float(wl2)}: the run diverged")
                    u.opt.zero_grad(set_to_none=True)
                    wl2.backward()
                    if clip > 0:
                        clip_grad_norm(list(u.block.parameters()), clip)
                    u.opt.step()
                    u.opt.zero_grad(set_to_none=True)
                    buf.append((u.t, float(l2.detach()), float((logits.detach().argmax(1) == y).float().mean())))
                    if len(buf) >= 20:
                        out_q.put(("steps", wid, buf))
                        buf = []
            out_q.put(("steps", wid, buf))
            states = {u.t: {k: v.detach().cpu().numpy().copy() for k, v in u.block.state_dict().items()} for u in units}
            out_q.put(("done", wid, states))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        out_q.put(("error", wid, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"))


class BlockPool:
    """The worker processes of a ``parallel`` NoProp-DT rule."""

    def __init__(self, rule: Any, loader: Any) -> None:
        import torch.multiprocessing as mp

        from neuro_data.loader import ArrayLoader

        if not isinstance(loader, ArrayLoader):
            raise RunError("rule.mode = 'parallel' needs an in-memory training loader (ArrayLoader)")
        o = rule.opts
        self.groups = split_blocks(o.T, o.workers)
        net = rule.ctx.network
        spiking = None
        if net is not None and neuron_model(net.backend).temporal:
            from bioplaus.neurons.lif import LIFParams

            s = net.spiking
            spiking = (LIFParams(s.dt, s.tau, s.threshold, s.reset, s.surrogate, s.slope), s.T)
        spec = {
            "rule_cfg": rule.cfg,
            "in_shape": tuple(rule.net.in_shape),
            "n_classes": rule.net.n_classes,
            "seed": rule.ctx.seed,
            "spiking": spiking,
            "x": loader.x,
            "y": loader.y,
            "batch_size": loader.batch_size,
            "loader_seed": loader.seed,
            "loader_state": loader.generator.get_state(),
            "threads": 1,
        }
        ctx = mp.get_context("spawn")
        self.out_q = ctx.Queue()
        self.cmd_qs = [ctx.Queue() for _ in self.groups]
        self.procs = [
            ctx.Process(target=worker_main, args=(spec, w, g, self.cmd_qs[w], self.out_q), daemon=True)
            for w, g in enumerate(self.groups)
        ]
        for p in self.procs:
            p.start()
        self.rule = rule
        self.states: dict[int, dict[str, np.ndarray]] = {}

    def start_epoch(self) -> None:
        self.states = {}
        self.done: set[int] = set()
        for q in self.cmd_qs:
            q.put("epoch")

    def steps(self) -> Any:
        """(block, L2, accuracy) of each step as the workers report them, until all are done."""
        done = self.done  # on the pool: a second call (draining) continues where the first stopped
        while len(done) < len(self.procs):
            try:
                kind, wid, payload = self.out_q.get(timeout=POLL_S)
            except queue.Empty:
                dead = [w for w, p in enumerate(self.procs) if not p.is_alive() and w not in done]
                if dead:
                    raise RunError(f"NoProp worker {dead[0]} exited (code {self.procs[dead[0]].exitcode})") from None
                continue
            if kind == "error":
                raise RunError(f"NoProp worker {wid} failed: {payload.splitlines()[0]}")
            if kind == "steps":
                yield from payload
            elif kind == "done":
                self.states.update(payload)
                done.add(wid)

    def collect(self) -> None:
        """Load the blocks the workers sent into the main process's model (for evaluation)."""
        for t, sd in self.states.items():
            block = self.rule.net.blocks[t - 1]
            block.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})

    def close(self) -> None:
        for q in self.cmd_qs:
            try:
                q.put("stop")
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
