"""Hooks the mechtests plugin calls, for conftest.py files and plugins of claim authors.

Example (a conftest.py):
    def pytest_mechtests_evaluator(evaluator):
        evaluator.labellers.append(name_my_conditions)
"""

from __future__ import annotations

from typing import Any

import pluggy
import pytest

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_mechtests_evaluator(evaluator: Any, config: pytest.Config) -> None:
    """Called once for each `mechtests.evaluator.Evaluator` the ``evaluator`` fixture builds (one
    per pair per process), before any test uses it: e.g. to add a labeller that names conditions
    in the interventions table (``evaluator.labellers``, ``evaluator.label_condition``)."""
