"""The text overview of a run file (``bioplaus inspect``): no plotting library needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bioplaus.config import kind_metrics
from bioplaus.metrics import find_metric
from bioplaus.record.reader import open_run


def fmt(value: Any) -> str:
    """A number as 3 decimals (the sign kept in a column of signed values); else ``str``."""
    if isinstance(value, float):
        return f"{value:+.3f}" if value < 0 else f"{value:.3f}"
    return str(value)


def summary_text(run_path: str | Path) -> str:
    """A multi-line, human-readable overview of a run file (``bioplaus inspect``)."""
    with open_run(run_path) as run:
        s = run.summary()
        outcome = run.outcome(kind_metrics)
        compute = [
            f"{label} {run.attrs[key]}"
            for key, label in (("device", "device"), ("spike_gemm", "spike synapses"))
            if run.attrs.get(key) not in (None, "")
        ]
        array_attrs = {p: run.attrs_of(p) for p in s["arrays"] if not p.startswith("/model/")}
    lines = [
        f"run file   {s['path']}",
        f"name       {s['name']}  (seed {s['seed']}, format v{s['format_version']})",
        f"status     {s['status']}" + (f"  ({s['note']})" if s.get("note") else ""),
        f"created    {s['created']}",
    ]
    if outcome.kind:
        lines.append(f"kind       {outcome.kind}")
    if compute:
        lines.append("compute    " + ", ".join(compute))
    h = outcome.headline
    if h is not None:
        value = s["metrics"].get(h.name, outcome.headline_value)
        better = {"max": "higher is better", "min": "lower is better"}.get(h.direction, "")
        shown = f"{value:.6g}" if isinstance(value, int | float) else "(not reached)"
        unit = f" {h.unit}" if h.unit else ""
        lines.append(f"headline   {h.name} = {shown}{unit}" + (f"  ({better})" if better else ""))
    if s.get("finished"):
        lines.append(f"finished   {s['finished']}")
    if s.get("error"):
        lines.append(f"error      {s['error']}")
    if s["last_step"] is not None:
        lines.append(f"last step  {s['last_step']}")
    if s["metrics"]:
        width = max(len(n) for n in s["metrics"])
        lines.append("metrics (final value):")
        for n, v in s["metrics"].items():
            m = find_metric(outcome.declared, n)
            tag = {"max": "  (max)", "min": "  (min)"}.get(m.direction, "") if m is not None else ""
            lines.append(f"  {n:<{width}}  {v:.6g}{tag}")
    if s["populations"]:
        lines.append("spikes (events):")
        lines += [f"  {p}  {c}" for p, c in s["populations"].items()]
    if s["traces"]:
        lines.append("traces [records, ...]:")
        lines += [f"  {n}  {shape}" for n, shape in s["traces"].items()]
    if s["weights"]:
        lines.append("weights [snapshots, ...]:")
        lines += [f"  {n}  {shape}" for n, shape in s["weights"].items()]
    if s["arrays"]:
        lines.append("arrays:")
        for p, shape in s["arrays"].items():
            attrs = {k: v for k, v in array_attrs.get(p, {}).items() if isinstance(v, int | float | str)}
            extra = "  " + ", ".join(f"{k}={fmt(v)}" for k, v in attrs.items()) if attrs else ""
            lines.append(f"  {p}  {shape}{extra}")
    lines.append(f"groups     {', '.join(s['groups']) or '(none)'}")
    return "\n".join(lines)
