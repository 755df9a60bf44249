"""Neuron models: LIF dynamics against hand-computed values and snntorch, kernel vs torch scan."""

from __future__ import annotations

import math

import pytest
import torch

from bioplaus.config import NetworkConfig, SpikingConfig
from bioplaus.errors import ConfigError
from bioplaus.nets import build_net
from bioplaus.neurons import kernel as kmod
from bioplaus.neurons import lif, surrogates, synapses
from bioplaus.neurons.lif import LIFParams, lif_scan, lif_step


def test_lif_golden_values_subtract() -> None:
    """β = 0.5, θ = 1, constant input 0.6: v = 0.6, 0.9, 1.05 (spike), 0.125, 0.6625, ..."""
    p = LIFParams(dt=1.0, tau=1 / math.log(2), threshold=1.0, reset="subtract")
    assert p.beta == pytest.approx(0.5)
    spk, mem = lif_scan(torch.full((5, 1, 1), 0.6), p)
    expect_v = [0.6, 0.9, 1.05, 0.5 * 1.05 + 0.6 - 1.0, 0.5 * 0.125 + 0.6]
    assert mem.flatten().tolist() == pytest.approx(expect_v, abs=1e-6)
    assert spk.flatten().tolist() == [0, 0, 1, 0, 0]


def test_lif_golden_values_zero_reset() -> None:
    p = LIFParams(dt=1.0, tau=1 / math.log(2), threshold=1.0, reset="zero")
    spk, mem = lif_scan(torch.full((5, 1, 1), 0.6), p)
    # after the spike at t=2 the old membrane is dropped: v_3 = 0 + 0.6
    assert mem.flatten().tolist() == pytest.approx([0.6, 0.9, 1.05, 0.6, 0.9], abs=1e-6)
    assert spk.flatten().tolist() == [0, 0, 1, 0, 0]


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("impl", ["kernel", "torch"])
def test_scan_matches_snntorch_exactly(reset: str, impl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Identical spikes and membranes, and the same gradients, as snntorch.Leaky (atan)."""
    snn = pytest.importorskip("snntorch")
    if impl == "torch":
        monkeypatch.setattr(lif, "_use_kernel", lambda x: None)
    elif kmod.kernel() is None:
        pytest.skip("compiled LIF kernel unavailable on this machine")
    g = torch.Generator().manual_seed(1)
    T, B, N = 25, 8, 40
    p = LIFParams(dt=1e-3, tau=4e-3, threshold=1.0, reset=reset)
    cur = (torch.randn(T, B, N, generator=g) * 0.7 + 0.35).requires_grad_()
    w = torch.randn(T, B, N, generator=g)
    spk, mem = lif_scan(cur, p)
    ((spk * w).sum() + 0.1 * (mem * w).sum()).backward()
    g_ours = cur.grad.clone()
    cur.grad = None
    leaky = snn.Leaky(beta=p.beta, threshold=1.0, reset_mechanism=reset)
    m = leaky.init_leaky()
    ss, mm = [], []
    for t in range(T):
        s, m = leaky(cur[t], m)
        ss.append(s)
        mm.append(m)
    S, M = torch.stack(ss), torch.stack(mm)
    ((S * w).sum() + 0.1 * (M * w).sum()).backward()
    assert torch.equal(S.detach(), spk.detach())
    assert torch.allclose(M.detach(), mem.detach(), atol=1e-6)
    assert torch.allclose(cur.grad, g_ours, atol=1e-5, rtol=1e-4)
    assert 0.05 < float(spk.detach().mean()) < 0.6  # the test exercises spikes and resets


def test_scan_matches_step_reference() -> None:
    p = LIFParams(reset="subtract")
    cur = torch.rand(12, 3, 7) * 0.8
    spk, mem = lif_scan(cur, p)
    v = torch.zeros(3, 7)
    s = torch.zeros(3, 7)
    for t in range(12):
        s, v = lif_step(cur[t], v, s, p)
        assert torch.equal(s, spk[t])
        assert torch.allclose(v, mem[t], atol=1e-6)


@pytest.mark.parametrize("surrogate", ["atan", "fast_sigmoid", "sigmoid", "triangle"])
def test_surrogate_gradient_kernel_equals_torch(surrogate: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if kmod.kernel() is None:
        pytest.skip("compiled LIF kernel unavailable")
    p = LIFParams(surrogate=surrogate, reset="zero")
    cur = (torch.randn(10, 4, 9) + 0.4).requires_grad_()
    spk, mem = lif_scan(cur, p)
    (spk.sum() + mem.pow(2).sum() * 0.01).backward()
    g1 = cur.grad.clone()
    cur.grad = None
    monkeypatch.setattr(lif, "_use_kernel", lambda x: None)
    spk2, mem2 = lif_scan(cur, p)
    (spk2.sum() + mem2.pow(2).sum() * 0.01).backward()
    assert torch.equal(spk, spk2)
    assert torch.allclose(g1, cur.grad, atol=1e-5)


def test_surrogate_values() -> None:
    u = torch.tensor([0.0, 0.5, -2.0])
    atan = surrogates.surrogate_fn("atan")(u.clone())
    assert atan[0] == pytest.approx(1.0)  # α/2 with α = 2
    fs = surrogates.surrogate_fn("fast_sigmoid", 25.0)(u.clone())
    assert fs[1] == pytest.approx(1 / (1 + 12.5) ** 2)
    assert surrogates.surrogate_fn("triangle", 1.0)(u.clone())[2] == 0.0


def test_bad_lif_params_name_the_field() -> None:
    with pytest.raises(ConfigError, match="network.spiking.reset"):
        LIFParams(reset="none").check()
    with pytest.raises(ConfigError, match="surrogate"):
        LIFParams(surrogate="bogus").check()
    with pytest.raises(ConfigError, match="dt and tau"):
        LIFParams(dt=0.0).check()


def _nets(arch: str = "mlp") -> dict[str, torch.nn.Module]:
    out = {}
    for backend in ("rate", "spiking"):
        cfg = NetworkConfig(backend=backend, arch=arch, hidden=[16], channels=[4, 8] if arch == "cnn" else [],
                            spiking=SpikingConfig(T=6))
        out[backend] = build_net(cfg, (1, 8, 8), 5, seed=3)
    return out


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_same_description_runs_on_both_backends(arch: str) -> None:
    nets = _nets(arch)
    x = torch.rand(3, 1, 8, 8)
    for backend, net in nets.items():
        logits = net(x)
        assert logits.shape == (3, 5)
        logits.sum().backward()
        assert all(la.weight.grad is not None for la in net.layers)
        st = net.layers[0].state
        if backend == "spiking":
            assert st.mem.shape[0] == 6 and st.out.shape == st.mem.shape
            assert set(st.out.unique().tolist()) <= {0.0, 1.0}
        else:
            assert st.mem is None
    # same seed -> same initial weights on both backends
    assert torch.equal(nets["rate"].layers[0].weight, nets["spiking"].layers[0].weight)


def test_constant_input_hoisting_is_exact() -> None:
    """The synapse run once for direct-encoded input equals running it on every step."""
    net = _nets()["spiking"]
    x = torch.rand(4, 1, 8, 8)
    seq = net.encode(x)
    assert seq.stride(0) == 0
    h1 = seq
    for la in net.layers:
        h1 = la(h1)
    mem_hoisted = net.layers[-1].state.mem.clone()
    h2 = seq.contiguous()
    for la in net.layers:
        h2 = la(h2)
    assert torch.equal(h1, h2)
    assert torch.allclose(mem_hoisted, net.layers[-1].state.mem, atol=1e-6)


def test_output_integrator_never_fires() -> None:
    cfg = NetworkConfig(backend="spiking", hidden=[8], spiking=SpikingConfig(T=5, output_spikes=False))
    net = build_net(cfg, (1, 4, 4), 3)
    out = net(torch.rand(2, 1, 4, 4) * 5)
    assert torch.isfinite(out).all()
    assert float(net.layers[-1].state.out.detach().sum()) == 0.0


def test_presynaptic_trace() -> None:
    net = _nets()["spiking"]
    net(torch.rand(2, 1, 8, 8))
    la = net.layers[1]
    tr = la.presynaptic_trace(0.5)
    x = la.state.input
    assert torch.allclose(tr[2], 0.25 * x[0] + 0.5 * x[1] + x[2])


def _kernel_has(flag: str) -> bool:
    k = kmod.kernel()
    return k is not None and hasattr(k, flag) and bool(getattr(k, flag)())


def _lut_has(path: str) -> bool:
    k = kmod.kernel()
    return k is not None and hasattr(k, "lut_paths") and path in k.lut_paths()


_LUT_REASON = {"lut512": "no AVX-512 on this machine", "lut256": "no AVX2 on this machine",
               "lutportable": "no kernel built with GCC/Clang"}
LUT_PATHS = [pytest.param(p, marks=pytest.mark.skipif(not _lut_has(p), reason=r)) for p, r in _LUT_REASON.items()]
FAST_PATHS = [
    pytest.param("bf16x3", "bf16x3", marks=pytest.mark.skipif(
        not _kernel_has("bf16_units"), reason="no bf16 ukernels (oneDNN brgemm) on this machine")),
    *[pytest.param(p, p, marks=pytest.mark.skipif(not _lut_has(p), reason=r)) for p, r in _LUT_REASON.items()],
]
_ODD_SHAPES = [(1, 1, 1), (17, 5, 33), (100, 3, 7), (333, 801, 65), (64, 1030, 48), (4099, 37, 70)]


@pytest.mark.parametrize("path", LUT_PATHS)
@pytest.mark.parametrize("threads", [1, 2])
def test_binary_table_product_matches_float64_on_odd_shapes(threads: int, path: str) -> None:
    """bin_mm on each table-lookup path (AVX-512, AVX2, portable C++): A @ B for 0/1 A (packed
    as is or from its transpose) within float32 rounding of float64, on shapes that are not
    multiples of the nibble (4), panel (16) or tile (16, 32) widths, and with more rows than
    one chunk (2048); the two packings give the same bits; anything but 0/1 (0.5, NaN) is refused."""
    k = kmod.kernel()
    g = torch.Generator().manual_seed(5)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for m, kk, n in _ODD_SHAPES:
            s = (torch.rand(m, kk, generator=g) < 0.3).float()
            b = torch.randn(kk, n, generator=g)
            p, ok = k.pack_binary(s, False, path)
            pt, ok_t = k.pack_binary(s.t().contiguous(), True, path)
            assert ok and ok_t and torch.equal(p, pt)
            c = k.bin_mm(p, m, kk, b, path)
            ref = s.double() @ b.double()
            bound = kk * 2.0**-24 * float((s.double() @ b.double().abs()).max()) + 1e-30
            assert float((c.double() - ref).abs().max()) <= bound
    finally:
        torch.set_num_threads(old)
    for bad in (0.5, float("nan"), 2.0):
        s = torch.zeros(20, 12)
        s[7, 5] = bad
        assert not k.pack_binary(s, False, path)[1] and not k.pack_binary(s, True, path)[1]


@pytest.mark.skipif(len(getattr(kmod.kernel(), "lut_paths", list)()) < 2, reason="one table-lookup path here")
def test_table_lookup_paths_give_the_same_bits() -> None:
    """The AVX-512, AVX2 and portable builds add in the same order (same tables, same blocks of
    32 groups), so their panels and products are bit for bit equal, forward and transposed;
    the default path argument is AVX-512's (older callers) and a path the CPU lacks is refused."""
    k = kmod.kernel()
    paths = list(k.lut_paths())
    g = torch.Generator().manual_seed(8)
    for m, kk, n in [*_ODD_SHAPES, (2560, 800, 40)]:
        s = (torch.rand(m, kk, generator=g) < 0.2).float()
        b, a = torch.randn(kk, n, generator=g), torch.randn(m, n, generator=g)
        prod, prod_t = {}, {}
        for path in paths:
            p, _ = k.pack_binary(s, False, path)
            pt, _ = k.pack_binary(s, True, path)
            prod[path] = (p, k.bin_mm(p, m, kk, b, path))
            prod_t[path] = (pt, k.bin_mm(pt, kk, m, a, path))  # sᵀ a: the weight-gradient product
        for path in paths[1:]:
            for got, ref in ((prod[path], prod[paths[0]]), (prod_t[path], prod_t[paths[0]])):
                assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]), path
    if "lut512" in paths:
        p, _ = k.pack_binary(s, False)
        assert torch.equal(k.bin_mm(p, m, kk, b), prod["lut512"][1])
    with pytest.raises(RuntimeError, match="not available"):
        k.pack_binary(s, False, "lut1024")


