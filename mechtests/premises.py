"""Premises a claim presupposes, checked before it is stated: an undefined claim fails with its
reason, never passes on a NaN or on two identical models.

Example:
    >>> require_reduction([0.6, 0.5], [0.2, 0.3])  # DPO reduced toxicity: nothing happens
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mechtests.effects import BlockAttribution


def require_reduction(tox_base: Sequence[float] | np.ndarray, tox_tuned: Sequence[float] | np.ndarray) -> None:
    """Fail the test clearly when the tuned model does not reduce toxicity on these prompts.

    Every "recovered" claim divides by ``mean(tox_base) - mean(tox_tuned)``; without a reduction
    the ratio is undefined, and the message names that premise and its numbers instead of a NaN
    deep inside an interval.
    """
    import pytest

    base, tuned = float(np.mean(tox_base)), float(np.mean(tox_tuned))
    if not base > tuned:
        pytest.fail(f"undefined: the tuned model does not reduce toxicity on these prompts (mean tox base "
                    f"{base:.4f}, tuned {tuned:.4f}), so the fraction of its reduction a condition recovers is "
                    "undefined. See dpo_reduces_toxicity.", pytrace=False)


def require_change(attribution: BlockAttribution) -> None:
    """Fail the test clearly when no neuron's probe projection differs between the two models
    (``attribution``: a `BlockAttribution`).

    Shares of the reduction, the direction of each neuron's change ("dampened", "moved toward
    toxicity") and layer shares all presuppose that the tuned model differs from the base; with
    identical models every reduction is exactly 0 and such a claim is undefined, not confirmed.
    """
    import pytest

    reduction, _, _ = attribution.reduction()
    if not np.any(reduction != 0):
        pytest.fail("undefined: no neuron's probe projection differs between the base and tuned models on these "
                    "prompts (are they the same weights? compare the report's sha256 of both), so shares of the "
                    "reduction and the direction of neurons' changes are undefined.", pytrace=False)
