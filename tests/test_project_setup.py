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


def test_ci_gates_on_ruff_and_mypy_after_the_tests() -> None:
    """Both configured in pyproject.toml, pinned in the test extra, run after the test command."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    tests_at = ci.index(_quickstart_commands()[1].strip())
    assert ci.index("ruff check .") > tests_at and ci.index("mypy") > tests_at
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "ruff" in pyproject["tool"] and pyproject["tool"]["mypy"]["files"] == ["mechtests"]
    pinned = [d for d in pyproject["project"]["optional-dependencies"]["test"] if d.startswith(("ruff", "mypy"))]
    assert len(pinned) == 2 and all("==" in d for d in pinned)


def test_pytest_plugin_is_registered_through_the_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["entry-points"]["pytest11"] == {"mechtests": "mechtests.plugin"}
    assert project["requires-python"] == ">=3.11"


def test_test_only_tools_are_not_runtime_dependencies_and_never_imported() -> None:
    """pytest-benchmark and hypothesis belong to the `test` extra: the plugin never imports them."""
    import ast

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = {re.split(r"[<>=!~\[ ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    test_extra = {re.split(r"[<>=!~\[ ]", dep, maxsplit=1)[0].lower() for dep in project["optional-dependencies"]["test"]}
    assert not runtime & {"hypothesis", "pytest-benchmark"} and {"hypothesis", "pytest-benchmark"} <= test_extra
    for path in (ROOT / "mechtests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("hypothesis", "pytest_benchmark"), f"{path} imports {name}"
