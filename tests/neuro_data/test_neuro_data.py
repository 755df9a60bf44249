"""Tests of neuro_data: IDX files, data set discovery, loaders, encoders and task streams."""

from __future__ import annotations

import dataclasses
import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import neuro_data
from neuro_data import (
    DATASETS,
    ArrayLoader,
    DataNotFoundError,
    Dataset,
    Normalizer,
    encode,
    load_dataset,
    make_stream,
    permuted,
    split,
    split_classes,
)
from neuro_data import datasets as ds_mod
from neuro_data.idx import read_idx, write_idx

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


pytestmark = pytest.mark.usefixtures("isolated_data")


def _fake_idx_dir(d: Path, n_train: int = 30, n_test: int = 10, gz: bool = True) -> Path:
    """Write a tiny MNIST-like IDX set: images of 5x4 pixels, labels 0..9 cycling."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for part, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            d / f"{part}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 5, 4), dtype=np.uint8)
        )
        write_idx(d / f"{part}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8))
    return d


def _tiny_dataset(n_train: int = 40, n_test: int = 20, classes: int = 10) -> Dataset:
    rng = np.random.default_rng(1)
    return Dataset(
        "tiny",
        rng.random((n_train, 1, 3, 4), dtype=np.float32),
        (np.arange(n_train) % classes).astype(np.int64),
        rng.random((n_test, 1, 3, 4), dtype=np.float32),
        (np.arange(n_test) % classes).astype(np.int64),
        [f"c{i}" for i in range(classes)],
        (1, 3, 4),
    )


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path: Path, suffix: str, dtype: type) -> None:
    a = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    p = write_idx(tmp_path / f"a.idx{suffix}", a)
    b = read_idx(p)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    assert b.flags.writeable
    with open(p, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == (suffix == ".gz")


def test_idx_big_endian_header(tmp_path: Path) -> None:
    p = write_idx(tmp_path / "lab", np.array([1, 2, 3], dtype=np.int32))
    raw = p.read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0C, 1])
    assert raw[4:8] == (3).to_bytes(4, "big")
    assert raw[8:12] == (1).to_bytes(4, "big")


def test_idx_bad_magic_names_file(tmp_path: Path) -> None:
    p = tmp_path / "broken-images-idx3-ubyte"
    p.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 16)
    with pytest.raises(ValueError, match="broken-images-idx3-ubyte.*magic"):
        read_idx(p)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_truncated_names_file(tmp_path: Path, suffix: str) -> None:
    good = write_idx(tmp_path / f"good{suffix}", np.zeros((4, 3), dtype=np.uint8))
    data = gzip.decompress(good.read_bytes()) if suffix else good.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(gzip.compress(data[:-5]) if suffix else data[:-5])
    with pytest.raises(ValueError, match=r"cut.*truncated"):
        read_idx(cut)
    if suffix:  # a gzip stream cut mid-way is reported too, naming the file
        cut.write_bytes(good.read_bytes()[:-6])
        with pytest.raises(ValueError, match=r"cut\.gz"):
            read_idx(cut)


# ---------------------------------------------------------------- data sets


def test_fake_fashion_mnist_found_via_path(tmp_path: Path) -> None:
    d = _fake_idx_dir(tmp_path / "fm")
    ds = load_dataset("fashion_mnist", path=d)
    assert ds.name == "fashion_mnist"
    assert ds.x_train.shape == (30, 1, 5, 4) and ds.x_test.shape == (10, 1, 5, 4)
    assert ds.shape == (1, 5, 4)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    np.testing.assert_array_equal(ds.y_train, np.arange(30) % 10)
    expect = read_idx(d / "train-images-idx3-ubyte.gz")[:, None] / 255.0
    np.testing.assert_allclose(ds.x_train, expect, rtol=1e-6)
    assert ds.classes[:2] == ["T-shirt/top", "Trouser"]
    assert not ds.x_train.flags.writeable
    with pytest.raises(ValueError):
        ds.x_train[0, 0, 0, 0] = 1.0
    assert load_dataset("fashion_mnist", path=d) is ds  # in-process cache


def test_raw_idx_files_and_mnist(tmp_path: Path) -> None:
    d = _fake_idx_dir(tmp_path / "m", gz=False)
    ds = load_dataset("mnist", path=str(d))
    assert ds.classes == [str(i) for i in range(10)] and len(ds.y_test) == 10


def test_found_via_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    _fake_idx_dir(root / "fashion_mnist")
    monkeypatch.setenv("BIOPLAUS_DATA", str(root))
    assert load_dataset("fashion_mnist").x_train.shape == (30, 1, 5, 4)
    # $BIOPLAUS_DATA itself holding the files also works
    flat = _fake_idx_dir(tmp_path / "flat", n_train=20)
    monkeypatch.setenv("BIOPLAUS_DATA", str(flat))
    assert len(load_dataset("fashion-mnist").y_train) == 20


def test_system_dir_and_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sysroot = tmp_path / "share"
    _fake_idx_dir(sysroot / "fashion-mnist", n_train=12)
    _fake_idx_dir(tmp_path / "cache" / "fashion_mnist", n_train=14)
    # the system dir comes before the data dir
    monkeypatch.setattr(ds_mod, "SYSTEM_DATA_ROOT", sysroot)
    assert len(load_dataset("fashion_mnist", data_dir=tmp_path / "cache").y_train) == 12
    monkeypatch.setattr(ds_mod, "SYSTEM_DATA_ROOT", tmp_path / "nothing")
    assert len(load_dataset("fashion_mnist", data_dir=tmp_path / "cache").y_train) == 14


def test_missing_data_lists_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIOPLAUS_DATA", str(tmp_path / "env"))
    (tmp_path / "env" / "fashion_mnist").mkdir(parents=True)
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("fashion_mnist", data_dir=tmp_path / "dd")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "\n" not in msg
    for place in (
        tmp_path / "env" / "fashion_mnist",
        tmp_path / "env",
        ds_mod.SYSTEM_DATA_ROOT / "fashion-mnist",
        tmp_path / "dd" / "fashion_mnist",
    ):
        assert str(place) in msg
    assert "train-images-idx3-ubyte[.gz]" in msg  # the existing dir says what it lacks
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "BIOPLAUS_DATA" in msg and "download = true" in msg


def test_explicit_path_is_not_silently_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_idx_dir(tmp_path / "env" / "fashion_mnist")
    monkeypatch.setenv("BIOPLAUS_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError, match="given path .*nowhere"):
        load_dataset("fashion_mnist", path=tmp_path / "nowhere")


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match="cifar10, digits, fashion_mnist, mnist"):
        load_dataset("imagenet")
    assert set(DATASETS) == {"fashion_mnist", "mnist", "digits", "cifar10"}


def test_download_from_mirror_and_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = _fake_idx_dir(tmp_path / "mirror", n_train=60000 // 1000, n_test=10)
    monkeypatch.setitem(ds_mod.MIRRORS, "mnist", ("file:///does/not/exist/",))
    with pytest.raises(DataNotFoundError, match="file:///does/not/exist/train-images"):
        load_dataset("mnist", data_dir=tmp_path / "dd", download=True)
    # a working mirror: files arrive, are re-read, and the size check rejects fake data
    monkeypatch.setitem(ds_mod.MIRRORS, "mnist", ("file:///nope/", mirror.as_uri() + "/"))
    with pytest.raises(DataNotFoundError, match="unusable.*expected"):
        load_dataset("mnist", data_dir=tmp_path / "dd", download=True)
    assert not list((tmp_path / "dd" / "mnist").iterdir())  # bad files removed
    # with the expected sizes of the fake set, the download is accepted
    spec = dataclasses.replace(ds_mod._SPECS["mnist"], sizes=(60, 10))
    monkeypatch.setitem(ds_mod._SPECS, "mnist", spec)
    ds = load_dataset("mnist", data_dir=tmp_path / "dd", download=True)
    assert ds.x_train.shape == (60, 1, 5, 4)
    assert (tmp_path / "dd" / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert not list((tmp_path / "dd" / "mnist").glob("*.part"))


def _fake_cifar(d: Path, n: int = 4) -> Path:
    d.mkdir(parents=True)
    for i, b in enumerate(ds_mod.CIFAR_BATCHES):
        data = np.full((n, 3072), i * 10, dtype=np.uint8)
        # Protocol 2 naming numpy.core, like the official (Python 2) batches.
        raw = pickle.dumps({b"data": data, b"labels": [i] * n}, protocol=2)
        (d / b).write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    return d


def test_cifar_dir_and_archive(tmp_path: Path) -> None:
    batches = _fake_cifar(tmp_path / "c" / "cifar-10-batches-py")
    ds = load_dataset("cifar10", path=tmp_path / "c")
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(ds.y_test, [5] * 4)
    assert ds.x_train[-1].max() == pytest.approx(40 / 255)
    assert ds.classes[0] == "airplane"
    archive = tmp_path / "arch" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    ds2 = load_dataset("cifar10", path=archive.parent)
    np.testing.assert_array_equal(ds2.x_train, ds.x_train)
    assert load_dataset("cifar10", path=archive).y_train.shape == (20,)


def test_cifar_refuses_foreign_pickle(tmp_path: Path) -> None:
    d = _fake_cifar(tmp_path / "c")
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": io.BytesIO(b"x"), b"labels": []}, f)
    with pytest.raises(ValueError, match="test_batch.*refusing"):
        load_dataset("cifar10", path=d)


def test_digits() -> None:
    ds = load_dataset("digits")
    assert ds.shape == (1, 8, 8) and ds.x_train.shape[1:] == (1, 8, 8)
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert len(ds.y_test) == pytest.approx(0.2 * 1797, abs=10)
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() == 1.0
    assert set(np.unique(ds.y_test)) == set(range(10))  # stratified
    ds_mod.clear_cache()
    again = load_dataset("digits")
    assert again is not ds
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    np.testing.assert_array_equal(again.x_train, ds.x_train)


# ---------------------------------------------------------------- loader


def test_split_deterministic() -> None:
    x = np.arange(100, dtype=np.float32)[:, None]
    y = np.arange(100)
    a = split(x, y, 0.25, seed=3)
    b = split(x, y, 0.25, seed=3)
    c = split(x, y, 0.25, seed=4)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert len(a[0]) == 75 and len(a[2]) == 25
    assert not np.array_equal(a[3], c[3])
    assert sorted(np.concatenate([a[1], a[3]]).tolist()) == list(range(100))
    np.testing.assert_array_equal(a[0][:, 0], a[1])
    with pytest.raises(ValueError):
        split(x, y, 1.0, seed=0)


@pytest.mark.parametrize("drop_last", [False, True])
def test_array_loader_epochs(drop_last: bool) -> None:
    x = np.arange(103, dtype=np.float32).reshape(103, 1)
    y = np.arange(103)
    loader = ArrayLoader(x, y, batch_size=10, seed=7, drop_last=drop_last)
    assert loader.n == 103 and len(loader) == (10 if drop_last else 11)
    epochs = []
    for _ in range(3):
        seen = []
        batches = list(loader)
        assert len(batches) == len(loader)
        for xb, yb in batches:
            assert xb.dtype == torch.float32 and yb.dtype == torch.int64
            torch.testing.assert_close(xb[:, 0].long(), yb)
            seen += yb.tolist()
        if drop_last:
            assert len(seen) == 100 and len(set(seen)) == 100
        else:
            assert sorted(seen) == list(range(103))
        epochs.append(seen)
    assert epochs[0] != epochs[1]
    again = ArrayLoader(x, y, batch_size=10, seed=7, drop_last=drop_last)
    assert [sum((yb.tolist() for _, yb in again), []) for _ in range(3)] == epochs
    other = ArrayLoader(x, y, batch_size=10, seed=8, drop_last=drop_last)
    assert sum((yb.tolist() for _, yb in other), []) != epochs[0]


def test_array_loader_shares_memory_and_subset() -> None:
    x = np.random.default_rng(0).random((20, 2, 3), dtype=np.float32)
    y = np.arange(20, dtype=np.int64)
    x.flags.writeable = False
    loader = ArrayLoader(x, y, batch_size=6, shuffle=False)
    assert loader.x.data_ptr() == x.ctypes.data  # made once, no copy
    assert [len(yb) for _, yb in loader] == [6, 6, 6, 2]
    probe = loader.subset(8)
    assert probe.n == 8
    assert torch.cat([yb for _, yb in probe]).tolist() == list(range(8))
    assert torch.cat([yb for _, yb in probe]).tolist() == list(range(8))


def test_normalizer() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal([[[[2.0]]], [[[-1.0]]]][0], 3.0, size=(500, 2, 4, 4)).astype(np.float32)
    x[:, 1] = x[:, 1] * 0.1 + 5.0
    norm = Normalizer.fit(x, "standard")
    z = norm(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1.0, atol=1e-4)
    zt = norm(torch.from_numpy(x))
    torch.testing.assert_close(zt, torch.from_numpy(z))
    for mode in ("none", "unit"):
        assert Normalizer.fit(x, mode)(x) is x
    with pytest.raises(ValueError, match="standard"):
        Normalizer.fit(x, "zscore")


# ---------------------------------------------------------------- encoders


def test_direct_no_copy() -> None:
    x = torch.rand(4, 1, 3, 3)
    s = encode(x, "direct", T=5, dt=1e-3)
    assert s.shape == (5, 4, 1, 3, 3)
    assert s.data_ptr() == x.data_ptr() and s.stride(0) == 0
    torch.testing.assert_close(s[3], x)


def test_poisson_rate() -> None:
    x = torch.tensor([[0.0, 0.1, 0.5, 0.9, 1.0]])
    g = torch.Generator().manual_seed(0)
    T = 4000
    s = encode(x, "poisson", T=T, dt=1e-3, generator=g)
    assert s.shape == (T, 1, 5) and s.dtype == torch.float32
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    # each rate has std sqrt(p(1-p)/T) <= 0.008: 5 sigma
    torch.testing.assert_close(s.mean(0), x, atol=0.04, rtol=0)
    assert s[:, 0, 0].sum() == 0 and s[:, 0, 4].sum() == T
    half = encode(x, "poisson", T=T, dt=1e-3, generator=g, max_rate=500.0)
    torch.testing.assert_close(half.mean(0), x / 2, atol=0.04, rtol=0)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(encode(x, "poisson", 10, 1e-3, g1), encode(x, "poisson", 10, 1e-3, g2))


def test_latency_one_spike_at_right_step() -> None:
    x = torch.tensor([[1.0, 0.5, 0.0, 0.005, 0.25, 0.02]])
    T = 11
    s = encode(x, "latency", T=T, dt=1e-3)
    assert s.shape == (T, 1, 6) and s.dtype == torch.float32
    counts = s.sum(0)[0]
    assert counts.tolist() == [1, 1, 0, 0, 1, 1]
    steps = s[:, 0].argmax(0)
    expect = torch.round((1 - x[0]) * (T - 1)).long()
    for i in (0, 1, 4, 5):
        assert steps[i] == expect[i]
    assert steps[0] == 0 and steps[1] == 5
    log = encode(x, "latency", T=T, dt=1e-3, mode="log", tau=5e-3, threshold=0.2)
    assert log.sum(0)[0].tolist() == [1, 1, 0, 0, 1, 0]
    assert log[:, 0].argmax(0)[0] == round(5 * np.log(1 / 0.8))
    assert log[:, 0].argmax(0)[0] < log[:, 0].argmax(0)[1] < log[:, 0].argmax(0)[4]


def test_encoder_errors() -> None:
    x = torch.rand(2, 3)
    with pytest.raises(ValueError, match="direct, poisson, latency"):
        encode(x, "rank", T=3, dt=1e-3)
    with pytest.raises(ValueError, match="max_rate"):
        encode(x, "poisson", T=3, dt=1e-3, rate=3)
    assert encode(x.numpy(), "direct", 2, 1e-3).shape == (2, 2, 3)
    assert set(neuro_data.ENCODERS) == {"direct", "poisson", "latency"}


# ---------------------------------------------------------------- task streams


def test_permuted_stream() -> None:
    ds = _tiny_dataset()
    stream = permuted(ds, n_tasks=4, seed=0)
    assert len(stream) == 4 and stream.setting == "domain" and stream.n_classes == 10
    t0 = stream[0]
    assert t0.x_train is ds.x_train
    np.testing.assert_array_equal(t0.permutation, np.arange(12))
    perms = [t.permutation for t in stream]
    for p in perms:
        assert sorted(p.tolist()) == list(range(12))
    assert len({tuple(p) for p in perms}) == 4
    for t in stream:
        assert t.x_train.shape == ds.x_train.shape
        np.testing.assert_array_equal(t.y_train, ds.y_train)
        np.testing.assert_array_equal(
            t.x_test.reshape(20, -1), ds.x_test.reshape(20, -1)[:, t.permutation]
        )
    again = make_stream("permuted", ds, n_tasks=4, seed=0)
    for a, b in zip(stream, again):
        np.testing.assert_array_equal(a.permutation, b.permutation)
        np.testing.assert_array_equal(a.x_train, b.x_train)
    other = permuted(ds, n_tasks=4, seed=1)
    assert not np.array_equal(other[1].permutation, stream[1].permutation)


def test_split_stream() -> None:
    ds = _tiny_dataset()
    stream = split_classes(ds, n_tasks=5)
    assert len(stream) == 5 and stream.setting == "task" and stream.n_classes == 10
    assert [t.classes for t in stream] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert stream.classes_per_task == [2] * 5
    t = stream[2]
    assert set(t.y_train.tolist()) == {4, 5} and set(t.y_test.tolist()) == {4, 5}
    assert len(t.y_train) == 8
    assert t.local_labels(t.y_train).tolist() == (t.y_train - 4).tolist()
    assert t.local_labels(torch.tensor([5, 4])).tolist() == [1, 0]
    with pytest.raises(ValueError, match="not in classes"):
        t.local_labels(np.array([1]))
    assert sum(len(t.y_train) for t in stream) == len(ds.y_train)
    shuffled = make_stream("split", ds, n_tasks=2, classes_per_task=3, seed=0)
    cls = [c for t in shuffled for c in t.classes]
    assert len(cls) == 6 and len(set(cls)) == 6
    with pytest.raises(ValueError, match="does not fit"):
        split_classes(ds, n_tasks=4, classes_per_task=3)
    with pytest.raises(ValueError, match="permuted, split"):
        make_stream("rotated", ds)


# ---------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    if not all((FASHION_DIR / f"{s}.gz").is_file() for s in ds_mod.IDX_FILES.values()):
        pytest.skip(f"Fashion-MNIST not in {FASHION_DIR} (apt-get install dataset-fashion-mnist)")
    monkeypatch.setattr(ds_mod, "SYSTEM_DATA_ROOT", FASHION_DIR.parent)
    ds = load_dataset("fashion_mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.shape == (1, 28, 28)
    assert ds.classes == [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]  # fmt: skip
    assert ds.x_train.dtype == np.float32 and ds.x_train.max() == 1.0
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
