"""Claim 2 (PAPER.md): the toxicity probe separates toxic from clean text."""

from __future__ import annotations

import numpy as np

from mechtests.evaluator import Evaluator
from mt_reference import ref


def test_probe_separates_toxic_text(evaluator: Evaluator, probe, eval_data, mt_config, claim) -> None:
    """The probe's held-out accuracy on labelled text > 0.85.

    Paper (PAPER.md, "Setup", from B): logistic regression on the last layer's residual stream,
    mean-pooled over real tokens, trained on Jigsaw (90:10 split); 94% held-out accuracy.
    Bootstrap over held-out examples.
    """
    data = eval_data.probe_data
    n = getattr(mt_config, "n_probe_eval", None)
    if n and n < len(data):
        data = data.head(n)
    from mechtests.probes import probe_correct

    correct = probe_correct(evaluator.model("base"), probe, data).astype(np.float64)
    claim("probe_separates_toxic_text", metric="held-out accuracy", direction=">", threshold=0.85,
          samples=(correct,), statistic=np.mean, reference=ref("Setup: probe accuracy 94% (B)", 0.94),
          params={"n_examples": int(correct.size)})
