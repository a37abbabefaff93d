"""Fixtures shared by the reference claims (PAPER.md claims 1-13).

The plugin provides ``model_pair``, ``evaluator``, ``claim``, ``probe``, ``eval_data`` and
``mt_config``, and for claim authors ``selections`` (the papers' neuron selections) and
``attribution`` (the block-bootstrap attribution inputs); this file adds a session recorder that
turns recovered-fraction results into the HTML report's figures.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from mechtests.evaluator import BlockAttribution


@dataclasses.dataclass
class FigureRecorder:
    """Collects recovered-fraction results across tests, for the recovery-vs-k figure."""

    points: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    attributions: dict[str, BlockAttribution] = dataclasses.field(default_factory=dict)

    def recovery(self, pair: str, family: str, k: int, claim: Any) -> None:
        """Record the latest claim the ``claim`` fixture stated in this test (pass or fail: the
        test's outcome is only set after its body)."""
        if not claim.results:
            return
        e = claim.results[-1].estimate
        if all(math.isfinite(v) for v in (e.value, e.ci_low, e.ci_high)):
            self.points.append({"pair": pair, "family": family, "k": k, "estimate": e.value,
                                "ci_low": e.ci_low, "ci_high": e.ci_high})


@pytest.fixture(scope="session")
def figure_recorder(mt_figures: Any) -> Iterator[FigureRecorder]:
    """Session recorder; at the end it adds the papers' figures to the ``--mt-html`` report
    (teardown runs before the plugin writes the report at session finish)."""
    recorder = FigureRecorder()
    yield recorder
    from mechtests import figures

    add = mt_figures.add

    for pair, attr in sorted(recorder.attributions.items()):
        for title, svg, caption, data in figures.attribution_figures(attr):
            add(f"{title} ({pair})", svg, caption, data={"pair": pair, **data})
    # Under pytest-xdist each worker saw some of the points: hand over rows, drawn once at the end.
    for pair in sorted({p["pair"] for p in recorder.points}):
        pts = [p for p in recorder.points if p["pair"] == pair]
        mt_figures.add_rows(
            f"Recovered fraction vs k ({pair})", pts, render="mechtests.figures:recovery_figure",
            caption="Fraction of DPO's toxicity reduction reproduced by zeroing the top-k toxic neurons (all, or "
            "positively activated only) and by patching groups to the tuned model's activations (k = group "
            "size); bands: claim CIs. Paper A: ablation 0.07-0.55, TP↓ patch 0.48.")


def per_prompt(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-prompt arrays as the float64 tuple ``claim(samples=...)`` expects."""
    return tuple(np.asarray(a, dtype=np.float64) for a in arrays)


def pytest_mechtests_evaluator(evaluator: Any) -> None:
    """Name the papers' conditions the claims use in the interventions table, with the paper's values."""
    from mt_protocol import label_conditions

    evaluator.labellers.append(label_conditions)
