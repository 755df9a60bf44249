"""Export and import: NIR graphs (`nir`), peer adapters (`peers`), NWB files (`nwb`).

``bioplaus.export.to_nir``, ``export_nir``, ``from_nir``, ``load_net``, ``export_nwb`` load
their module on first use, so ``import bioplaus.export`` needs neither nir nor pynwb.
"""

from __future__ import annotations

from typing import Any

_NAMES = {
    "to_nir": "bioplaus.export.nir", "export_nir": "bioplaus.export.nir", "from_nir": "bioplaus.export.nir",
    "read_nir": "bioplaus.export.nir", "load_net": "bioplaus.export.nir",
    "snntorch_from_nir": "bioplaus.export.peers", "norse_from_nir": "bioplaus.export.peers",
    "export_nwb": "bioplaus.export.nwb",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'bioplaus.export' has no attribute {name!r}")
