"""The sweep index: one row per run (parameters, status, wall time, final metrics).

Written as ``index.csv`` and ``index.h5`` in the sweep directory, rewritten atomically (a
temporary file, then ``os.replace``) each time a run finishes, so a reader never sees half
a file and a killed sweep leaves the last complete index.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from bioplaus.errors import OutputError
from bioplaus.record.reader import Outcome

INDEX_FORMAT = "bioplaus-sweep-index"
LEAD = ("file", "status")
TAIL = ("seed", "wall_s", "steps", "headline", "headline_value")


def columns(rows: Sequence[Mapping[str, Any]], params: Sequence[str]) -> list[str]:
    """``file, status, <params>, seed, wall_s, steps, headline, headline_value, final_*, error``."""
    finals: list[str] = []
    for row in rows:
        finals.extend(k for k in row if k.startswith("final_") and k not in finals)
    return [*LEAD, *params, *TAIL, *finals, "error"]


def outcome_row(o: Outcome) -> dict[str, Any]:
    """A run's outcome as index fields: status, error, steps, ``run_s`` (the run's own
    seconds), ``final_<metric>``, and ``headline`` / ``headline_value`` if one is declared."""
    row: dict[str, Any] = {"status": o.status, "error": o.error, "steps": o.steps, "run_s": o.seconds}
    row.update({f"final_{k}": v for k, v in o.finals.items()})
    if o.headline is not None:
        row["headline"] = o.headline.name
        row["headline_value"] = o.headline_value
    return row


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list | dict):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def write_index(out: Path, rows: Sequence[Mapping[str, Any]], params: Sequence[str]) -> tuple[Path, Path]:
    """Write ``out/index.csv`` and ``out/index.h5`` atomically; return their paths."""
    try:
        return _write_index(out, rows, params)
    except OSError as exc:
        from bioplaus.errors import os_reason

        for name in (".index.csv.tmp", ".index.h5.tmp"):
            with contextlib.suppress(OSError):
                (out / name).unlink()
        where = getattr(exc, "filename2", None) or getattr(exc, "filename", None) or out / "index.csv"
        raise OutputError(f"{where}: cannot write the sweep index: {os_reason(exc)} "
                          "(the previous index is left as it was)") from None


def _write_index(out: Path, rows: Sequence[Mapping[str, Any]], params: Sequence[str]) -> tuple[Path, Path]:
    cols = columns(rows, params)
    csv_path, h5_path = out / "index.csv", out / "index.h5"
    tmp = out / ".index.csv.tmp"
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for row in rows:
            w.writerow([_cell(row.get(c)) for c in cols])
    os.replace(tmp, csv_path)
    tmp = out / ".index.h5.tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = INDEX_FORMAT
        f.attrs["columns"] = json.dumps(cols)
        f.attrs["n_runs"] = len(rows)
        for c in cols:
            values = [row.get(c) for row in rows]
            if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values) and any(
                v is not None for v in values
            ):
                data = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
                f.create_dataset(c, data=data)
            else:
                f.create_dataset(c, data=[_cell(v) for v in values], dtype=h5py.string_dtype())
    os.replace(tmp, h5_path)
    return csv_path, h5_path


def read_index_csv(path: Path) -> dict[str, dict[str, str]]:
    """Rows of an existing ``index.csv`` by file name (text cells); {} if absent or unreadable."""
    try:
        with path.open(newline="") as fh:
            return {r["file"]: r for r in csv.DictReader(fh) if r.get("file")}
    except (OSError, KeyError, csv.Error, UnicodeDecodeError):
        return {}


def read_index(path: str | Path) -> list[dict[str, Any]]:
    """The rows of ``index.h5`` (numbers as floats, NaN = missing; text as str)."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != INDEX_FORMAT:
            raise ValueError(f"{path}: not a sweep index")
        cols = json.loads(f.attrs["columns"])
        data = {c: f[c][()] for c in cols}
    n = len(next(iter(data.values()))) if data else 0
    rows = []
    for i in range(n):
        row: dict[str, Any] = {}
        for c in cols:
            v = data[c][i]
            row[c] = v.decode() if isinstance(v, bytes) else float(v)
        rows.append(row)
    return rows
