"""Property tests (issue 26): the sweep's spec and ``--grid`` / ``--zip`` / ``--seeds``
parsing, and ``compare`` over a directory of hostile files, end with the project's error or
succeed; never another exception, never a hang (a deadline per example).

Input classes (``pytest --hypothesis-show-statistics`` lists them as events): axis strings
of real and bogus dotted keys with TOML values, quotes, brackets, empty pieces, missing
``=``; ``seeds`` of every type and size (huge ints, floats, bools, strings, None, negative);
grids and zips as dicts of lists, scalars, strings, non-string keys, mismatched lengths,
more runs than MAX_RUNS; for ``compare``: run files truncated at any byte, bytes flipped,
random bytes, empty files, directories and symlinks named ``*.h5`` (dangling and looping),
beside a good run file or not.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_config
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

import bioplaus
from bioplaus.errors import BioplausError
from bioplaus.sweep import compare, expand
from bioplaus.sweep.spec import parse_axes

SETTINGS = dict(deadline=timedelta(seconds=30), suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])  # no explain phase: minutes per failure

KEYS = st.sampled_from(["rule.lr", "seed", "train.epochs", "network.hidden", "data.batch_size", "nope", "rule..lr", "", " a "])
SCALARS = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=8), st.none(), st.just(10**9), st.lists(st.integers(0, 3), max_size=3),
)
TEXT_VALUE = st.one_of(
    st.sampled_from(["0.1", "1e9", "nan", "inf", "-1", "[1,2]", "[8, 16]", "'x'", '"a,b"', "{a=1}", "true", "",
                     "[", "]", "1,,2", "1e999999", "0x10", "999999999999999999999999"]),
    st.text(alphabet="0123456789.,[]{}\"'=eE+-abc ", max_size=12),
)


@settings(max_examples=int(os.environ.get("BIOPLAUS_FUZZ_EXAMPLES", "150")), **SETTINGS)
@given(
    grid=st.one_of(st.none(), st.lists(st.tuples(KEYS, st.lists(TEXT_VALUE, min_size=0, max_size=4)), max_size=3),
                   st.dictionaries(st.one_of(KEYS, st.integers()), st.one_of(SCALARS, st.lists(SCALARS, max_size=5)),
                                   max_size=3)),
    zipped=st.one_of(st.none(), st.dictionaries(KEYS, st.lists(SCALARS, max_size=4), max_size=2)),
    seeds=st.one_of(st.none(), SCALARS, st.integers(-5, 5), st.sampled_from(["1e9", "3", 3.0, 10**12, 2**63])),
)
def test_sweep_spec_and_seeds(grid: Any, zipped: Any, seeds: Any) -> None:
    if isinstance(grid, list):  # CLI strings: key=v1,v2 (some without '=')
        items = [f"{k}={','.join(v)}" if v else k for k, v in grid]
        event("grid: CLI strings")
        try:
            grid = parse_axes(items, "--grid")
        except BioplausError:
            event("outcome: parse refused")
            return
    else:
        event(f"grid: {type(grid).__name__}")
    event(f"seeds: {type(seeds).__name__}" + (" huge" if isinstance(seeds, int) and seeds > 10**5 else ""))
    try:
        points = expand(grid, zipped, seeds)
    except BioplausError:
        event("outcome: refused with the project's error")
        return
    event("outcome: expanded")
    assert 1 <= len(points) <= 100_000


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("good")
    cfg = tiny_config(train__epochs=1, train__max_steps=1, data={"dataset": "digits", "batch_size": 64, "limit_train": 64})
    return bioplaus.run(cfg, out=d / "good.h5", progress=False).path


HOSTILE = st.sampled_from(["truncated", "flipped", "random", "empty", "dir", "dangling_link", "loop_link", "good"])


@settings(max_examples=int(os.environ.get("BIOPLAUS_FUZZ_EXAMPLES", "30")), **SETTINGS)
@given(kinds=st.lists(HOSTILE, min_size=1, max_size=4), seed=st.integers(0, 2**32 - 1))
def test_compare_over_hostile_files(good_run: Path, kinds: list[str], seed: int) -> None:
    rng = random.Random(seed)
    raw = good_run.read_bytes()
    d = Path(tempfile.mkdtemp(prefix="cmpfuzz"))
    try:
        for i, kind in enumerate(kinds):
            f = d / f"r{i}.h5"
            event(f"file: {kind}")
            if kind == "truncated":
                f.write_bytes(raw[: rng.randrange(len(raw))])
            elif kind == "flipped":
                b = bytearray(raw)
                for _ in range(rng.randrange(1, 64)):
                    b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
                f.write_bytes(bytes(b))
            elif kind == "random":
                f.write_bytes(rng.randbytes(rng.randrange(1, 4096)))
            elif kind == "empty":
                f.write_bytes(b"")
            elif kind == "dir":
                f.mkdir()
            elif kind == "dangling_link":
                f.symlink_to(d / "missing.h5")
            elif kind == "loop_link":
                f.symlink_to(f)
            else:
                shutil.copy(good_run, f)
        try:
            res = compare([d], write=rng.random() < 0.5)
        except BioplausError:
            event("outcome: the project's error")
            return
        event("outcome: compared")
        assert res.rows and {"good", "flipped"} & set(kinds)  # a flip in raw data leaves a readable run
    finally:
        shutil.rmtree(d, ignore_errors=True)
