"""Claim 3 (PAPER.md): DPO's weights stay close to the base model's."""

from __future__ import annotations

import math

import pytest
import torch
from mt_reference import ref

from mechtests.evaluator import Evaluator


def matrix_cosines(evaluator: Evaluator) -> dict[str, float]:
    """Cosine similarity of each base weight matrix (ndim >= 2) with the tuned model's, flattened.

    The matrices are the checkpoint's own, under their Hugging Face names (GPT-2's fused
    attention matrix counts once, as saved).
    """
    base = evaluator.model("base").named_weights()
    tuned = evaluator.model("tuned").named_weights()
    out: dict[str, float] = {}
    with torch.inference_mode():
        for name, w in base.items():
            if w.ndim < 2 or name not in tuned:
                continue
            a, b = w.detach().double().reshape(-1), tuned[name].detach().double().reshape(-1)
            out[name] = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    return out


def test_weights_stay_close(evaluator: Evaluator, claim) -> None:
    """The smallest cosine between a base weight matrix and its tuned counterpart > 0.99.

    Paper (PAPER.md, "Setup", B): "DPO changes every weight only slightly (cosine > 0.99)".
    An exact quantity of the weights (no sampling): the interval has zero width.
    """
    from mechtests.stats import Estimate

    cosines = matrix_cosines(evaluator)
    undefined = sorted(name for name, value in cosines.items() if not math.isfinite(value))
    if undefined or not cosines:
        # min() would silently step over a NaN cosine (a zero or non-finite matrix).
        pytest.fail(f"undefined: the cosine of {undefined or 'every matrix'} is not a number (zero or non-finite "
                    "weights), so the smallest cosine over the weight matrices is undefined.", pytrace=False)
    worst = min(cosines, key=cosines.__getitem__)
    claim("weights_stay_close", metric="min cosine(base W, tuned W) over weight matrices", direction=">",
          threshold=0.99, estimate=Estimate.exact(cosines[worst]),
          reference=ref("Setup: DPO weights cosine > 0.99 (B)", 0.99),
          params={"matrices": len(cosines), "least_similar": worst})
