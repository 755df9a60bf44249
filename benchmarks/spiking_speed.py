"""Spiking backend speed: a bioplaus LIF MLP vs snntorch, Norse and SpikingJelly, and scaling.

784-800-800-10 LIF MLP, T = 20, batch 128, forward + backward (BPTT), CPU, one process.
Every implementation gets the same weights and inputs; the repeats are interleaved (one
call of each implementation in turn), so load from other processes hits all of them alike
and the ratios hold even when the absolute times move.

Peers (each skipped cleanly when not installed; ``pip install -e .[bench]``):

- snntorch ``Leaky`` in a per-step loop: the same dynamics as bioplaus (β = exp(-dt/τ),
  subtract reset delayed by one step, fires at v > θ); spikes must be identical.
- Norse 1.1 ``LIFBoxCell`` (leaky integrate-and-fire without a synaptic current), three ways:
  a per-step Python loop, layer by layer (a batched ``Linear`` over all steps, then the
  ``Lift``-ed cell over time; "norse lifted"), and the per-step function under ``torch.compile``. Norse's Euler step is
  v ← v + dt/τ (I − v), i.e. decay 1 − dt/τ = 0.8 instead of exp(−0.2) = 0.819, and an input
  scaled by dt/τ; its Linear weights are multiplied by τ/dt so the current is the same W·x.
  It resets to 0 at once (not by subtraction one step later), so the spikes differ.
- SpikingJelly 2.0 ``LIFNode`` (decay_input=False, soft reset, τ_SJ = 1/(1 − β) so the decay
  equals β), multi-step (``step_mode="m"``) and single-step in a loop. It resets before the
  next decay and fires at v ≥ θ, so the spikes differ slightly.

Inputs: "constant" feeds the same image on every step (direct encoding: bioplaus runs the
first synapse once); "spike train" feeds a different 0/1 image on every step.

Scaling (``--scaling``, on by default): time per step as T, width and batch grow, one axis at
a time around the base point, spike-train input, bioplaus vs snntorch, Norse (lifted)
and SpikingJelly (multi-step); a table and ``results/spiking_scaling.png``.

Run: python benchmarks/spiking_speed.py [--quick] [--repeat 5] [--no-scaling] [--threads 1]
(`BIOPLAUS_SPIKE_GEMM=fp32|lutportable|lut256|lut512|bf16x3` forces a spike-synapse path;
`benchmarks/spiking_speed_isa.py` runs it once per path)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import OUT, machine, save, table  # noqa: E402
from bioplaus.config import NetworkConfig, SpikingConfig  # noqa: E402
from bioplaus.nets import build_net  # noqa: E402
from bioplaus.neurons import synapses  # noqa: E402

DT, TAU = 1e-3, 5e-3
F = torch.nn.functional


# ----------------------------------------------------------------------------- timing
def interleaved(fns: dict[str, Callable[[], Any]], repeat: int, warmup: int = 1,
                budget_s: float = math.inf) -> dict[str, dict[str, float]]:
    """Median wall time of each fn, the repeats taken in turn.

    A peer (any fn but "bioplaus") whose warm-up call takes longer than budget_s is dropped.
    """
    alive = dict(fns)
    for name, fn in list(alive.items()):
        for _ in range(warmup):
            t0 = time.perf_counter()
            fn()
            if name != "bioplaus" and time.perf_counter() - t0 > budget_s:
                alive.pop(name)
                break
    ts: dict[str, list[float]] = {n: [] for n in alive}
    for _ in range(repeat):
        for name, fn in alive.items():
            t0 = time.perf_counter()
            fn()
            ts[name].append(time.perf_counter() - t0)
    return {n: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "n": len(v)}
            for n, v in ts.items()}


# ----------------------------------------------------------------------------- the nets
def bioplaus_net(width: int, T: int, device: str = "cpu"):  # noqa: ANN201
    cfg = NetworkConfig(backend="spiking", hidden=[width, width], bias=False,
                        spiking=SpikingConfig(T=T, dt=DT, tau=TAU, surrogate="atan"))
    net = build_net(cfg, (1, 28, 28), 10, seed=0)
    # Scale weights up so the hidden layers spike at a realistic rate (~10-25 %).
    with torch.no_grad():
        for la in net.layers:
            la.synapse.weight.mul_(3.0)
    return net.to(device)


def weights(net) -> list[torch.Tensor]:  # noqa: ANN001
    return [la.synapse.weight.detach() for la in net.layers]


def linear(w: torch.Tensor, scale: float = 1.0, cls: type = nn.Linear, **kw: Any) -> nn.Module:
    fc = cls(w.shape[1], w.shape[0], bias=False, **kw)
    fc.weight.data.copy_(w * scale)
    return fc.to(w.device)


class SnnTorchNet(nn.Module):
    """snntorch.Leaky per-step loop: the reference dynamics (identical spikes expected)."""

    def __init__(self, ws: list[torch.Tensor], beta: float) -> None:
        super().__init__()
        import snntorch as snn

        self.fcs = nn.ModuleList(linear(w) for w in ws)
        self.lifs = nn.ModuleList(snn.Leaky(beta=beta, threshold=1.0, reset_mechanism="subtract")
                                  for _ in ws)

    def forward(self, x_seq: torch.Tensor):  # noqa: ANN201
        mems = [lif.init_leaky() for lif in self.lifs]
        spk, mem_out = [], []
        for t in range(x_seq.shape[0]):
            h = x_seq[t]
            hs = []
            for i, (fc, lif) in enumerate(zip(self.fcs, self.lifs)):
                h, mems[i] = lif(fc(h), mems[i])
                hs.append(h)
            spk.append(hs)
            mem_out.append(mems[-1])
        hidden = [torch.stack([s[i] for s in spk]) for i in range(len(self.fcs) - 1)]
        return hidden, torch.stack(mem_out)


def _norse_cell(out: bool) -> nn.Module:
    """LIFBoxCell for hidden layers; the output layer integrates without firing (LIBoxCell)."""
    import norse.torch as nt

    if out:
        return nt.LIBoxCell(nt.LIBoxParameters(tau_mem_inv=torch.tensor(1 / TAU)), dt=DT)
    return nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=torch.tensor(1 / TAU)), dt=DT)


class NorseLoop(nn.Module):
    """Norse LIFBoxCell, per-step loop over t and layers (optionally compiled per step)."""

    def __init__(self, ws: list[torch.Tensor], compiled: bool = False) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(linear(w, TAU / DT) for w in ws)
        self.cells = nn.ModuleList(_norse_cell(i == len(ws) - 1) for i in range(len(ws)))
        self.step = torch.compile(self._step, dynamic=False) if compiled else self._step

    def _step(self, x: torch.Tensor, states: list):  # noqa: ANN202
        out, new = [], []
        h = x
        for fc, cell, s in zip(self.fcs, self.cells, states):
            h, s = cell(fc(h), s)
            out.append(h)
            new.append(s)
        return out, new

    def forward(self, x_seq: torch.Tensor):  # noqa: ANN201
        states: list = [None] * len(self.fcs)
        spk, mem = [], []
        for t in range(x_seq.shape[0]):
            out, states = self.step(x_seq[t], states)
            spk.append(out)
            mem.append(out[-1])  # the output cell returns its membrane
        hidden = [torch.stack([s[i] for s in spk]) for i in range(len(self.fcs) - 1)]
        return hidden, torch.stack(mem)


class NorseSequential(nn.Module):
    """Norse layer by layer: a batched Linear over all T steps, then ``Lift(LIFBoxCell)`` over time.

    (``SequentialState`` does not treat ``Lift`` as stateful in Norse 1.1 and passes its
    (output, state) tuple on, so the same chain is written out here.)
    """

    def __init__(self, ws: list[torch.Tensor]) -> None:
        super().__init__()
        import norse.torch as nt

        self.fcs = nn.ModuleList(linear(w, TAU / DT) for w in ws)
        self.cells = nn.ModuleList(nt.Lift(_norse_cell(i == len(ws) - 1)) for i in range(len(ws)))

    def forward(self, x_seq: torch.Tensor):  # noqa: ANN201
        h = x_seq
        hidden = []
        for fc, cell in zip(self.fcs, self.cells):
            h, _ = cell(fc(h))
            hidden.append(h)
        return hidden[:-1], hidden[-1]


class SJNet(nn.Module):
    """SpikingJelly 2.0 LIFNode, multi-step (``m``) or single-step loop (``s``)."""

    def __init__(self, ws: list[torch.Tensor], beta: float, mode: str) -> None:
        super().__init__()
        from spikingjelly.activation_based import layer, neuron, surrogate

        self.mode = mode
        mods: list[nn.Module] = []
        for i, w in enumerate(ws):
            last = i == len(ws) - 1
            mods += [linear(w, cls=layer.Linear, step_mode=mode),
                     neuron.LIFNode(tau=1 / (1 - beta), decay_input=False,
                                    v_threshold=1e9 if last else 1.0, v_reset=None,
                                    surrogate_function=surrogate.ATan(), step_mode=mode,
                                    store_v_seq=last)]
        self.net = nn.Sequential(*mods)

    def forward(self, x_seq: torch.Tensor):  # noqa: ANN201
        from spikingjelly.activation_based import functional

        functional.reset_net(self.net)
        if self.mode == "m":
            h = x_seq
            hidden = []
            for i, m in enumerate(self.net):
                h = m(h)
                if i in (1, 3):
                    hidden.append(h)
            return hidden, self.net[-1].v_seq
        outs: list[list[torch.Tensor]] = [[], []]
        mem = []
        for t in range(x_seq.shape[0]):
            h = x_seq[t]
            for i, m in enumerate(self.net):
                h = m(h)
                if i in (1, 3):
                    outs[i // 2].append(h)
            mem.append(self.net[-1].v)
        return [torch.stack(o) for o in outs], torch.stack(mem)


PEERS: dict[str, tuple[str, Callable[..., nn.Module]]] = {
    "snntorch": ("snntorch", lambda ws, beta: SnnTorchNet(ws, beta)),
    "norse loop": ("norse", lambda ws, beta: NorseLoop(ws)),
    "norse lifted": ("norse", lambda ws, beta: NorseSequential(ws)),
    "norse compiled step": ("norse", lambda ws, beta: NorseLoop(ws, compiled=True)),
    "spikingjelly multi-step": ("spikingjelly", lambda ws, beta: SJNet(ws, beta, "m")),
    "spikingjelly single-step": ("spikingjelly", lambda ws, beta: SJNet(ws, beta, "s")),
}


def available(module: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            __import__(module)
        return True
    except Exception:  # not installed, or broken against this torch
        return False


def build_peers(names: list[str], ws: list[torch.Tensor], beta: float) -> dict[str, nn.Module]:
    out = {}
    for name in names:
        mod, make = PEERS[name]
        if not available(mod):
            print(f"[skip] {name}: {mod} not installed (pip install -e .[bench])")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[name] = make(ws, beta)
        except Exception as e:  # a peer's API changed: skip it, say why
            print(f"[skip] {name}: {type(e).__name__}: {e}")
    return out


# ----------------------------------------------------------------------------- one point
def steps(net, peers: dict[str, nn.Module], x: torch.Tensor, x_seq: torch.Tensor,  # noqa: ANN001
          y: torch.Tensor, constant: bool) -> dict[str, Callable[[], None]]:
    """fwd+bwd closures; ``x_seq`` is the time-major input ([T, B, 784], stride 0 when constant)."""

    def ours() -> None:
        net.zero_grad(set_to_none=True)
        if constant:
            logits = net(x)
        else:
            h = x_seq
            for la in net.layers:
                h = la(h)
            logits = net.readout()
        F.cross_entropy(logits, y).backward()

    fns: dict[str, Callable[[], None]] = {"bioplaus": ours}
    for name, peer in peers.items():
        def step(peer: nn.Module = peer) -> None:
            peer.zero_grad(set_to_none=True)
            _, mem = peer(x_seq)
            F.cross_entropy(mem.mean(0), y).backward()

        fns[name] = step
    if x.device.type == "cuda":  # time the kernels, not their launch
        def synced(fn: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                fn()
                torch.cuda.synchronize()
            return run

        fns = {n: synced(f) for n, f in fns.items()}
    return fns


def inputs(T: int, B: int, device: str, seed: int = 0):  # noqa: ANN201
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (B,), generator=g)
    x_spk = (torch.rand(T, B, 784, generator=g) < x.flatten(1)).float()
    return x.to(device), y.to(device), x_spk.to(device)


def spike_agreement(net, peers: dict[str, nn.Module], x_seq: torch.Tensor) -> dict[str, dict]:  # noqa: ANN001
    """Per peer: fraction of hidden spikes that differ from bioplaus, and the peers' rates."""
    with torch.no_grad():
        h = x_seq
        for la in net.layers:
            h = la(h)
        ours = [la.state.out for la in net.layers[:-1]]
        res = {"bioplaus": {"rates": [round(float(s.mean()), 4) for s in ours]}}
        for name, peer in peers.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hidden, _ = peer(x_seq)
            res[name] = {
                "identical": all(torch.equal(a, b) for a, b in zip(ours, hidden)),
                "differing_frac": [round(float((a != b).float().mean()), 4) for a, b in zip(ours, hidden)],
                "differing": [int((a != b).sum()) for a, b in zip(ours, hidden)],
                "rates": [round(float(b.float().mean()), 4) for b in hidden],
                "n": [int(b.numel()) for b in hidden],
            }
    return res


