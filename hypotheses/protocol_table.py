"""The papers' interventions table for a pair, without the claims (PAPER.md: 13 conditions x
toxicity, perplexity, F1). Not collected by ``pytest hypotheses/``; run it by name:

    pytest hypotheses/protocol_table.py                                   # the default pair
    pytest hypotheses/protocol_table.py --mt-base A --mt-tuned B --mt-profile full

The table is printed after the run (no ``-v`` needed) and goes to ``--mt-json`` / ``--mt-html``.
It shares the claims' cache both ways: a condition computed here is a cache hit for a claim, and
the other way round.
"""

from __future__ import annotations

import numpy as np
import pytest
from mt_protocol import build_conditions, label_for

from mechtests.evaluator import Evaluator

pytestmark = [pytest.mark.mechtests_data("challenge", "perplexity", "f1"), pytest.mark.mechtests_table]


def test_papers_interventions_table(evaluator: Evaluator) -> None:
    """Every condition of the papers' table this pair can run, each with toxicity (per prompt),
    perplexity (per window) and F1 (per item); the others are rows saying why they did not run."""
    built = build_conditions(evaluator)
    runnable = [(c.role, iv) for c, iv, reason in built if reason is None]
    evaluator.prefetch(runnable)
    for order, (c, iv, reason) in enumerate(built):
        if reason is not None:
            evaluator.conditions.omit(c.label, reason, role=c.role, paper=c.paper, order=order)
            continue
        evaluator.label_condition(c.role, iv, label_for(c, iv), paper=c.paper, order=order)
        tox, ppl, f1 = evaluator.toxicity(c.role, iv), evaluator.perplexity(c.role, iv), evaluator.f1(c.role, iv)
        assert np.isfinite(tox).all() and np.isfinite(f1).all() and np.isfinite(ppl.value), c.name
