"""A generic Brian2 runner for discrete-time LIF networks (feed-forward or recurrent).

This module is the one place that builds Brian2 objects. It knows nothing of NIR, of
bioplaus nets or of data sets: it takes populations of LIF neurons, weight matrices between
them (recurrent ones included), external input as currents or spike trains, and returns the
recorded spikes, membranes and population rates as numpy arrays. `bioplaus simulate
GRAPH.nir --backend brian2` (`bioplaus.simulators.brian2`) and any other Brian2 twin (the
Hebbian / Hopfield network) are built on it.

API (stable)
------------
::

    from bioplaus.simulators.brian2_runner import Brian2Runner

    sim = Brian2Runner(dt=1e-3, mode="runtime")         # "runtime" (Cython) | "numpy" | "standalone"
    sim.add_population("h", 256, tau=5e-3, threshold=1.0, reset="subtract")
    sim.add_population("o", 10, tau=5e-3, threshold=None)        # None: leaky integrator, never fires
    sim.add_current_input("h", currents)                 # [steps, 256] added to v at each step
    sim.add_spike_input("x", spikes)                     # [steps, n_x] bool: a spike source "x"
    sim.connect("x", "h", W_xh)                          # W[post, pre]; spikes of pre at step n
    sim.connect("h", "h", W_hh)                          #   reach post at step n + 1 (recurrent ok)
    sim.connect("h", "o", W_ho)
    sim.record("h", spikes=True, v=True, rate=True)      # what to monitor
    res = sim.run(steps, reset_every=None)               # -> Brian2Result
    res.spikes["h"]      # (step, neuron) int64 arrays, step = Brian2 step index
    res.spike_raster("h")                                # bool [steps, n]
    res.spike_counts("h", shift=0, length=None)          # [windows, n] (one window without reset_every)
    res.shifted("h", shift, length)                      # bool [windows, length, n] from step shift of each window
    res.v["h"]           # [steps, n] membrane at the end of each step (before the reset)
    res.rate["h"]        # [steps] population rate in Hz
    res.wall_build, res.wall_run, res.wall_sim           # seconds (objects; run call; simulation only)

Dynamics (the discrete LIF of ``bioplaus.neurons.lif``, whose equations these are, per step n)::

    v ← v · exp(−dt/τ)          Brian2's exact integration of τ dv/dt = −v   (slot "groups")
    v ← v + I_n − θ r_n         reset = "subtract"  (r_n = spiked at step n − 1)
    v ← (1 − r_n) v + I_n       reset = "zero"      (applied after the decay, so β(1 − r) v)
    s_n = v > θ                 (slot "thresholds"); the reset only sets r (slot "resets")

so v_n = β v_{n−1} + I_n − θ r_n exactly as the torch backend (float64 here, float32 there).
``I_n`` sums the external current at step n and the synaptic input from spikes emitted at
step n − 1: Brian2 propagates a spike in the "synapses" slot, after every threshold of the
same step, so each projection carries a delay of exactly one step. A feed-forward chain of
L projections therefore shows layer l's spikes l steps later than a simulator that runs the
layers one after the other inside a step; `bioplaus.simulators.brian2` compensates by
running L extra steps and shifting layer l back by l (``Brian2Result.shifted``). A
recurrent network gets the synchronous update s_{n+1} = f(W s_n), which is what a
Hopfield-type twin wants.

``reset_every = S`` zeroes every population's state (v, r, pending input) at the start of
each window of S steps, so many samples run in one simulation (one build in standalone
mode): sample k occupies steps [kS, (k+1)S).

Modes: "runtime" generates Cython (compiled the first time, tens of seconds; then cached by Brian2 in
``~/.cython/brian_extensions``, never in the repository), "numpy" needs no compiler,
"standalone" writes, compiles and runs a C++ project in ``cache_dir`` (default
``~/.cache/bioplaus/brian2_standalone/<hash>``; a rebuild reuses its object files).
Standalone runs once per process by Brian2's design of its device; the runner resets the
device after each standalone run so that later runs in the same process work.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bioplaus.neurons.lif import LIFModel

MODES = ("runtime", "numpy", "standalone")
RESETS = ("subtract", "zero")


@dataclass
class _Pop:
    name: str
    n: int
    tau: float
    threshold: float | None
    reset: str
    currents: np.ndarray | None = None
    spikes: np.ndarray | None = None  # spike source only: [steps, n] bool


@dataclass
class _Proj:
    pre: str
    post: str
    weight: np.ndarray  # [n_post, n_pre]


def standalone_cache(signature: str) -> Path:
    """``~/.cache/bioplaus/brian2_standalone/<signature>`` (XDG_CACHE_HOME honoured)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bioplaus" / "brian2_standalone" / signature


