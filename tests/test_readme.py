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


def test_readme_links_work_on_pypi() -> None:
    """PyPI shows the README without the repository: every link is absolute, and each one
    into the repository names a file that exists here (the URL pyproject's Source gives)."""
    import tomllib

    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links and all(u.startswith("https://") for u in links), [u for u in links if not u.startswith("https://")]
    source = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Source"]
    ours = [u for u in links if u.startswith(source + "/blob/main/")]
    assert len(ours) >= 20
    missing = [u for u in ours if not (ROOT / u.removeprefix(source + "/blob/main/")).is_file()]
    assert not missing, missing
