"""Train a spiking MLP with counter-current learning from Python and read the run file back.

    python examples/python_api.py [OUT_DIR]

Runs on scikit-learn's 8x8 digits (no download) in about a minute on 2 cores.
"""

import sys

import bioplaus

out = sys.argv[1] if len(sys.argv) > 1 else "runs"
result = bioplaus.run(
    {
        "name": "ccl_spiking_digits",
        "data": {"dataset": "digits", "batch_size": 32},
        "network": {"backend": "spiking", "hidden": [128], "spiking": {"T": 10}},
        "rule": {"name": "ccl", "lr": 0.05, "momentum": 0.9},
        "train": {"epochs": 3},
    },
    out=f"{out}/ccl_spiking_digits.h5",
    report=False,
)
print(result.summary())

# The run file holds every metric; the headline is what the kind declared.
name, value = result.headline
with bioplaus.open_run(result.path) as run:
    print(f"{name} = {value:.3f}; test_acc per evaluation: {run.metrics['test_acc'].round(3)}")
