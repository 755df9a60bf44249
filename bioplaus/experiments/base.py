"""The experiment-kind seam and the driver that runs any kind end to end."""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bioplaus.config import ExperimentConfig
from bioplaus.context import RunContext
from bioplaus.errors import RunInterrupted
from bioplaus.metrics import Metric, find_metric, headline
from bioplaus.neurons.kernel import load_info
from bioplaus.registry import TRAINING_FIGURES


class Experiment:
    """Base of every experiment kind.

    A kind owns: its tables (``Config``, a dataclass parsed from ``[<section>]``; ``section``
    defaults to the kind's name; `sections` may add more, as the gradient kinds'
    ``[data]``, ``[network]``, ``[rule]``, ``[[plugins]]``), its validation, the devices it
    runs on, its data source, its loop, the metrics it declares and the figures drawn for
    its runs (``figures``). The driver calls, in order: ``build()`` (everything
    that can fail on bad input, before the run file exists), ``meta()`` and ``metrics()``
    (stored in the run file), ``run()`` (the loop; returns the final metrics) and
    ``close()`` (always). Emit everything through ``self.ctx`` (a `RunContext`).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type | None] = None
    section: ClassVar[str] = ""
    # Registered figure names `bioplaus report` tries on a run of this kind (besides those of
    # its rule and plugins); by default the figure kit's figures of a training run.
    figures: ClassVar[tuple[str, ...]] = TRAINING_FIGURES
    # The devices a run of this kind can use (`bioplaus.device.run_device`): with "cuda"
    # every tensor follows ``train.device``; without it the kind runs on the CPU under
    # "auto" and refuses "cuda".
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    # Top-level tables of the config written to the run file, in this order first (see
    # `ExperimentConfig.to_dict`); the others follow.
    table_order: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: ExperimentConfig, ctx: RunContext, data: Any = None) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.user_data = data
        self.options = cfg.section(self.section_name()) if self.Config is not None else None

    @classmethod
    def section_name(cls) -> str:
        return cls.section or cls.name

    @classmethod
    def sections(cls) -> dict[str, Any]:
        """The tables this kind owns: ``{name: dataclass}`` (or ``list[dataclass]`` for an
        array of tables such as ``[[plugins]]``)."""
        return {cls.section_name(): cls.Config} if cls.Config is not None else {}

    @classmethod
    def validate(cls, cfg: ExperimentConfig) -> None:
        """Cross-field checks of the kind's table (and of the generic tables it reads)."""

    @classmethod
    def declared_metrics(cls, cfg: ExperimentConfig) -> list[Metric]:
        """The metrics a run of this config writes (used when a file lacks declarations)."""
        return []

    def metrics(self) -> list[Metric]:
        return self.declared_metrics(self.cfg)

    def meta(self) -> dict[str, Any]:
        """Root attributes of the run file besides config, seed and versions."""
        return {}

    def build(self) -> None:
        """Load data, build models: everything before the run file is created."""

    def run(self) -> dict[str, float]:
        raise NotImplementedError

    def close(self) -> None:
        """Called once at the end, whatever the status."""


@dataclass
class RunResult:
    """What a finished run reports (the run file holds everything)."""

    path: Path
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0
    figures: list[Path] = field(default_factory=list)
    declared: list[Metric] = field(default_factory=list)
    # The kind's object after the run: its trained rule, model and data (Python callers).
    experiment: Any = field(default=None, repr=False, compare=False)

    @property
    def headline(self) -> tuple[str, float] | None:
        """(name, value) of the declared headline metric, if the run reported it."""
        h = headline(self.declared)
        if h is None or h.name not in self.metrics:
            return None
        return h.name, self.metrics[h.name]

    def summary(self) -> str:
        keys = [k for k in self.metrics if (m := find_metric(self.declared, k)) is not None and (m.summary or m.headline)]
        keys.sort(key=lambda k: not find_metric(self.declared, k).headline)  # type: ignore[union-attr]
        parts = [f"{k}={self.metrics[k]:.4f}" for k in keys]
        return f"{self.status}: " + " ".join(parts) + f" | {self.steps} steps in {self.seconds:.1f} s -> {self.path}"


