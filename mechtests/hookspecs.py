"""Hooks the mechtests plugin calls, for conftest.py files and plugins of claim authors.

Example (a conftest.py):
    def pytest_mechtests_evaluator(evaluator):
        evaluator.labellers.append(name_my_conditions)

    def pytest_mechtests_claim(item, result):
        if result.name == "my_claim":
            points.append((result.params["k"], result.estimate.value))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy
import pytest

if TYPE_CHECKING:
    from mechtests.claims import ClaimResult
    from mechtests.evaluator import Evaluator

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_mechtests_evaluator(evaluator: Evaluator, config: pytest.Config) -> None:
    """Called once for each `mechtests.evaluator.Evaluator` the ``evaluator`` fixture builds (one
    per pair per process), before any test uses it: e.g. to add a labeller that names conditions
    in the interventions table (``evaluator.labellers``, ``evaluator.label_condition``)."""


@hookspec
def pytest_mechtests_claim(item: pytest.Item, result: ClaimResult) -> None:
    """Called after each claim a test states through the ``claim`` fixture, whatever its verdict
    (the test's outcome is set after its body), with the `mechtests.claims.ClaimResult`: e.g. to
    collect results for a figure, without reading pytest's report internals."""
