"""Fixtures shared by the reference claims (PAPER.md claims 1-13).

The plugin provides ``model_pair``, ``evaluator``, ``claim``, ``probe``, ``eval_data`` and
``mt_config``, and for claim authors ``selections`` (the papers' neuron selections) and
``attribution`` (the block-bootstrap attribution inputs); this file turns the claims' results
into the HTML report's figures (``mt_paper_figures.py``, fed through the plugin's
``pytest_mechtests_claim`` hook) and names the papers' conditions in the interventions table
(``pytest_mechtests_evaluator``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from mt_paper_figures import FIGURE_NOTES, RECOVERY_CAPTION, RECOVERY_FAMILIES, RECOVERY_RENDER, RECOVERY_TITLE

from mechtests.claims import ClaimResult
from mechtests.effects import BlockAttribution
from mechtests.evaluator import Evaluator
from mechtests.plugin import FigureSink

_recovery_points = pytest.StashKey[list[dict[str, Any]]]()


def pytest_mechtests_claim(item: pytest.Item, result: ClaimResult) -> None:
    """Every recovered-fraction claim, pass or fail, becomes a point of the recovery figure."""
    family = RECOVERY_FAMILIES.get(result.name)
    e = result.estimate
    if family is None or result.pair is None or not all(math.isfinite(v) for v in (e.value, e.ci_low, e.ci_high)):
        return
    item.config.stash.setdefault(_recovery_points, []).append({
        "pair": result.pair, "family": family, "k": max(int(result.params.get("neurons", 1)), 1),
        "estimate": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high})


@dataclasses.dataclass
class FigureRecorder:
    """The attributions the claims used, for the attribution figures."""

    attributions: dict[str, BlockAttribution] = dataclasses.field(default_factory=dict)


@pytest.fixture(scope="session", autouse=True)
def figure_recorder(mt_figures: FigureSink, pytestconfig: pytest.Config) -> Iterator[FigureRecorder]:
    """Session recorder; at the end it adds the papers' figures to the ``--mt-html`` report
    (teardown runs before the plugin writes the report at session finish)."""
    recorder = FigureRecorder()
    yield recorder
    from mechtests import figures

    add = mt_figures.add

    for pair, attr in sorted(recorder.attributions.items()):
        for title, svg, caption, data in figures.attribution_figures(attr, notes=FIGURE_NOTES):
            add(f"{title} ({pair})", svg, caption, data={"pair": pair, **data})
    # Under pytest-xdist each worker saw some of the points: hand over rows, drawn once at the end.
    points = pytestconfig.stash.get(_recovery_points, [])
    for pair in sorted({p["pair"] for p in points}):
        pts = [p for p in points if p["pair"] == pair]
        mt_figures.add_rows(f"{RECOVERY_TITLE} ({pair})", pts, render=RECOVERY_RENDER, caption=RECOVERY_CAPTION)


def per_prompt(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-prompt arrays as the float64 tuple ``claim(samples=...)`` expects."""
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)


def pytest_mechtests_evaluator(evaluator: Evaluator) -> None:
    """Name the papers' conditions the claims use in the interventions table, with the paper's values."""
    from mt_protocol import label_conditions

    evaluator.labellers.append(label_conditions)
