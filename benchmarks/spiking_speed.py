"""Spiking backend speed: bioplaus LIF MLP vs the same net written with snntorch.Leaky.

784-800-800-10 LIF MLP, T = 20, batch 128, forward + backward (BPTT, atan surrogate).
Both nets share weights and inputs; the script first checks that their spikes and
gradients agree, then times them side by side in one process.
Run: python benchmarks/spiking_speed.py [--T 20] [--batch 128] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import save, table, timeit  # noqa: E402
from bioplaus.config import NetworkConfig, SpikingConfig  # noqa: E402
from bioplaus.nets import build_net  # noqa: E402


def snntorch_net(ours, beta: float):  # noqa: ANN001, ANN201
    import snntorch as snn
    from torch import nn

    class Ref(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fcs = nn.ModuleList()
            self.lifs = nn.ModuleList()
            for layer in ours.layers:
                fc = nn.Linear(layer.synapse.in_features, layer.synapse.out_features, bias=False)
                fc.weight.data.copy_(layer.synapse.weight.data)
                self.fcs.append(fc)
                self.lifs.append(snn.Leaky(beta=beta, threshold=1.0, reset_mechanism="subtract"))

        def forward(self, x_seq: torch.Tensor):  # noqa: ANN201
            mems = [lif.init_leaky() for lif in self.lifs]
            spk_rec, mem_out = [], []
            for t in range(x_seq.shape[0]):
                h = x_seq[t]
                spks = []
                for i, (fc, lif) in enumerate(zip(self.fcs, self.lifs)):
                    h, mems[i] = lif(fc(h), mems[i])
                    spks.append(h)
                spk_rec.append(spks)
                mem_out.append(mems[-1])
            return spk_rec, torch.stack(mem_out)

    return Ref()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    T, B = args.T, args.batch
    cfg = NetworkConfig(backend="spiking", hidden=[800, 800], bias=False,
                        spiking=SpikingConfig(T=T, dt=1e-3, tau=5e-3, surrogate="atan"))
    net = build_net(cfg, (1, 28, 28), 10, seed=0)
    # Scale weights up so the hidden layers spike at a realistic rate (~10-20 %).
    with torch.no_grad():
        for la in net.layers:
            la.synapse.weight.mul_(3.0)
    beta = net.layers[0].neuron.params.beta
    ref = snntorch_net(net, beta)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (B,), generator=g)
    x_seq = x.flatten(1).expand(T, B, 784)

    def ours_step() -> None:
        net.zero_grad(set_to_none=True)
        logits = net(x)
        torch.nn.functional.cross_entropy(logits, y).backward()

    def ref_step() -> None:
        ref.zero_grad(set_to_none=True)
        _, mem = ref(x_seq)
        torch.nn.functional.cross_entropy(mem.mean(0), y).backward()

    # Equivalence: identical spikes in every layer and matching gradients.
    ours_step()
    spikes_ours = [la.state.out.detach() for la in net.layers]
    grads_ours = [la.synapse.weight.grad.clone() for la in net.layers]
    spk_rec, _ = ref(x_seq)
    ref.zero_grad(set_to_none=True)
    ref_step()
    same = all(
        torch.equal(torch.stack([spk_rec[t][i] for t in range(T)]).detach(), spikes_ours[i])
        for i in range(len(net.layers))
    )
    rel = max(
        float((go - fc.weight.grad).norm() / (fc.weight.grad.norm() + 1e-12))
        for go, fc in zip(grads_ours, ref.fcs)
    )
    rates = [float(s.mean()) for s in spikes_ours]
    print(f"identical spikes: {same}; max relative gradient difference: {rel:.2e}; rates {rates}")

    r_ours = timeit(ours_step, repeat=args.repeat)
    r_ref = timeit(ref_step, repeat=args.repeat)
    # The forward alone too.
    with torch.no_grad():
        f_ours = timeit(lambda: net(x), repeat=args.repeat)
        f_ref = timeit(lambda: ref(x_seq), repeat=args.repeat)
    # Spike-train input (Poisson-like, different every step): no hoisting possible.
    x_spk = (torch.rand(T, B, 784, generator=g) < x.flatten(1)).float()

    def ours_spk() -> None:
        net.zero_grad(set_to_none=True)
        h = x_spk
        for la in net.layers:
            h = la(h)
        torch.nn.functional.cross_entropy(net.readout(), y).backward()

    def ref_spk() -> None:
        ref.zero_grad(set_to_none=True)
        _, mem = ref(x_spk)
        torch.nn.functional.cross_entropy(mem.mean(0), y).backward()

    ours_spk()
    same_spk = torch.equal(net.layers[-1].state.out.detach(),
                           torch.stack([s[-1] for s in ref(x_spk)[0]]).detach())
    p_ours = timeit(ours_spk, repeat=args.repeat)
    p_ref = timeit(ref_spk, repeat=args.repeat)
    speedup = r_ref["median_s"] / r_ours["median_s"]
    rows = [
        {"impl": "bioplaus (batched synapse + LIF scan)", "fwd+bwd ms": 1e3 * r_ours["median_s"],
         "fwd ms": 1e3 * f_ours["median_s"]},
        {"impl": "snntorch.Leaky per-timestep loop", "fwd+bwd ms": 1e3 * r_ref["median_s"],
         "fwd ms": 1e3 * f_ref["median_s"]},
        {"impl": "bioplaus, spike-train input (no hoisting)", "fwd+bwd ms": 1e3 * p_ours["median_s"]},
        {"impl": "snntorch, spike-train input", "fwd+bwd ms": 1e3 * p_ref["median_s"]},
    ]
    text = (
        f"## Spiking backend speed: 784-800-800-10 LIF MLP, T={T}, batch {B}, CPU "
        f"{torch.get_num_threads()} threads\n\n"
        + table(rows, ["impl", "fwd+bwd ms", "fwd ms"])
        + f"\n\nspeed-up fwd+bwd: {speedup:.2f}x, fwd: {f_ref['median_s'] / f_ours['median_s']:.2f}x; "
        f"identical spikes: {same}; max relative weight-gradient difference {rel:.1e}; "
        f"spike rates per layer {[round(r, 3) for r in rates]}.\n"
        f"With a spike-train input (a different input every step, so the first synapse cannot "
        f"be hoisted): speed-up {p_ref['median_s'] / p_ours['median_s']:.2f}x, identical output "
        f"spikes: {same_spk}."
    )
    save("spiking_speed", {"T": T, "batch": B, "ours": r_ours, "snntorch": r_ref, "fwd_ours": f_ours,
                           "fwd_snntorch": f_ref, "speedup": speedup, "identical_spikes": same,
                           "max_rel_grad_diff": rel, "rates": rates, "spike_input_ours": p_ours,
                           "spike_input_snntorch": p_ref,
                           "spike_input_speedup": p_ref["median_s"] / p_ours["median_s"],
                           "spike_input_identical": same_spk}, text)


if __name__ == "__main__":
    main()
