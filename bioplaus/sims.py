"""The ready experiments (``sims/*.toml``), found by name in a wheel install or a checkout.

A wheel carries the repository's top-level ``sims/`` as ``bioplaus/_sims/`` (see setup.py); a
source checkout (editable install, ``PYTHONPATH``) reads ``sims/`` beside the package.
"""

from __future__ import annotations

from pathlib import Path

from bioplaus.errors import ConfigError, close_names, os_reason

_PKG = Path(__file__).resolve().parent


def sims_dir() -> Path | None:
    """The directory of packaged sims: ``bioplaus/_sims`` in a wheel, ``<checkout>/sims``."""
    if (_PKG / "_sims").is_dir():
        return _PKG / "_sims"
    # Only a source checkout (pyproject.toml beside the package), never a stray site-packages/sims.
    if (_PKG.parent / "pyproject.toml").is_file() and (_PKG.parent / "sims").is_dir():
        return _PKG.parent / "sims"
    return None


def sim_names() -> list[str]:
    """Names of the packaged sims, sorted (``quickstart`` for ``sims/quickstart.toml``)."""
    d = sims_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d else []


def resolve_config(arg: str) -> str:
    """``arg`` if it is a file, else the packaged sim it names; one-line ConfigError if neither.

    A bare name (``quickstart`` or ``quickstart.toml``, no directory part) is looked up among
    the packaged sims; a missing path is left for the config loader to report.
    """
    p = Path(arg)
    try:
        if p.is_file():
            return arg
    except OSError as e:  # a name too long for the file system, a loop of links, ...
        shown = arg if len(arg) <= 80 else arg[:77] + "..."
        raise ConfigError(f"{shown}: not a readable config file ({os_reason(e)})") from None
    name = p.name.removesuffix(".toml")
    names = sim_names()
    if p.name != arg:  # a path: report it as missing, pointing at the sim of that name if any
        if name in names:
            raise ConfigError(f"{arg}: config file not found; the packaged sim of that name "
                              f"runs with `bioplaus run {name}`")
        return arg
    if name in names:
        return str(sims_dir() / f"{name}.toml")
    close = close_names(name, names, n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "`bioplaus list` names them all"
    raise ConfigError(f"{arg}: no such config file and no packaged sim of that name; {hint}")
