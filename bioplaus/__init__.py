"""bioplaus: biologically plausible and spiking learning rules, every run recorded to HDF5."""

from __future__ import annotations

__version__ = "0.1.0"

from bioplaus.errors import BioplausError, ConfigError, DataError, RunError  # noqa: E402


def open_run(path):  # noqa: ANN001, ANN201
    """Open a run file for reading (see `bioplaus.record.reader.RunFile`)."""
    from bioplaus.record import open_run as _open

    return _open(path)


__all__ = [
    "BioplausError",
    "ConfigError",
    "DataError",
    "RunError",
    "open_run",
    "__version__",
]
