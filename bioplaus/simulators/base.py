"""The simulator contract: replay an exported graph outside bioplaus's torch training path.

A simulator is a `Simulator` registered in `bioplaus.registry.SIMULATORS` (entry points
``bioplaus.simulators``) under the name ``[simulate] backend`` selects (``bioplaus simulate
GRAPH --backend NAME``; the ``simulate`` kind, `bioplaus.experiments.simulate`). Called on a
graph (a NIR file or graph) and samples ``x`` [S, ...], it returns a `SimResult`: spikes and
the output membrane time-major as the torch backend keeps them, and the logits its readout
gives, so any two simulators compare array for array.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch


@dataclass
class SimResult:
    """Per-sample spikes and readout of a simulated graph (time-major like the backend)."""

    spikes: dict[str, np.ndarray]  # firing layer name -> bool [T, S, n] (no leaky integrators)
    mem_out: np.ndarray  # output layer membrane [T, S, n]
    logits: np.ndarray  # [S, classes]
    dt: float
    T: int
    out_name: str = ""  # the output layer's name
    seconds: dict[str, float] = field(default_factory=dict)
    note: str = ""  # one line: what this reading does that bioplaus's does not, and why ("" if nothing)

    @property
    def predicted(self) -> np.ndarray:
        return self.logits.argmax(-1)


class Simulator:
    """Base of every simulator: ``sim(graph, x, mode=..., cache_dir=None) -> SimResult``.

    ``modes`` are the code generation / device modes ``[simulate] mode`` may name (the
    first is the default); ``versions`` is recorded in the run file beside bioplaus's.
    """

    name: ClassVar[str] = ""
    modes: ClassVar[tuple[str, ...]] = ("runtime", "standalone", "numpy")

    def run(self, graph: Any, x: torch.Tensor, *, mode: str, cache_dir: Any = None, **options: Any) -> SimResult:
        """Simulate ``graph`` on samples ``x`` [S, ...] in ``mode``; ``options`` (``dt``,
        ``integration``, ``T``, ``reading``) as the simulator takes them."""
        raise NotImplementedError

    def versions(self) -> str:
        """The simulator's own version line (e.g. ``brian2 2.7.1``); "" when it has none."""
        return ""

    def __call__(self, graph: Any, x: torch.Tensor, *, mode: str | None = None, cache_dir: Any = None,
                 **options: Any) -> SimResult:
        return self.run(graph, x, mode=mode or self.modes[0], cache_dir=cache_dir, **options)