@pytest.mark.parametrize(("mode", "node"), FAST_PATHS)
def test_spike_linear_fast_path_is_float_rounding_exact(monkeypatch: pytest.MonkeyPatch, mode: str, node: str) -> None:
    """Spike-fed synapse on an exact fast path: current and dW within float32 rounding of
    the float64 result (as close as a float32 GEMM), dX the float32 one; real input falls back."""
    monkeypatch.setattr(synapses, "_SPIKE_GEMM", mode)
    g = torch.Generator().manual_seed(3)
    M, K, N = 640, 208, 96
    fc = torch.nn.Linear(K, N, bias=True)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(N, K, generator=g) * 0.1)
        fc.bias.copy_(torch.randn(N, generator=g) * 0.1)
    x = (torch.rand(M, K, generator=g) < 0.25).float().requires_grad_()
    gy = torch.randn(M, N, generator=g)
    y = synapses.spike_linear(x, fc)
    assert y.grad_fn is not None and "SpikeLinear" in type(y.grad_fn).__name__ and y.grad_fn.mode == node
    y.backward(gy)
    w64, x64, g64 = fc.weight.detach().double(), x.detach().double(), gy.double()
    y64 = x64 @ w64.T + fc.bias.detach().double()
    ref32 = torch.nn.functional.linear(x.detach(), fc.weight, fc.bias).detach()
    tol = 4 * float((ref32.double() - y64).abs().max()) + 1e-6
    assert float((y.detach().double() - y64).abs().max()) <= tol
    dw64 = g64.T @ x64
    dw_tol = 4 * float(((gy.T @ x.detach()).double() - dw64).abs().max()) + 1e-6
    assert float((fc.weight.grad.double() - dw64).abs().max()) <= dw_tol
    assert torch.allclose(x.grad, gy @ fc.weight.detach(), rtol=0, atol=0)
    assert torch.allclose(fc.bias.grad, gy.sum(0))
    # not 0/1 (real-valued input): the plain float32 linear
    xr = torch.rand(M, K, generator=g)
    assert torch.equal(synapses.spike_linear(xr, fc), torch.nn.functional.linear(xr, fc.weight, fc.bias))


