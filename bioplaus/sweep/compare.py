"""`compare`: mean ± std of a final metric over seeds, grouped by the parameters that differ.

Reads the run files themselves (a sweep directory's ``*.h5`` or files named one by one):
their stored config (flattened to dotted keys), status and ``final_<metric>`` root
attributes. Only runs with status ``done`` enter the numbers; std is the sample standard
deviation (n - 1; 0 for one run).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bioplaus.config import kind_metrics
from bioplaus.errors import ConfigError, OutputError, RunFileError, os_reason
from bioplaus.record.reader import open_run

# Keys that differ between runs without being a compared setting.
IGNORED = ("seed", "name", "record.", "train.progress", "train.report", "train.threads")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


@dataclass
class RunInfo:
    path: Path
    status: str
    seed: int | None
    params: dict[str, Any]
    finals: dict[str, float]
    headline: str | None


@dataclass
class Comparison:
    """The grouped numbers: ``rows`` (group values, n, mean, std, seeds) and written files."""

    metric: str
    by: list[str]
    rows: list[dict[str, Any]]
    excluded: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def table(self) -> str:
        """The rows as an aligned text table."""
        cols = [*self.by, "n", f"{self.metric} mean", "std", "seeds"]
        body = [[_fmt(r[k]) for k in self.by] + [str(r["n"]), f"{r['mean']:.4f}", f"{r['std']:.4f}", r["seeds"]]
                for r in self.rows]
        widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True)) for b in body]
        if self.excluded:
            lines.append("excluded: " + ", ".join(f"{n} {s}" for s, n in sorted(self.excluded.items())))
        return "\n".join(lines)

    def markdown(self) -> str:
        cols = [*self.by, "n", f"{self.metric} (mean ± std)", "seeds"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in self.rows:
            cells = [_fmt(r[k]) for k in self.by] + [str(r["n"]), f"{r['mean']:.4f} ± {r['std']:.4f}", r["seeds"]]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | dict):
        return json.dumps(v, separators=(",", ":"))
    return "" if v is None else str(v)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _ignored(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in IGNORED)


def read_run(path: Path) -> RunInfo:
    """What compare needs from one run file (untrusted: errors are `RunFileError`)."""
    with open_run(path) as run:
        o = run.outcome(kind_metrics)
    return RunInfo(path, o.status, o.seed, _flatten(o.config), o.finals, o.headline.name if o.headline else None)


def collect(paths: Iterable[str | Path]) -> tuple[list[RunInfo], int]:
    """Run files from directories (their ``*.h5`` but the index) and files; (runs, unreadable in dirs)."""
    runs: list[RunInfo] = []
    skipped = 0
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.glob("*.h5")):
                if f.name == "index.h5":
                    continue
                try:
                    runs.append(read_run(f))
                except (RunFileError, OSError):
                    skipped += 1
        elif p.is_file():
            runs.append(read_run(p))
        elif p.exists():
            raise ConfigError(f"{p}: not a regular file or directory (a FIFO or device is not read)")
        else:
            raise ConfigError(f"{p}: no such run file or directory")
    if not runs:
        raise ConfigError("compare: no run files found in " + ", ".join(map(str, paths)))
    return runs, skipped


def _key(v: Any) -> tuple[int, Any]:
    """Sort key: numbers, then lists of numbers ([8] before [32]), then the rest as text."""
    def num(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    if num(v):
        return (0, float(v))
    if isinstance(v, list) and all(num(x) for x in v):
        return (1, tuple(float(x) for x in v))
    return (2, _fmt(v))


def differing(runs: Sequence[RunInfo]) -> list[str]:
    """Config keys (dotted) whose values are not the same in every run, in config order."""
    keys: list[str] = []
    for r in runs:
        keys.extend(k for k in r.params if k not in keys)
    out = []
    for k in keys:
        if _ignored(k):
            continue
        texts = {json.dumps(r.params.get(k), sort_keys=True, default=str) for r in runs}
        if len(texts) > 1:
            out.append(k)
    return out


def compare(
    paths: Iterable[str | Path],
    by: Sequence[str] | None = None,
    metric: str | None = None,
    out: str | Path | None = None,
    plot: bool = False,
    write: bool = True,
) -> Comparison:
    """Group ``done`` runs by ``by`` (default: the differing config keys); mean ± std of ``metric``.

    ``metric`` defaults to the runs' declared headline. With ``write``, ``compare_<metric>.csv``
    and ``.md`` (and with ``plot`` a ``.png``) go to ``out``, default the (first) directory
    given, else the first file's directory; those three files are replaced if present.
    """
    paths = list(paths)
    runs, unreadable = collect(paths)
    excluded: dict[str, int] = {}
    if unreadable:
        excluded["unreadable"] = unreadable
    done = []
    for r in runs:
        if r.status == "done":
            done.append(r)
        else:
            excluded[r.status] = excluded.get(r.status, 0) + 1
    if not done:
        raise ConfigError("compare: no run has status done (" + ", ".join(f"{n} {s}" for s, n in excluded.items()) + ")")
    if metric is None:
        heads = [r.headline for r in done if r.headline]
        if not heads:
            raise ConfigError("compare: the runs declare no headline metric; name one with --metric")
        metric = heads[0]
    metric = metric.removeprefix("final_")
    have = [r for r in done if metric in r.finals]
    if not have:
        names = sorted({k for r in done for k in r.finals})
        raise ConfigError(f"--metric {metric}: no run has final_{metric}; available: {', '.join(names) or 'none'}")
    if len(have) < len(done):
        excluded[f"without final_{metric}"] = len(done) - len(have)
    if by:
        known = {k for r in have for k in r.params}
        for k in by:
            if k not in known:
                raise ConfigError(f"--by {k}: not a config key of these runs; differing keys: "
                                  f"{', '.join(differing(have)) or 'none'}")
        keys = list(by)
    else:
        keys = differing(have)
    groups: dict[str, tuple[dict[str, Any], list[RunInfo]]] = {}
    for r in sorted(have, key=lambda r: tuple(_key(r.params.get(k)) for k in keys)):
        values = {k: r.params.get(k) for k in keys}
        groups.setdefault(json.dumps(values, sort_keys=True, default=str), (values, []))[1].append(r)
    rows = []
    for values, members in groups.values():
        xs = [r.finals[metric] for r in members]
        n = len(xs)
        mean = sum(xs) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
        seeds = ",".join(str(s) for s in sorted(r.seed for r in members if r.seed is not None))
        rows.append({**values, "n": n, "mean": mean, "std": std, "seeds": seeds})
    result = Comparison(metric, keys, rows, excluded)
    if write:
        first = Path(paths[0])
        dest = Path(out) if out else (first if first.is_dir() else first.parent)
        _prepare_dest(dest)
        stem = "compare_" + (_UNSAFE.sub("_", metric).strip("._") or "metric")
        csv_path = dest / f"{stem}.csv"
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow([*keys, "n", "mean", "std", "seeds"])
        for r in rows:
            w.writerow([_fmt(r[k]) if not isinstance(r[k], float) else repr(r[k]) for k in keys]
                       + [r["n"], repr(r["mean"]), repr(r["std"]), r["seeds"]])
        md_path = dest / f"{stem}.md"
        _write_text(csv_path, buf.getvalue())
        _write_text(md_path, result.markdown())
        result.files = [csv_path, md_path]
        if plot:
            png = dest / f"{stem}.png"
            if os.path.lexists(png) and not png.is_file():
                raise OutputError(f"{png}: is not a regular file; refusing to write the plot there")
            try:
                result.files.append(plot_comparison(result, png))
            except OSError as exc:
                raise OutputError(f"{png}: cannot write the plot: {os_reason(exc)}") from None
    return result


def _prepare_dest(dest: Path) -> None:
    """The directory compare writes into exists (made if needed), or `OutputError` in one line."""
    if os.path.lexists(dest) and not dest.is_dir():
        raise OutputError(f"--out {dest}: exists and is not a directory; compare writes its tables into a directory")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"--out {dest}: cannot create the directory: {os_reason(exc)}") from None


def _write_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a temporary file renamed over it); a file in the way
    that is not a regular file, or an OS refusal (read-only, disk full), is `OutputError`."""
    if os.path.lexists(path) and not path.is_file():
        raise OutputError(f"{path}: is not a regular file; refusing to write the comparison there")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(f"{path}: cannot write the comparison: {os_reason(exc)}") from None


