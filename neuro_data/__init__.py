"""neuro_data: data sets, task streams, spike encoders and pattern generators for bioplaus.

Self-contained (numpy, torch, scikit-learn for ``digits``); it does not import bioplaus.
"""

from __future__ import annotations

from neuro_data import streams
from neuro_data.arrays import SCALES, DataFormatError
from neuro_data.datasets import (
    DATASETS,
    FORMATS,
    DataNotFoundError,
    Dataset,
    check_dataset,
    from_arrays,
    load_dataset,
    load_idx_dir,
    load_npz,
)
from neuro_data.encoders import ENCODERS, encode
from neuro_data.idx import read_idx, write_idx
from neuro_data.loader import ArrayLoader, Normalizer, split
from neuro_data.patterns import (
    PATTERNS,
    PatternSet,
    dataset_entropy,
    diluted_patterns,
    make_examples,
    make_pattern_set,
)
from neuro_data.streams import Task, TaskStream, make_stream, permuted
from neuro_data.streams import split as split_classes

__all__ = [
    "DATASETS",
    "ENCODERS",
    "FORMATS",
    "PATTERNS",
    "SCALES",
    "ArrayLoader",
    "DataFormatError",
    "DataNotFoundError",
    "Dataset",
    "check_dataset",
    "Normalizer",
    "PatternSet",
    "Task",
    "TaskStream",
    "dataset_entropy",
    "diluted_patterns",
    "encode",
    "from_arrays",
    "load_dataset",
    "load_idx_dir",
    "load_npz",
    "make_examples",
    "make_pattern_set",
    "make_stream",
    "permuted",
    "read_idx",
    "split",
    "split_classes",
    "streams",
    "write_idx",
]
