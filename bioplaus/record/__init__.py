"""Run files: `Recorder` streams a run into HDF5, `open_run` reads it back (also live).

The layout is described in ``bioplaus/record/schema.md`` (format_version 1).
"""

from bioplaus.record.reader import RunFile, SpikeEvents, open_run
from bioplaus.record.writer import FORMAT, FORMAT_VERSION, STATUSES, Recorder

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "STATUSES",
    "Recorder",
    "RunFile",
    "SpikeEvents",
    "open_run",
]
