"""Packaging that pyproject.toml cannot say: the top-level sims/ ships as bioplaus/_sims/.

Everything else (metadata, dependencies, package data) is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["bioplaus*", "neuro_data*"]) + ["bioplaus._sims"],
    package_dir={"bioplaus._sims": "sims"},
)
