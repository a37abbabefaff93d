"""The project's set-up promises: the README's Quickstart and CI run the same test command."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_quickstart_has_exactly_two_commands_one_per_purpose() -> None:
    commands = _quickstart_commands()
    assert len(commands) == 2
    assert commands[0].rstrip().endswith("pytest hypotheses/")
    assert commands[1].rstrip().endswith("pytest tests/")
    for command in commands:
        # torch 2.13.0 first: an open torch requirement would pull a multi-GB CUDA build.
        assert command.index("torch==2.13.0") < command.index("pip install -e")


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert _quickstart_commands()[1].strip() in [line.strip() for line in ci_lines]


def test_pytest_plugin_is_registered_through_the_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["entry-points"]["pytest11"] == {"mechtests": "mechtests.plugin"}
    assert project["requires-python"] == ">=3.11"