@contextlib.contextmanager
def brian2_device(mode: str, dtype: str = "float64", directory: Path | None = None) -> Iterator[Callable[[], float | None]]:
    """Select Brian2's device for ``mode`` (module docstring) around building and running a
    network; yields ``finish()``, to call after ``Network.run``: standalone builds, compiles
    and runs the C++ project in ``directory`` and returns the binary's own run time (None in
    the runtime modes). The device is reset afterwards, so later runs in the process work."""
    import brian2 as b2

    if mode not in MODES:
        raise ValueError(f"mode: {mode!r}; valid: {', '.join(MODES)}")
    b2.prefs.core.default_float_dtype = getattr(np, dtype)
    if mode != "standalone":
        b2.set_device("runtime")
        b2.prefs.codegen.target = "cython" if mode == "runtime" else "numpy"
        yield lambda: None
        return
    d = Path(directory) if directory is not None else standalone_cache("default")
    d.mkdir(parents=True, exist_ok=True)
    b2.set_device("cpp_standalone", directory=str(d), build_on_run=False)

    def finish() -> float:
        b2.device.build(directory=str(d), compile=True, run=True, debug=False, clean=False)
        return float(getattr(b2.device, "_last_run_time", 0.0) or 0.0)

    try:
        yield finish
    finally:
        b2.device.reinit()
        b2.set_device("runtime")


@dataclass
class Brian2Result:
    """What a `Brian2Runner.run` recorded, as numpy arrays (steps are Brian2 step indices)."""

    dt: float
    steps: int
    sizes: dict[str, int]
    spikes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)
    rate: dict[str, np.ndarray] = field(default_factory=dict)
    reset_every: int | None = None
    wall_build: float = 0.0
    wall_run: float = 0.0  # runtime: code generation (cached after the first) + simulation
    wall_sim: float = 0.0  # the simulation alone (standalone: the C++ binary's own time)

    def spike_raster(self, pop: str) -> np.ndarray:
        """Spikes of ``pop`` as a bool array [steps, n]."""
        step, idx = self.spikes[pop]
        out = np.zeros((self.steps, self.sizes[pop]), dtype=bool)
        out[step, idx] = True
        return out

    def shifted(self, pop: str, shift: int, length: int) -> np.ndarray:
        """[windows, length, n] bool: each reset window of ``pop``'s raster from ``shift`` on.

        Without ``reset_every`` there is one window (the whole run). Used to undo the one-step
        delay per projection of a feed-forward chain (layer l: ``shift = l``).
        """
        ras = self.spike_raster(pop)
        win = self.reset_every or self.steps
        n_win = self.steps // win
        ras = ras[: n_win * win].reshape(n_win, win, -1)
        if shift + length > win:
            raise ValueError(f"{pop}: shift {shift} + length {length} exceeds the window of {win} steps")
        return ras[:, shift:shift + length]

    def spike_counts(self, pop: str, shift: int = 0, length: int | None = None) -> np.ndarray:
        """Spike counts [windows, n] of ``pop`` over steps [shift, shift + length) of each window."""
        win = self.reset_every or self.steps
        return self.shifted(pop, shift, win - shift if length is None else length).sum(1)