def plot_comparison(c: Comparison, path: Path) -> Path:
    """The metric against the first numeric grouping key, one line per group of the others."""
    from bioplaus.report.kit import new_figure  # matplotlib only when a plot is asked for

    numeric = [k for k in c.by if all(isinstance(r[k], int | float) and not isinstance(r[k], bool) for r in c.rows)]
    x_key = numeric[0] if numeric else (c.by[0] if c.by else None)
    rest = [k for k in c.by if k != x_key]
    fig = new_figure(6, 4)
    ax = fig.add_subplot()
    lines: dict[str, list[dict[str, Any]]] = {}
    for r in c.rows:
        label = ", ".join(f"{k}={_fmt(r[k])}" for k in rest)
        lines.setdefault(label, []).append(r)
    categories: list[str] = []
    if x_key is not None and x_key not in numeric:
        categories = list(dict.fromkeys(_fmt(r[x_key]) for r in c.rows))
    for label, rs in lines.items():
        if x_key is None:
            xs: list[float] = [0.0] * len(rs)
        elif categories:
            xs = [float(categories.index(_fmt(r[x_key]))) for r in rs]
        else:
            xs = [float(r[x_key]) for r in rs]
        ax.errorbar(xs, [r["mean"] for r in rs], yerr=[r["std"] for r in rs], marker="o", capsize=3,
                    label=label or None)
    if categories:
        ax.set_xticks(range(len(categories)), categories)
    elif x_key is not None:
        xs_all = [float(r[x_key]) for r in c.rows]
        if min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 20:
            ax.set_xscale("log")
    ax.set_xlabel(x_key or "")
    ax.set_ylabel(f"{c.metric} (mean ± std over seeds)")
    if any(lines):
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)
    return path
