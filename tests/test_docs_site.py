"""The documentation site builds with ``mkdocs build --strict`` (links, anchors, API reference)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(site)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the API reference is generated from the docstrings, and the examples are included whole
    api = (site / "reference" / "sweep" / "index.html").read_text()
    assert "Run <code>config</code> over <code>grid</code>" in api and "run_ray" in api
    guide = (site / "sweeps" / "index.html").read_text()
    assert "__main__" in guide and "lr_hidden" in guide and "--8&lt;--" not in guide and "--8<--" not in guide
    assert not (ROOT / "site").exists()  # built into the temporary directory only


def test_every_docs_page_is_in_the_nav() -> None:
    # (mkdocs build --strict fails on a page left out of the nav too; this names it)
    nav = "\n".join(line for line in (ROOT / "mkdocs.yml").read_text().splitlines()
                    if not line.lstrip().startswith("#"))
    pages = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    missing = [p for p in pages if f": {p}" not in nav]
    assert not missing, f"add to the nav of mkdocs.yml (or uncomment its entry): {missing}"
