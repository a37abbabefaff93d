"""Claim 2 (PAPER.md): the toxicity probe separates toxic from clean text."""

from __future__ import annotations

import numpy as np
import pytest
from mt_reference import ref

from mechtests.evaluator import Evaluator

# The data roles these claims read: checked at start-up (mechtests.preflight).
pytestmark = pytest.mark.mechtests_data("probe")


def held_out(probe, data, *, test_fraction: float = 0.1):
    """The examples ``probe`` was not trained on.

    A probe trained by ``mechtests.probes.train_probe`` on exactly ``data`` records the data's
    sha256 and its seed; its test split is the first ``test_fraction`` of the seeded
    permutation (the same rule train_probe uses). A probe from elsewhere never saw ``data``.
    """
    meta = dict(probe.metadata)
    if meta.get("trained_on") != data.sha256:
        return data
    n = len(data)
    fraction = float(meta.get("test_fraction", test_fraction))
    n_test = max(1, round(n * fraction))
    order = np.random.default_rng(int(meta.get("seed", 0))).permutation(n)
    return data.subset(sorted(order[:n_test].tolist()))


def test_probe_separates_toxic_text(evaluator: Evaluator, probe, eval_data, mt_config, claim) -> None:
    """The probe's held-out accuracy on labelled text > 0.85.

    Paper (PAPER.md, "Setup", from B): logistic regression on the last layer's residual stream,
    mean-pooled over real tokens, trained on Jigsaw (90:10 split); 94% held-out accuracy.
    Exact (Clopper-Pearson) interval over the held-out examples, independent 0/1 outcomes.
    """
    from mechtests.probes import probe_correct

    full = eval_data.probe_data
    data = held_out(probe, full)
    if data is full:
        split = "all examples: the probe was not trained or fitted on this data"
    elif probe.metadata.get("bias_source") == "fitted":
        split = "held-out split: the probe came from a file, its bias was fitted on the rest of this data"
    else:
        split = "held-out split of the data the probe was trained on"
    n = getattr(mt_config, "n_probe_eval", None)
    if n and n < len(data):
        data = data.head(n)
    correct = np.asarray(evaluator.cached(
        "probe_correct", {"data": data.sha256},
        lambda: probe_correct(evaluator.model("base"), probe, data).astype(np.float64)), dtype=np.float64)
    claim("probe_separates_toxic_text", metric="held-out accuracy", direction=">", threshold=0.85,
          samples=(correct,), proportion=True, reference=ref("Setup: probe accuracy 94% (B)", 0.94),
          params={"n_examples": int(correct.size), "data": full.name, "data_sha256": full.sha256[:16], "split": split})
