"""The README's two commands stay true: CI runs the same test command; the sim exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quick)


def test_readme_has_exactly_two_quickstart_commands() -> None:
    cmds = _commands()
    assert len(cmds) == 2
    assert all("\n" not in c for c in cmds)


def test_ci_runs_the_readme_test_command() -> None:
    test_cmd = _commands()[1]
    assert "pytest" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci


def test_quickstart_sim_exists() -> None:
    run_cmd = _commands()[0]
    sim = re.search(r"bioplaus run (\S+)", run_cmd).group(1)
    assert (ROOT / sim).is_file()