def grad_check(net, peer: nn.Module, x_seq: torch.Tensor, y: torch.Tensor) -> float:  # noqa: ANN001
    """Max relative weight-gradient difference bioplaus vs snntorch (same dynamics)."""
    net.zero_grad(set_to_none=True)
    h = x_seq
    for la in net.layers:
        h = la(h)
    F.cross_entropy(net.readout(), y).backward()
    peer.zero_grad(set_to_none=True)
    _, mem = peer(x_seq)
    F.cross_entropy(mem.mean(0), y).backward()
    return max(float((la.synapse.weight.grad - fc.weight.grad).norm() / (fc.weight.grad.norm() + 1e-12))
               for la, fc in zip(net.layers, peer.fcs))


def base_point(width: int, T: int, B: int, peer_names: list[str], repeat: int, device: str,
               cases: tuple[str, ...] = ("constant", "spike train")) -> dict[str, Any]:
    net = bioplaus_net(width, T, device)
    beta = net.layers[0].neuron.params.beta
    peers = build_peers(peer_names, [w.to(device) for w in weights(net)], beta)
    x, y, x_spk = inputs(T, B, device)
    x_const = x.flatten(1).expand(T, B, 784)
    out: dict[str, Any] = {"width": width, "T": T, "batch": B, "device": device}
    out["agreement"] = {c: spike_agreement(net, peers, xs)
                        for c, xs in (("constant", x_const), ("spike train", x_spk)) if c in cases}
    if "snntorch" in peers:
        out["max_rel_grad_diff_snntorch"] = grad_check(net, peers["snntorch"], x_spk, y)
    for case in cases:
        xs = x_const if case == "constant" else x_spk
        fns = steps(net, peers, x, xs, y, case == "constant")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[case] = interleaved(fns, repeat, warmup=2)
    return out