def _kernel_attrs(seconds: float, compiled: bool) -> dict[str, float]:
    """Root attributes for the LIF kernel's load in this run (none if it was loaded before).

    ``kernel_seconds``: loading (or compiling) it; ``kernel_compile_seconds``: the same when
    this run compiled it. Neither is in ``seconds`` (docs: bioplaus/record/schema.md).
    """
    if not seconds:
        return {}
    return {"kernel_seconds": seconds, **({"kernel_compile_seconds": seconds} if compiled else {})}


def default_out(cfg: ExperimentConfig) -> Path:
    return Path(cfg.record.out) if cfg.record.out else Path("runs") / f"{cfg.name}.h5"


def out_policy(cfg: ExperimentConfig, out: str | Path | None, overwrite: bool | None) -> tuple[Path, str]:
    """The run file asked for and what to do if it exists (`check_out_path`'s ``on_exists``).

    A path given (``out``, ``record.out``) is refused if it exists unless ``overwrite``; the
    default ``runs/<name>.h5`` takes the next free ``runs/<name>-<k>.h5`` instead.
    """
    ow = cfg.record.overwrite if overwrite is None else overwrite
    given = bool(out) or bool(cfg.record.out)
    path = Path(out) if out else default_out(cfg)
    return path, "overwrite" if ow else ("refuse" if given else "number")


def run_experiment(
    cfg: ExperimentConfig,
    out: str | Path | None = None,
    progress: bool | None = None,
    data: Any = None,
    overwrite: bool | None = None,
) -> RunResult:
    """Run one experiment of any kind end to end; return its result.

    ``data`` hands the kind a data source built in Python (for the gradient kinds a
    ``neuro_data.Dataset``) instead of ``[data]``. ``overwrite`` (default
    ``record.overwrite``) replaces an existing run file; see `out_policy`. The output path
    is checked before anything is built, and the file is created only once the run starts:
    a run that fails validation or build, or is interrupted before, leaves the path as it
    was. A signal then raises `RunInterrupted` naming the file, if there is one.
    """
    from bioplaus.device import run_device
    from bioplaus.record.writer import check_out_path
    from bioplaus.registry import EXPERIMENTS

    kind_cls = EXPERIMENTS.get(cfg.kind or "supervised", "kind")
    path, on_exists = out_policy(cfg, out, overwrite)
    check_out_path(path, on_exists)  # fail now rather than after a long build
    ctx = RunContext(
        path,
        seed=cfg.seed,
        threads=cfg.train.threads,
        config=cfg.to_dict(),
        name=cfg.name,
        progress=cfg.train.progress if progress is None else progress,
        flush_every_s=cfg.record.flush_every_s,
        on_exists=on_exists,
        device=run_device(cfg),
    )
    try:
        with ctx:
            exp = kind_cls(cfg, ctx, data=data)
            kernel_s0 = load_info()["seconds"]
            try:
                exp.build()
                ctx.declare(*exp.metrics())
                ctx.check_stop()  # a signal during set-up: nothing is written
                meta = {"kind": kind_cls.name, **exp.meta()}
                ctx.open(meta)
                if ctx.out != path and ctx.progress_enabled:
                    print(f"{path} exists; writing {ctx.out}", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                kernel_s1 = load_info()["seconds"]
                final = exp.run()
                # a first spiking run compiles the LIF kernel inside the loop: not training time
                kernel = load_info()
                seconds = time.perf_counter() - t0 - (kernel["seconds"] - kernel_s1)
            except BaseException:
                with contextlib.suppress(Exception):  # a teardown failure never masks the error
                    exp.close()
                raise
            exp.close()
            kernel_s = kernel["seconds"] - kernel_s0
            ctx.close(
                "done", seconds=seconds, steps=ctx.step,
                **_kernel_attrs(kernel_s, bool(kernel["compiled"])),
                **{f"final_{k}": v for k, v in final.items() if "/" not in k},
            )
    except KeyboardInterrupt as exc:
        if isinstance(exc, RunInterrupted):
            raise
        raise RunInterrupted(ctx.out if ctx.recorder is not None else None) from None
    path = ctx.out if ctx.out is not None else path
    figures: list[Path] = []
    if cfg.train.report:
        from bioplaus.report import make_report

        figures = make_report(path, path.with_suffix("").with_name(path.stem + "_figures"))
    return RunResult(path, "done", final, seconds, ctx.step, figures, list(ctx.declared), exp)