@pytest.mark.parametrize(("mode", "node"), FAST_PATHS)
def test_spiking_net_same_spikes_with_and_without_fast_path(
    monkeypatch: pytest.MonkeyPatch, mode: str, node: str
) -> None:
    """A spiking MLP on spike-train input: identical spikes, gradients within float rounding."""
    cfg = NetworkConfig(backend="spiking", hidden=[64, 64], bias=False,
                        spiking=SpikingConfig(T=10, dt=1e-3, tau=5e-3))
    net = build_net(cfg, (1, 16, 16), 10, seed=1)
    with torch.no_grad():
        for la in net.layers:
            la.synapse.weight.mul_(3.0)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(10, 64, 256, generator=g) < 0.3).float()
    y = torch.randint(0, 10, (64,), generator=g)
    monkeypatch.setattr(synapses, "_SPIKE_GEMM_MIN_MACS", 0)
    out = {}
    for on in (False, True):
        monkeypatch.setattr(synapses, "_SPIKE_GEMM", mode if on else "fp32")
        net.zero_grad(set_to_none=True)
        h = x
        for la in net.layers:
            h = la(h)
        cur = net.layers[1].state.current.grad_fn.next_functions[0][0]  # under the [T, B] view
        assert ("SpikeLinear" in type(cur).__name__ and cur.mode == node) == on
        torch.nn.functional.cross_entropy(net.readout(), y).backward()
        out[on] = ([la.state.out.detach() for la in net.layers], [la.weight.grad.clone() for la in net.layers])
    assert 0.05 < float(out[True][0][0].mean()) < 0.6
    for a, b in zip(out[False][0], out[True][0]):
        assert torch.equal(a, b)
    for a, b in zip(out[False][1], out[True][1]):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_spike_gemm_mode_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """BIOPLAUS_SPIKE_GEMM: auto picks the CPU's fastest exact path (bf16 split with AMX, else
    the widest table lookup: AVX-512, AVX2, portable), ``lut`` the widest table lookup, a
    named path itself, and anything else is a one-line config error."""
    from bioplaus.errors import ConfigError

    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    bf16 = _kernel_has("bf16_units")
    luts = [p for p in ("lut512", "lut256", "lutportable") if _lut_has(p)]
    want = {
        "auto": "bf16x3" if (bf16 and amx) else (luts[0] if luts else "fp32"),
        "fp32": "fp32",
        **({"bf16x3": "bf16x3"} if bf16 else {}),
        **({"lut": luts[0]} if luts else {}),
        **{p: p for p in luts},
    }
    for env, mode in want.items():
        monkeypatch.setenv("BIOPLAUS_SPIKE_GEMM", env)
        monkeypatch.setattr(synapses, "_SPIKE_GEMM", None)
        assert synapses.spike_gemm_mode() == mode
        assert synapses.spike_gemm_enabled() == (mode != "fp32")
    monkeypatch.setenv("BIOPLAUS_SPIKE_GEMM", "fast")
    monkeypatch.setattr(synapses, "_SPIKE_GEMM", None)
    with pytest.raises(ConfigError, match="BIOPLAUS_SPIKE_GEMM"):
        synapses.spike_gemm_mode()
    monkeypatch.setattr(synapses, "_SPIKE_GEMM", None)