def ratio_rows(res: dict[str, Any], cases: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    names = list(res[cases[0]].keys())
    for name in names:
        row: dict[str, Any] = {"impl": name}
        for case in cases:
            r = res[case].get(name)
            if r is None:
                continue
            ms = 1e3 * r["median_s"]
            row[f"{case} ms"] = ms
            row[f"{case}: x bioplaus"] = r["median_s"] / res[case]["bioplaus"]["median_s"]
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- scaling
BASE = {"T": 20, "width": 800, "batch": 128}
AXES = {"T": [5, 10, 20, 50, 100], "width": [256, 512, 800, 1024, 2048, 4096],
        "batch": [32, 64, 128, 256, 512, 1024]}
QUICK_AXES = {"T": [5, 20], "width": [256, 800], "batch": [32, 128]}
SCALING_PEERS = ["snntorch", "norse lifted", "spikingjelly multi-step"]


def scaling(axes: dict[str, list[int]], repeat: int, budget_s: float, device: str) -> list[dict[str, Any]]:
    """Spike-train input; a peer whose warm-up step exceeds budget_s is dropped for larger points."""
    rows = []
    for axis, values in axes.items():
        dropped: set[str] = set()
        for v in values:
            p = dict(BASE, **{axis: v})
            net = bioplaus_net(p["width"], p["T"], device)
            beta = net.layers[0].neuron.params.beta
            names = [n for n in SCALING_PEERS if n not in dropped]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                peers = build_peers(names, weights(net), beta)
            x, y, x_spk = inputs(p["T"], p["batch"], device)
            fns = steps(net, peers, x, x_spk, y, constant=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = interleaved(fns, repeat, warmup=1, budget_s=budget_s)
            for n in names:
                if n in peers and n not in r:
                    dropped.add(n)
            row: dict[str, Any] = {"axis": axis, "value": v}
            for n in ["bioplaus", *SCALING_PEERS]:
                row[n] = 1e3 * r[n]["median_s"] if n in r else "—"
            rows.append(row)
            print(f"  {axis}={v}: " + ", ".join(f"{n} {ms:.0f} ms" for n, ms in row.items()
                                                 if n not in ("axis", "value") and isinstance(ms, float)))
    return rows


def scaling_figure(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("[skip] figure: matplotlib not installed")
        return False
    axes = list(dict.fromkeys(r["axis"] for r in rows))
    fig, axs = plt.subplots(1, len(axes), figsize=(4.2 * len(axes), 3.6))
    for ax, axis in zip(axs, axes):
        pts = [r for r in rows if r["axis"] == axis]
        for n in ["bioplaus", *SCALING_PEERS]:
            xy = [(r["value"], r[n]) for r in pts if isinstance(r.get(n), float)]
            if xy:
                ax.plot(*zip(*xy), marker="o", label=n)
        ax.set_xscale("log")
        ax.set_yscale("log")
        vals = [r["value"] for r in pts]
        ax.set_xticks(vals, [str(v) for v in vals], fontsize=7)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel({"T": "time steps T", "width": "hidden width", "batch": "batch"}[axis])
        ax.set_ylabel("fwd+bwd ms")
        ax.grid(True, which="both", alpha=0.3)
    axs[0].legend(fontsize=8)
    fig.suptitle("LIF MLP 784-w-w-10, spike-train input, fwd+bwd, CPU "
                 f"{torch.get_num_threads()} thread(s); base T=20, w=800, batch 128", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- breakdown
OP_NAMES = {
    "aten::mm": "float32 GEMMs (dX = g·W, the output layer, a real-valued input's synapse)",
    "_SpikeLinear": "spike-fed synapse forward (bf16 split on AMX, or table lookup), with packing",
    "_SpikeLinearBackward": "spike-fed synapse dW (bf16 split, or table lookup), without its dX GEMM",
    "_LIFScan": "LIF scan forward (C++)",
    "_LIFScanBackward": "LIF adjoint scan (C++)",
    "aten::copy_": "copies (transposes)",
}


def breakdown(T: int, B: int, steps_n: int = 5) -> dict[str, list[tuple[str, float]]]:
    """torch.profiler self CPU time per step of bioplaus's fwd+bwd, by op, for both inputs."""
    from torch.profiler import ProfilerActivity, profile

    net = bioplaus_net(800, T)
    x, y, x_spk = inputs(T, B, "cpu")
    out = {}
    for case in ("constant", "spike train"):
        xs = x.flatten(1).expand(T, B, 784) if case == "constant" else x_spk
        fn = steps(net, {}, x, xs, y, case == "constant")["bioplaus"]
        wall = interleaved({"bioplaus": fn}, steps_n, warmup=2)["bioplaus"]["median_s"]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps_n):
                fn()
        ops = sorted(((e.key, e.self_cpu_time_total / 1e3 / steps_n) for e in prof.key_averages()),
                     key=lambda kv: -kv[1])
        total = sum(ms for _, ms in ops)
        rows = [(k, ms) for k, ms in ops if k in OP_NAMES]
        rows.append(("other", total - sum(ms for _, ms in rows)))
        rows.append(("sum of the above", total))
        rows.append(("wall time per step (not profiled)", 1e3 * wall))
        out[case] = rows
    return out


def breakdown_text(bd: dict[str, list[tuple[str, float]]]) -> str:
    rows = []
    for case, items in bd.items():
        for k, ms in items:
            rows.append({"input": case, "op": k, "what": OP_NAMES.get(k, ""), "ms per step": ms})
    return ("## Where bioplaus's time goes (torch.profiler, self CPU time per fwd+bwd step)\n\n"
            + table(rows, ["input", "op", "what", "ms per step"]) + "\n")


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    ap.add_argument("--quick", action="store_true", help="smoke check: 2 repeats, few points, no files")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--no-wide", action="store_true", help="skip the width-2048 point")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the profiler breakdown")
    ap.add_argument("--name", default="spiking_speed",
                    help="results/<name>.{md,json} (another machine's figures beside the default ones)")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of: " + ", ".join(PEERS))
    ap.add_argument("--devices", default="",
                    help="comma-separated: cpu, cuda (default: cpu, and cuda when a GPU is present); "
                    "scaling and breakdown are CPU figures")
    ap.add_argument("--budget", type=float, default=4.0,
                    help="scaling: drop a peer once one step takes longer than this (s)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peer_names = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(peer_names) - set(PEERS)
    if unknown:
        ap.error(f"--peers: unknown {sorted(unknown)}")
    repeat = 2 if args.quick else args.repeat
    T, B = args.T, args.batch
    cases = ("constant", "spike train")
    gemm = {"bf16x3": "exact bf16 split on AMX", "lut512": "exact table lookup (AVX-512)",
            "lut256": "exact table lookup (AVX2)", "lutportable": "exact table lookup (portable C++)",
            "fp32": "float32"}[synapses.spike_gemm_mode()]
    print(f"bioplaus spike-fed synapses: {gemm}; threads {torch.get_num_threads()}")
    load_before = os.getloadavg()

    results: dict[str, Any] = {"T": T, "batch": B, "spike_gemm": gemm}
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] or (
        ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    if set(devices) - {"cpu", "cuda"}:
        ap.error(f"--devices: unknown {sorted(set(devices) - {'cpu', 'cuda'})}")
    text = ""
    for device in devices:
        try:
            res = base_point(800, T, B, peer_names, repeat, device)
        except Exception as e:  # the GPU figures are extra: never lose the CPU ones to them
            if device == "cpu":
                raise
            print(f"[skip] {device} figures: {type(e).__name__}: {e}")
            continue
        results[f"base_{device}"] = res
        rows = ratio_rows(res, cases)
        cols = ["impl"] + [c for case in cases for c in (f"{case} ms", f"{case}: x bioplaus")]
        text += (f"## LIF MLP 784-800-800-10, T={T}, batch {B}, fwd+bwd, {device}"
                 f"{'' if device != 'cpu' else f', {torch.get_num_threads()} thread(s)'}\n\n"
                 + table(rows, cols) + "\n\n" + agreement_text(res) + "\n\n")
        if not args.no_wide and not args.quick:
            try:
                wide = base_point(2048, T, B, peer_names, max(2, repeat // 2), device)
            except Exception as e:
                if device == "cpu":
                    raise
                print(f"[skip] {device} width 2048: {type(e).__name__}: {e}")
                continue
            results[f"wide_{device}"] = wide
            text += (f"### width 2048 (784-2048-2048-10), {device}\n\n"
                     + table(ratio_rows(wide, cases), cols) + "\n\n" + agreement_text(wide) + "\n\n")
    forced = os.environ.get("BIOPLAUS_SPIKE_GEMM")
    command = (f"{f'BIOPLAUS_SPIKE_GEMM={forced} ' if forced else ''}python benchmarks/spiking_speed.py "
               + " ".join(sys.argv[1:])).strip()
    results["command"] = command
    text += ("`x bioplaus` = the implementation's time / bioplaus's time (higher is better for "
             f"bioplaus). Repeats interleaved, medians. Command: `{command}`; spike-fed synapses: {gemm}; "
             f"load average before: {tuple(round(x, 2) for x in load_before)}, after: "
             f"{tuple(round(x, 2) for x in os.getloadavg())}.\n")

    if not args.no_breakdown:
        bd = breakdown(T, B, 2 if args.quick else 5)
        results["breakdown"] = bd
        text += "\n" + breakdown_text(bd)

    if not args.no_scaling:
        axes = QUICK_AXES if args.quick else AXES
        print("scaling (spike-train input):")
        srows = scaling(axes, 1 if args.quick else max(2, repeat // 2), args.budget, "cpu")
        results["scaling"] = srows
        cols = ["axis", "value", "bioplaus", *SCALING_PEERS]
        stext = ("\n## Scaling: fwd+bwd ms, spike-train input, one axis at a time around "
                 "T=20, width 800, batch 128\n\n" + table(srows, cols)
                 + f"\n\n—: the peer's warm-up step exceeded {args.budget:.0f} s at this or a smaller point "
                 "of that axis and it was not timed further (keeps the run short).\n")
        fig = "spiking_scaling.png" if args.name == "spiking_speed" else f"{args.name}_scaling.png"
        if not args.quick and scaling_figure(srows, OUT / fig):
            stext += f"\n![scaling]({fig})\n"
        text += stext
    if args.quick:
        print(text)
        return
    m = machine()
    text += (f"\nMachine: {m['cpu']} ({m['cpus']} cores), AMX {'yes' if m['amx'] else 'no'}, "
             f"torch {m['torch']}, {m['threads']} thread(s).\n")
    save(args.name, results, text)


def agreement_text(res: dict[str, Any]) -> str:
    lines = []
    for case, ag in res["agreement"].items():
        parts = [f"bioplaus rates {ag['bioplaus']['rates']}"]
        for n, a in ag.items():
            if n == "bioplaus":
                continue
            diff = (f"differing {a['differing_frac']}" if max(a["differing_frac"]) >= 1e-4
                    else f"{a['differing']} of {a['n'][0]} per layer differ")
            parts.append(f"{n}: {'identical' if a['identical'] else diff}"
                         f" (rates {a['rates']})")
        lines.append(f"- hidden spikes vs bioplaus, {case} input: " + "; ".join(parts))
    if "max_rel_grad_diff_snntorch" in res:
        lines.append(f"- max relative weight-gradient difference vs snntorch: "
                     f"{res['max_rel_grad_diff_snntorch']:.1e}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
