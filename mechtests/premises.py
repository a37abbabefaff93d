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
    from mechtests.models import ModelPair


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


def require_toxic_base(tox_base: Sequence[float] | np.ndarray) -> None:
    """Fail the test clearly when the base model's continuations score no toxicity at all.

    A relative reduction ``1 - mean(other) / mean(base)`` divides by the base model's mean; at 0
    it is undefined (every resample NaN), and the message says so, with what to check, instead of
    a NaN inside the bootstrap.

    Example:
        >>> require_toxic_base([0.0, 0.2])  # some toxicity: nothing happens
    """
    import pytest

    mean = float(np.mean(tox_base))
    if not mean > 0:
        pytest.fail(f"undefined: the base model's mean toxicity is {mean:g} over these {len(tox_base)} prompts, so a "
                    "relative reduction 1 - tox / tox_base is undefined. Check that the prompts elicit toxicity "
                    "(--mt-prompts) and that the scorer scores these texts (--mt-scorer).", pytrace=False)


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


def require_linear_neuron_writes(pair: ModelPair) -> None:
    """Fail the test clearly when a model of ``pair`` has post-sublayer norms (Gemma-2/3/4, OLMo-2,
    GLM-4: `models.LoadedModel.require_linear_neuron_writes`).

    Ranking neurons by cos(value vector, probe), sorting them into the groups and attributing the
    probe-projected reduction to them all presuppose that neuron ``i`` writes ``a_i w_i`` into
    the residual stream; behind a norm it does not, and such a claim would be decided on
    something other than what it states. The plugin's ``selections`` and ``attribution``
    fixtures check this before any claim uses them.
    """
    import pytest

    for model in (pair.base, pair.tuned):
        problem = model.neuron_writes_problem("a claim on neurons' value vectors")
        if problem is not None:
            pytest.fail(f"undefined: {problem}", pytrace=False)