def test_forcing_a_spike_gemm_path_the_cpu_lacks_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU with only the portable table lookup (simulated), auto and ``lut`` resolve to it
    and forcing lut512 / lut256 / bf16x3 is a one-line ConfigError, raised when the spiking
    net is built; without the kernel a forced path is an error and auto is float32."""
    from bioplaus.errors import ConfigError

    if kmod.kernel() is None:
        pytest.skip("no compiled kernel")
    monkeypatch.setattr(synapses, "lut_paths", lambda: ("lutportable",))
    monkeypatch.setattr(synapses, "kernel_flag", lambda k, name: False)  # no bf16 ukernels either
    for env, mode in (("auto", "lutportable"), ("lut", "lutportable"), ("lutportable", "lutportable")):
        monkeypatch.setenv("BIOPLAUS_SPIKE_GEMM", env)
        monkeypatch.setattr(synapses, "_SPIKE_GEMM", None)
        assert synapses.spike_gemm_mode() == mode
    for env in ("lut512", "lut256", "bf16x3"):
        monkeypatch.setenv("BIOPLAUS_SPIKE_GEMM", env)
        monkeypatch.setattr(synapses, "_SPIKE_GEMM", None)
        with pytest.raises(ConfigError, match=f"BIOPLAUS_SPIKE_GEMM={env}: ") as err:
            build_net(NetworkConfig(backend="spiking", hidden=[8]), (4,), 2)
        assert "\n" not in str(err.value) and synapses._SPIKE_GEMM is None
    monkeypatch.setattr(synapses, "kernel", lambda: None)
    monkeypatch.setenv("BIOPLAUS_SPIKE_GEMM", "lut")
    with pytest.raises(ConfigError, match="needs the compiled LIF kernel"):
        synapses.spike_gemm_mode()
    monkeypatch.setenv("BIOPLAUS_SPIKE_GEMM", "auto")
    assert synapses.spike_gemm_mode() == "fp32"
    monkeypatch.setattr(synapses, "_SPIKE_GEMM", None)


def test_run_file_records_the_spike_synapse_path(tmp_path) -> None:  # noqa: ANN001
    """A spiking run's file says how its spike-fed synapses multiplied; a rate run's does not."""
    import h5py

    from bioplaus.config import load_config
    from bioplaus.experiments import run_experiment
    from bioplaus.report import summary_text

    for backend in ("spiking", "rate"):
        raw = {"data": {"dataset": "digits", "limit_train": 64, "limit_test": 32},
               "network": {"backend": backend, "hidden": [16], "spiking": {"T": 3}},
               "rule": {"name": "backprop"},
               "train": {"epochs": 1, "report": False, "progress": False},
               "record": {"weights_every": 0}}
        out = tmp_path / f"{backend}.h5"
        run_experiment(load_config(raw), out=out)
        with h5py.File(out, "r") as f:
            got = f.attrs.get("spike_gemm")
        text = summary_text(out)  # bioplaus inspect
        if backend == "spiking":
            assert got == synapses.spike_gemm_mode()
            assert f"spike synapses {got}" in text
        else:
            assert got is None and "spike synapses" not in text and "device cpu" in text


def test_bad_spike_gemm_env_fails_when_the_spiking_net_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad BIOPLAUS_SPIKE_GEMM is a config error at build time, even for a net whose
    products are all too small to ask for the fast path; a rate net does not care."""
    monkeypatch.setenv("BIOPLAUS_SPIKE_GEMM", "fast")
    monkeypatch.setattr(synapses, "_SPIKE_GEMM", None)
    with pytest.raises(ConfigError, match="BIOPLAUS_SPIKE_GEMM"):
        build_net(NetworkConfig(backend="spiking", hidden=[8]), (4,), 2)
    build_net(NetworkConfig(backend="rate", hidden=[8]), (4,), 2)


def test_failed_openmp_build_falls_back_and_is_remembered(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    """Where the OpenMP build fails (a compiler without libgomp) the kernel is built without
    it, and the failure is written next to the build so the next process does not retry."""
    import torch.utils.cpp_extension as ext

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(kmod.sys, "platform", "linux")
    calls: list[bool] = []

    def fake_load(name: str, sources: list[str], extra_cflags: list[str], verbose: bool,  # noqa: ARG001
                  extra_ldflags: list[str] | None = None) -> object:
        omp = "-fopenmp" in extra_cflags
        calls.append(omp)
        if omp:
            raise RuntimeError("cannot find -lgomp")
        return "plain kernel"

    monkeypatch.setattr(ext, "load", fake_load)
    for expected in ([True, False], [False]):
        monkeypatch.setattr(kmod, "_KERNEL", None)
        monkeypatch.setattr(kmod, "_KERNEL_TRIED", False)
        calls.clear()
        assert kmod.kernel() == "plain kernel"
        assert calls == expected
    assert list(tmp_path.rglob("openmp_build_failed"))
    monkeypatch.setattr(kmod, "_KERNEL_TRIED", False)
