"""Shared helpers for benchmarks: timing, tables, JSON output."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "results"


def timeit(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median and spread of wall time of ``fn`` over ``repeat`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "n": repeat}


def machine() -> dict[str, Any]:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu,
        "amx": bool(amx()) if amx is not None else False,
    }


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    """A GitHub-markdown table of ``rows`` restricted to ``cols``."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def save(name: str, payload: dict[str, Any], text: str) -> Path:
    """Write ``results/<name>.json`` and ``results/<name>.md``; print the table."""
    OUT.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **payload}
    (OUT / f"{name}.json").write_text(json.dumps(payload, indent=2))
    (OUT / f"{name}.md").write_text(text + "\n")
    print(text)
    return OUT / f"{name}.json"