class Brian2Runner:
    """Populations of discrete-time LIF neurons and weight matrices, run in Brian2.

    See the module docstring for the dynamics, the one-step delay per projection and the
    modes. Methods return ``self`` so calls chain.
    """

    def __init__(self, dt: float, mode: str = "runtime", *, cache_dir: str | Path | None = None,
                 dtype: str = "float64") -> None:
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r}; valid: {', '.join(MODES)}")
        if not dt > 0:
            raise ValueError(f"dt must be > 0 s, got {dt}")
        self.dt = float(dt)
        self.mode = mode
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.dtype = dtype
        self._pops: dict[str, _Pop] = {}
        self._projs: list[_Proj] = []
        self._record: dict[str, dict[str, bool]] = {}

    # ------------------------------------------------------------------ building
    def add_population(self, name: str, n: int, *, tau: float, threshold: float | None = 1.0,
                       reset: str = "subtract") -> Brian2Runner:
        """``n`` LIF neurons, β = exp(−dt/τ); ``threshold=None`` makes a leaky integrator."""
        self._new_name(name)
        if reset not in RESETS:
            raise ValueError(f"{name}: reset {reset!r}; valid: {', '.join(RESETS)}")
        if not tau > 0 or n < 1:
            raise ValueError(f"{name}: need n >= 1 and tau > 0 (got n={n}, tau={tau})")
        self._pops[name] = _Pop(name, int(n), float(tau), None if threshold is None else float(threshold), reset)
        return self

    def add_current_input(self, pop: str, currents: np.ndarray) -> Brian2Runner:
        """External current [steps, n] added to ``pop``'s v at each step (before the threshold)."""
        p = self._get(pop)
        cur = np.asarray(currents, dtype=np.float64)
        if cur.ndim != 2 or cur.shape[1] != p.n:
            raise ValueError(f"{pop}: currents must be [steps, {p.n}], got {cur.shape}")
        p.currents = cur if p.currents is None else _add_padded(p.currents, cur)
        return self

    def add_spike_input(self, name: str, spikes: np.ndarray) -> Brian2Runner:
        """A spike source ``name`` emitting ``spikes`` [steps, n] (bool); connect it like a population."""
        self._new_name(name)
        s = np.asarray(spikes).astype(bool)
        if s.ndim != 2:
            raise ValueError(f"{name}: spikes must be [steps, n], got shape {s.shape}")
        self._pops[name] = _Pop(name, s.shape[1], 1.0, None, "zero", spikes=s)
        return self

    def connect(self, pre: str, post: str, weight: np.ndarray) -> Brian2Runner:
        """All-to-all synapses with ``weight`` [n_post, n_pre] (zeros are skipped); pre may be post."""
        a, b = self._get(pre), self._get(post)
        if b.spikes is not None:
            raise ValueError(f"{post}: a spike source takes no input")
        w = np.asarray(weight, dtype=np.float64)
        if w.shape != (b.n, a.n):
            raise ValueError(f"{pre} -> {post}: weight must be [{b.n}, {a.n}], got {w.shape}")
        self._projs.append(_Proj(pre, post, w))
        return self

    def record(self, pop: str, *, spikes: bool = True, v: bool = False, rate: bool = False) -> Brian2Runner:
        """Monitor ``pop``: spikes (SpikeMonitor), v (StateMonitor), rate (PopulationRateMonitor)."""
        self._get(pop)
        self._record[pop] = {"spikes": spikes, "v": v, "rate": rate}
        return self

    # ------------------------------------------------------------------ running
    def run(self, steps: int, *, reset_every: int | None = None) -> Brian2Result:
        """Simulate ``steps`` steps of dt; with ``reset_every`` zero all state every that many steps."""
        import brian2 as b2

        steps = int(steps)
        if steps < 1:
            raise ValueError("steps must be >= 1")
        if reset_every is not None and (reset_every < 1 or steps % reset_every):
            raise ValueError(f"reset_every={reset_every} must divide steps={steps}")
        t0 = time.perf_counter()
        standalone_dir = (self.cache_dir or standalone_cache(self._signature())) if self.mode == "standalone" else None
        with brian2_device(self.mode, self.dtype, standalone_dir) as finish:
            net, monitors = self._build(b2, steps, reset_every)
            t1 = time.perf_counter()
            net.run(steps * self.dt * b2.second, namespace={})
            sim_seconds = finish()
            t2 = time.perf_counter()
            res = self._collect(b2, monitors, steps, reset_every)
            res.wall_sim = sim_seconds if sim_seconds is not None else t2 - t1
        # standalone: wall_run includes generating, compiling and running the C++ project
        res.wall_build, res.wall_run = t1 - t0, t2 - t1
        return res

    # ------------------------------------------------------------------ internals
    def _new_name(self, name: str) -> None:
        if not name.isidentifier():
            raise ValueError(f"population name {name!r} must be an identifier")
        if name in self._pops:
            raise ValueError(f"population {name!r} exists")

    def _get(self, name: str) -> _Pop:
        if name not in self._pops:
            raise ValueError(f"no population {name!r}; have {', '.join(self._pops) or 'none'}")
        return self._pops[name]

    def _signature(self) -> str:
        text = repr(sorted((p.name, p.n, p.threshold is None, p.reset, p.spikes is not None, p.currents is not None)
                           for p in self._pops.values()))
        text += repr([(q.pre, q.post) for q in self._projs])
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def _build(self, b2, steps: int, reset_every: int | None):  # noqa: ANN001, ANN202
        dt = self.dt * b2.second
        clock = b2.Clock(dt, name="bioplaus_clock")  # one clock: Brian2's loop pays per clock
        objs: list = []
        groups: dict[str, object] = {}
        for p in self._pops.values():
            if p.spikes is not None:
                st, idx = np.nonzero(p.spikes[:steps])
                g = b2.SpikeGeneratorGroup(p.n, idx.astype(np.int64), st * dt, clock=clock, name=f"src_{p.name}")
                groups[p.name] = g
                objs.append(g)
                continue
            fires = p.threshold is not None
            inp = "I_syn" + (" + I_ext" if p.currents is not None else "")
            neuron = LIFModel.brian2(fires=fires, reset=p.reset, inputs=inp)
            eqs = neuron.equations
            namespace: dict[str, object] = {"theta": p.threshold if fires else 0.0}
            if p.currents is not None:
                eqs += "I_ext : 1\n"
                cur = np.zeros((steps, p.n))
                k = min(steps, p.currents.shape[0])
                cur[:k] = p.currents[:k]
                namespace[f"cur_{p.name}"] = b2.TimedArray(cur, dt=dt, name=f"cur_{p.name}")
            g = b2.NeuronGroup(
                p.n, eqs, method="exact", clock=clock, name=f"pop_{p.name}",
                threshold=neuron.threshold,
                reset=neuron.reset,
                namespace=namespace,
            )
            g.tau = p.tau * b2.second
            # After the exact decay (same slot, later order): input, then the delayed reset.
            code = neuron.step
            if p.currents is not None:
                code = f"I_ext = cur_{p.name}(t, i)\n" + code
            g.run_regularly(code, when="groups", order=1, name=f"step_{p.name}")
            if reset_every is not None:
                g.run_regularly(neuron.window, dt=reset_every * dt, when="start",
                                name=f"window_{p.name}")
            groups[p.name] = g
            objs.append(g)
        for k, q in enumerate(self._projs):
            post, pre = np.nonzero(q.weight)
            s = b2.Synapses(groups[q.pre], groups[q.post], "w : 1", on_pre="I_syn_post += w",
                            clock=clock, name=f"proj{k}_{q.pre}_{q.post}")
            s.connect(i=pre.astype(np.int64), j=post.astype(np.int64))
            s.w = q.weight[post, pre]
            objs.append(s)
        monitors: dict[str, dict[str, object]] = {}
        for name, what in self._record.items():
            g = groups[name]
            m: dict[str, object] = {}
            fires = self._pops[name].spikes is not None or self._pops[name].threshold is not None
            if what["spikes"] and fires:
                m["spikes"] = b2.SpikeMonitor(g, name=f"spk_{name}")
            if what["v"] and self._pops[name].spikes is None:
                m["v"] = b2.StateMonitor(g, "v", record=True, when="thresholds", order=-1, name=f"v_{name}", clock=clock)
            if what["rate"]:
                m["rate"] = b2.PopulationRateMonitor(g, name=f"rate_{name}")
            objs.extend(m.values())
            monitors[name] = m
        return b2.Network(*objs), monitors

    def _collect(self, b2, monitors, steps: int, reset_every: int | None) -> Brian2Result:  # noqa: ANN001
        res = Brian2Result(self.dt, steps, {k: p.n for k, p in self._pops.items()}, reset_every=reset_every)
        for name, m in monitors.items():
            if "spikes" not in m:  # a leaky integrator never fires
                res.spikes[name] = (np.zeros(0, np.int64), np.zeros(0, np.int64))
            else:
                sm = m["spikes"]
                step = np.rint(np.asarray(sm.t_[:]) / self.dt).astype(np.int64)
                res.spikes[name] = (step, np.asarray(sm.i[:], dtype=np.int64))
            if "v" in m:
                res.v[name] = np.asarray(m["v"].v[:]).T.copy()
            if "rate" in m:
                res.rate[name] = np.asarray(m["rate"].rate_[:]).copy()
        return res


def _add_padded(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = max(len(a), len(b))
    out = np.zeros((n, a.shape[1]))
    out[: len(a)] += a
    out[: len(b)] += b
    return out
