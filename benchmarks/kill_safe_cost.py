"""What the kill-safe writes cost: a run file's writes outside SWMR on a copy renamed into place
(the default) against the same writes in place (the fallback when the disk has no room).
Rows: "flush" = logging the weights (gzip) and the lazy flush that writes them, "start_swmr",
"close" (the model stored again, uncompressed, and the final attributes).

One process, the two ways side by side: a Recorder logs a model of ``--mb`` MiB (weights at
step 0), flushes (lazy phase), starts SWMR, logs 20 epochs of metrics, stores the model again
at close; timed: the lazy flush, `start_swmr`, `close` (median of ``--repeat``).

    python benchmarks/kill_safe_cost.py [--mb 16 128] [--repeat 3]

Writes ``benchmarks/results/kill_safe_cost.{md,json}``. The machine is shared: noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import save, table  # noqa: E402
from bioplaus.record import writer as w  # noqa: E402


def one(d: Path, mb: int, copy: bool) -> dict[str, float]:
    w.Recorder._copy_fits = (lambda self, n: True) if copy else (lambda self, n: False)  # type: ignore[method-assign]
    model = np.random.default_rng(0).standard_normal((mb << 18,)).astype(np.float32).reshape(-1, 1024)
    path = d / f"r{mb}{copy}.h5"
    rec = w.Recorder(path, {"x": 1}, seed=0)
    t0 = time.perf_counter()
    rec.log_weights("w0", 0, model)  # more than 4 MiB: written (a lazy flush) at once
    rec.flush()
    t1 = time.perf_counter()
    rec.start_swmr()
    t2 = time.perf_counter()
    for e in range(20):
        rec.log_metrics(e, loss=1.0 / (e + 1))
    rec.log_array("model/w0", model)
    t3 = time.perf_counter()
    rec.close("done")
    t4 = time.perf_counter()
    size = path.stat().st_size
    path.unlink()
    return {"flush_s": t1 - t0, "start_swmr_s": t2 - t1, "close_s": t4 - t3, "file_mib": size / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, nargs="+", default=[16, 128])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kill_safe_cost_", dir=Path(__file__).resolve().parent) as tmp:
        for mb in args.mb:
            res: dict[bool, list[dict[str, float]]] = {True: [], False: []}
            for _ in range(args.repeat):
                for copy in (False, True):  # interleaved: both see the same load
                    res[copy].append(one(Path(tmp), mb, copy))
            med = {c: {k: statistics.median(r[k] for r in res[c]) for k in res[c][0]} for c in res}
            for key in ("flush_s", "start_swmr_s", "close_s"):
                rows.append({"model_mib": mb, "file_mib": round(med[True]["file_mib"], 1), "step": key[:-2],
                             "in_place_s": med[False][key], "copy_s": med[True][key],
                             "ratio": med[True][key] / max(med[False][key], 1e-9)})
    import os

    load = os.getloadavg()
    text = (f"# Kill-safe writes: copy + rename against in place (median of {args.repeat})\n\n"
            f"Machine: AMD EPYC, 2 cores shared by several processes (load {load[0]:.1f}): noisy. "
            "File system: the benchmarks directory's (ext4 here).\n\n"
            + table(rows, ["model_mib", "file_mib", "step", "in_place_s", "copy_s", "ratio"]))
    save("kill_safe_cost", {"repeat": args.repeat, "rows": rows, "load": load}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
